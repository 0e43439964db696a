//! Streaming responses: each upstream event goes to the client as soon as it arrives
//! (never buffered), usage is read off the events as they pass, and the ledger row is
//! written when the stream ends, fails, or the client goes away (the [`MeterGuard`] inside
//! the body stream is then dropped, and its `Drop` records what was seen). The events are
//! written in the client's dialect by an [`Encoder`]: OpenAI's chunks as they came (the
//! usage-only chunk only if the client asked for it), or Anthropic's event stream.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::dialect::anthropic::{self, EventEncoder};
use crate::error::ApiError;
use crate::meter::{MeterGuard, Usage, WireUsage, micros_to_usd_string};
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
    busy: Option<InFlight>,
    /// How long to read on after the client left (zero: not at all).
    drain: Duration,
    /// False once the gateway is stopping: no more reading on, rows are written now.
    accepting: Arc<AtomicBool>,
}

impl Drop for State {
    /// The client went away before the stream ended: read the upstream on (relaying
    /// nothing), bounded, until it reports usage, so the row carries the real tokens;
    /// then record it as client-closed.
    fn drop(&mut self) {
        let Some(meter) = self.meter.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // the meter's own Drop records the estimate
        };
        if self.drain.is_zero() || !self.accepting.load(Ordering::Relaxed) {
            drop(meter);
            return;
        }
        let events = std::mem::replace(&mut self.events, Box::pin(futures_util::stream::empty()));
        let drained = State {
            events,
            meter: Some(meter),
            encoder: Encoder::OpenAi {
                client_wants_usage: false,
            },
            deployment: self.deployment.clone(),
            seen_first: self.seen_first,
            busy: self.busy.take(),
            drain: Duration::ZERO,
            accepting: self.accepting.clone(),
        };
        DRAINING.fetch_add(1, Ordering::AcqRel);
        rt.spawn(drain(drained, self.drain));
    }
}

/// Streams being read on after their client left.
static DRAINING: AtomicUsize = AtomicUsize::new(0);

/// At shutdown: waits (bounded) for the streams being read on to record their rows; they
/// stop reading once the gateway stops accepting.
pub async fn drains_finished(limit: Duration) {
    let start = tokio::time::Instant::now();
    while DRAINING.load(Ordering::Acquire) > 0 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Counted from before it is spawned (see `Drop for State`) until its row is recorded.
async fn drain(st: State, limit: Duration) {
    drain_inner(st, limit).await;
    DRAINING.fetch_sub(1, Ordering::AcqRel);
}

async fn drain_inner(mut st: State, limit: Duration) {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = tick.tick() => {
                if !st.accepting.load(Ordering::Relaxed) {
                    break;
                }
            }
            ev = st.events.next() => match ev {
                None | Some(Err(_)) => break,
                Some(Ok(data)) => {
                    if data == "[DONE]" || st.meter_chunk(&data) {
                        break;
                    }
                }
            }
        }
    }
    st.finish(crate::meter::ledger::CLIENT_CLOSED, Some("client_closed"));
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
    drain: Duration,
    accepting: Arc<AtomicBool>,
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
        busy: Some(busy),
        drain,
        accepting,
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
                        // The cost cannot be a header (those left first): it travels as an
                        // SSE comment, which clients ignore and tools can read.
                        let cost = st.meter.as_ref().map_or(0, MeterGuard::cost_micros);
                        st.finish(200, None);
                        let mut frame =
                            format!(": x-gateway-cost-usd {}\n\n", micros_to_usd_string(cost))
                                .into_bytes();
                        frame.extend_from_slice(&st.encoder.done());
                        return Some((Ok(Bytes::from(frame)), st));
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
