//! Streaming responses: each upstream event goes to the client as soon as it arrives
//! (never buffered), usage is read off the events as they pass, and the ledger row is
//! written when the stream ends, fails, or the client goes away (the [`MeterGuard`] inside
//! the body stream is then dropped, and its `Drop` records what was seen). The events are
//! written in the client's dialect by an [`Encoder`]: OpenAI's chunks as they came (the
//! usage-only chunk only if the client asked for it), or Anthropic's event stream.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::dialect::anthropic::{self, EventEncoder};
use crate::error::ApiError;
use crate::meter::{MeterGuard, Usage, WireUsage};
use crate::providers::EventStream;
use crate::route::{Deployment, InFlight};

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

/// Writes the client's dialect.
pub enum Encoder {
    OpenAi { client_wants_usage: bool },
    Anthropic(Box<EventEncoder>),
}

impl Encoder {
    /// Frames for one upstream chunk; `usage_only` marks OpenAI's usage-only chunk.
    fn chunk(&mut self, data: &str, usage_only: bool) -> Option<Bytes> {
        match self {
            Encoder::OpenAi { client_wants_usage } => {
                if usage_only && !*client_wants_usage {
                    return None;
                }
                let mut frame = Vec::with_capacity(data.len() + 8);
                frame.extend_from_slice(b"data: ");
                frame.extend_from_slice(data.as_bytes());
                frame.extend_from_slice(b"\n\n");
                Some(Bytes::from(frame))
            }
            Encoder::Anthropic(enc) => {
                let v: serde_json::Value = serde_json::from_str(data).ok()?;
                let frames = enc.chunk(&v).concat();
                (!frames.is_empty()).then(|| Bytes::from(frames))
            }
        }
    }

    fn done(&mut self) -> Bytes {
        match self {
            Encoder::OpenAi { .. } => Bytes::from_static(b"data: [DONE]\n\n"),
            Encoder::Anthropic(enc) => Bytes::from(enc.done().concat()),
        }
    }

    /// An error after the stream began: the status is already sent, so it travels as an
    /// event in the dialect's error shape, and the stream ends.
    fn error(&self, e: &ApiError) -> Bytes {
        match self {
            Encoder::OpenAi { .. } => {
                let (kind, code) = e.kind_and_code();
                let v = serde_json::json!({"error": {"message": e.to_string(), "type": kind, "param": null, "code": code}});
                Bytes::from(format!("data: {v}\n\n"))
            }
            Encoder::Anthropic(_) => {
                Bytes::from(anthropic::frame("error", &anthropic::error_body(e)))
            }
        }
    }
}

struct State {
    events: EventStream,
    meter: Option<MeterGuard>,
    encoder: Encoder,
    deployment: Arc<Deployment>,
    seen_first: bool,
    /// The deployment counts this stream as in flight until it ends.
    _busy: InFlight,
}

impl State {
    /// Records the row; the tokens also count against the deployment's tpm cap.
    fn finish(&mut self, status: u16, error: Option<&'static str>) {
        if let Some(m) = self.meter.take() {
            if let Some(row) = m.row() {
                self.deployment
                    .health
                    .add_tokens(row.usage.prompt_tokens + row.usage.completion_tokens);
            }
            m.finish(status, error);
        }
    }

    /// Meters one chunk (usage, generated text); true if it is the usage-only chunk.
    fn meter_chunk(&mut self, data: &str) -> bool {
        let Some(meter) = self.meter.as_mut() else {
            return false;
        };
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            return false;
        };
        for c in &chunk.choices {
            if let Some(text) = c.delta.as_ref().and_then(|d| d.content.as_ref()) {
                meter.generated_chars += text.chars().count();
            }
        }
        match chunk.usage {
            Some(u) => {
                if let Some(row) = meter.row_mut() {
                    row.usage = Usage::from(u);
                    row.usage_estimated = false;
                }
                chunk.choices.is_empty()
            }
            None => false,
        }
    }
}

pub fn respond(
    events: EventStream,
    meter: MeterGuard,
    encoder: Encoder,
    dep: Arc<Deployment>,
    busy: InFlight,
) -> Response {
    let content_type = "text/event-stream";
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    super::deployment_headers(&mut headers, &dep, None);
    let state = State {
        events,
        meter: Some(meter),
        encoder,
        deployment: dep,
        seen_first: false,
        _busy: busy,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            st.meter.as_ref()?;
            match st.events.next().await {
                None => {
                    // The upstream closed without an end event: what it sent stands, and
                    // the client sees no end either (a cut stream must not look complete).
                    st.finish(200, None);
                    return None;
                }
                Some(Err(e)) => {
                    tracing::warn!(deployment = %st.deployment.id, error = %e, "upstream stream failed");
                    let api = ApiError::from(e);
                    let frame = st.encoder.error(&api);
                    st.finish(api.status().as_u16(), Some(api.ledger_label()));
                    return Some((Ok::<Bytes, Infallible>(frame), st));
                }
                Some(Ok(data)) => {
                    if !st.seen_first {
                        st.seen_first = true;
                        if let Some(m) = st.meter.as_mut() {
                            m.mark_first_byte();
                        }
                    }
                    if data == "[DONE]" {
                        st.finish(200, None);
                        return Some((Ok(st.encoder.done()), st));
                    }
                    let usage_only = st.meter_chunk(&data);
                    if let Some(frame) = st.encoder.chunk(&data, usage_only) {
                        return Some((Ok(frame), st));
                    }
                }
            }
        }
    });
    (StatusCode::OK, headers, Body::from_stream(body)).into_response()
}
