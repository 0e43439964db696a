//! The `openai` and `openai-compatible` providers (OpenAI, vLLM, Ollama and the like):
//! the request goes out in OpenAI's own shape, so translation is only the model name and
//! forcing usage on streams. The key is optional for compatible servers.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::sse::SseDecoder;
use super::{CallLimits, ChatReply, EmbeddingsReply, EventStream, UpstreamError};
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest, OutboundChat, OutboundEmbeddings};
use crate::meter::{Usage, WireUsage};

pub struct OpenAi {
    base: String,
    api_key: Option<SecretString>,
    http: reqwest::Client,
    limits: CallLimits,
}

/// Longest upstream error body read (enough for any provider's message).
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct UsageOnly {
    usage: Option<WireUsage>,
}

impl OpenAi {
    pub fn new(
        base_url: &str,
        api_key: Option<SecretString>,
        http: reqwest::Client,
        limits: CallLimits,
    ) -> Self {
        OpenAi {
            base: base_url.trim_end_matches('/').to_owned(),
            api_key,
            http,
            limits,
        }
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        upstream_model: &str,
    ) -> Result<ChatReply, UpstreamError> {
        let body = serde_json::to_vec(&OutboundChat::new(req, upstream_model))
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let resp = self.send("chat/completions", body).await?;
        if req.wants_stream() {
            let is_sse = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if !is_sse {
                return Err(UpstreamError::Protocol("expected an event stream".into()));
            }
            return Ok(ChatReply::Stream(event_stream(resp, self.limits.idle)));
        }
        let body = read_body(resp, self.limits.max_body, self.limits.idle).await?;
        Ok(ChatReply::Complete {
            usage: usage_of(&body),
            body,
        })
    }

    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        upstream_model: &str,
    ) -> Result<EmbeddingsReply, UpstreamError> {
        let out = OutboundEmbeddings {
            model: upstream_model,
            input: &req.input,
            rest: &req.rest,
        };
        let body = serde_json::to_vec(&out)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let resp = self.send("embeddings", body).await?;
        let body = read_body(resp, self.limits.max_body, self.limits.idle).await?;
        Ok(EmbeddingsReply {
            usage: usage_of(&body),
            body,
        })
    }

    /// Sends a JSON POST and waits (bounded) for the response headers; a non-2xx answer
    /// becomes [`UpstreamError::Status`] with the upstream's message, scrubbed of our key.
    async fn send(&self, path: &str, body: Vec<u8>) -> Result<reqwest::Response, UpstreamError> {
        let mut rb = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(key) = &self.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret())).map_err(
                |_| UpstreamError::Protocol("api_key is not a valid header value".into()),
            )?;
            v.set_sensitive(true);
            rb = rb.header(AUTHORIZATION, v);
        }
        let resp = match tokio::time::timeout(self.limits.first_byte, rb.send()).await {
            Err(_) => return Err(UpstreamError::Timeout("the first byte")),
            Ok(Err(e)) if e.is_timeout() => return Err(UpstreamError::Timeout("a connection")),
            Ok(Err(e)) => return Err(UpstreamError::Connect(describe(&e))),
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let raw = read_body(resp, MAX_ERROR_BODY, self.limits.idle)
            .await
            .unwrap_or_default();
        let (message, code) = parse_error(&raw);
        Err(UpstreamError::Status {
            status,
            message: self.scrub(message),
            code,
            retry_after,
        })
    }

    fn scrub(&self, message: String) -> String {
        match &self.api_key {
            Some(k) if !k.expose_secret().is_empty() && message.contains(k.expose_secret()) => {
                message.replace(k.expose_secret(), "[redacted]")
            }
            _ => message,
        }
    }
}

/// The reqwest error without its URL (the URL is config, but error text travels far).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

fn usage_of(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<UsageOnly>(body)
        .ok()
        .and_then(|u| u.usage)
        .map(Usage::from)
}

fn parse_error(raw: &[u8]) -> (String, Option<String>) {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        code: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Outer>(raw) {
        Ok(o) => (
            o.error.message.unwrap_or_else(|| "upstream error".into()),
            o.error.code.and_then(|c| c.as_str().map(str::to_owned)),
        ),
        Err(_) => ("upstream error".into(), None),
    }
}

/// Reads a whole body, refusing more than `max` bytes and any silence longer than `idle`.
async fn read_body(
    resp: reqwest::Response,
    max: usize,
    idle: Duration,
) -> Result<Bytes, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(UpstreamError::Protocol("response body too large".into()));
    }
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(UpstreamError::Timeout("the response body")),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(UpstreamError::Connect(describe(&e))),
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > max {
                    return Err(UpstreamError::Protocol("response body too large".into()));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}

/// Turns the upstream's byte stream into SSE payloads as they arrive; a silence longer
/// than `idle` ends it with a timeout.
fn event_stream(resp: reqwest::Response, idle: Duration) -> EventStream {
    struct State {
        bytes: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
        decoder: SseDecoder,
        done: bool,
    }
    let state = State {
        bytes: resp.bytes_stream().boxed(),
        decoder: SseDecoder::default(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                match st.decoder.next_event() {
                    Ok(Some(ev)) => return Some((Ok(ev), st)),
                    Ok(None) => {}
                    Err(_) => {
                        st.done = true;
                        return Some((
                            Err(UpstreamError::Protocol("SSE line too long".into())),
                            st,
                        ));
                    }
                }
                match tokio::time::timeout(idle, st.bytes.next()).await {
                    Err(_) => {
                        st.done = true;
                        return Some((Err(UpstreamError::Timeout("the next stream event")), st));
                    }
                    Ok(Some(Ok(chunk))) => st.decoder.push(&chunk),
                    Ok(Some(Err(e))) => {
                        st.done = true;
                        return Some((Err(UpstreamError::Connect(describe(&e))), st));
                    }
                    Ok(None) => {
                        st.done = true;
                        return st.decoder.finish().map(|ev| (Ok(ev), st));
                    }
                }
            }
        },
    ))
}
