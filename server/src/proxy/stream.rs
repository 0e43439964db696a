//! Streaming responses: each upstream event goes to the client as soon as it arrives
//! (never buffered), usage is read off the events as they pass, the usage-only chunk is
//! handed on only if the client asked for it, and the ledger row is written when the
//! stream ends, fails, or the client goes away (the [`MeterGuard`] inside the body stream
//! is then dropped, and its `Drop` records what was seen).

use std::borrow::Cow;
use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::error::ApiError;
use crate::meter::{MeterGuard, Usage, WireUsage};
use crate::providers::EventStream;
use crate::route::Deployment;

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

struct State {
    events: EventStream,
    meter: Option<MeterGuard>,
    client_wants_usage: bool,
    deployment: String,
    seen_first: bool,
}

pub fn respond(
    events: EventStream,
    meter: MeterGuard,
    client_wants_usage: bool,
    dep: &Deployment,
) -> Response {
    let state = State {
        events,
        meter: Some(meter),
        client_wants_usage,
        deployment: dep.id.clone(),
        seen_first: false,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let meter = st.meter.as_mut()?;
            match st.events.next().await {
                None => {
                    // The upstream closed without `[DONE]`: what it sent stands.
                    if let Some(m) = st.meter.take() {
                        m.finish(200, None);
                    }
                    return None;
                }
                Some(Err(e)) => {
                    tracing::warn!(deployment = %st.deployment, error = %e, "upstream stream failed");
                    let api = ApiError::from(e);
                    let frame = error_frame(&api);
                    if let Some(m) = st.meter.take() {
                        m.finish(api.status().as_u16(), Some(api.ledger_label()));
                    }
                    return Some((Ok::<Bytes, Infallible>(frame), st));
                }
                Some(Ok(data)) => {
                    if !st.seen_first {
                        st.seen_first = true;
                        meter.mark_first_byte();
                    }
                    if data == "[DONE]" {
                        if let Some(m) = st.meter.take() {
                            m.finish(200, None);
                        }
                        return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), st));
                    }
                    if let Ok(chunk) = serde_json::from_str::<Chunk>(&data) {
                        for c in &chunk.choices {
                            if let Some(text) = c.delta.as_ref().and_then(|d| d.content.as_ref()) {
                                meter.generated_chars += text.chars().count();
                            }
                        }
                        if let Some(u) = chunk.usage {
                            if let Some(row) = meter.row_mut() {
                                row.usage = Usage::from(u);
                                row.usage_estimated = false;
                            }
                            if chunk.choices.is_empty() && !st.client_wants_usage {
                                continue;
                            }
                        }
                    }
                    let mut frame = Vec::with_capacity(data.len() + 8);
                    frame.extend_from_slice(b"data: ");
                    frame.extend_from_slice(data.as_bytes());
                    frame.extend_from_slice(b"\n\n");
                    return Some((Ok(Bytes::from(frame)), st));
                }
            }
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    super::deployment_headers(&mut headers, dep, None);
    (StatusCode::OK, headers, Body::from_stream(body)).into_response()
}

/// An error after the stream began: the status is already sent, so it travels as an
/// event in OpenAI's error shape, and the stream ends.
fn error_frame(e: &ApiError) -> Bytes {
    let (kind, code) = e.kind_and_code();
    let v = serde_json::json!({"error": {"message": e.to_string(), "type": kind, "param": null, "code": code}});
    Bytes::from(format!("data: {v}\n\n"))
}
