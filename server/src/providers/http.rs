//! The transport every HTTP provider shares: send a request and wait (bounded) for the
//! headers, read a body within size and idle limits, frame an SSE body, and describe
//! failures without the URL or any secret.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::sse::SseDecoder;
use super::{CallLimits, UpstreamError};

/// The pooled upstream client: TCP_NODELAY, no redirects (an upstream must not send the
/// key elsewhere), bounded connect time. One serves every deployment except those that
/// set their own connect timeout.
pub fn client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ai-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Longest upstream error body read (enough for any provider's message).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// Pulls a message and a code out of an upstream error body.
pub type ErrorParser = fn(&[u8]) -> (String, Option<String>);

/// Sends and waits for the response headers within the first-byte limit; a non-2xx answer
/// becomes [`UpstreamError::Status`] with the upstream's message, scrubbed of `secret`.
pub async fn send(
    rb: reqwest::RequestBuilder,
    limits: &CallLimits,
    parse_error: ErrorParser,
    secret: Option<&str>,
) -> Result<reqwest::Response, UpstreamError> {
    let resp = match tokio::time::timeout(limits.first_byte, rb.send()).await {
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
    let raw = read_body(resp, MAX_ERROR_BODY, limits.idle)
        .await
        .unwrap_or_default();
    let (message, code) = parse_error(&raw);
    Err(UpstreamError::Status {
        status,
        message: scrub(message, secret),
        code,
        retry_after,
    })
}

/// Removes a secret from text that may travel to a client or a log.
pub fn scrub(message: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() && message.contains(s) => message.replace(s, "[redacted]"),
        _ => message,
    }
}

/// The reqwest error without its URL (the URL is config, but error text travels far).
pub fn describe(e: &reqwest::Error) -> String {
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

/// Reads a whole body, refusing more than `max` bytes and any silence longer than `idle`.
pub async fn read_body(
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

/// The body's bytes as they arrive; a silence longer than `idle` ends it with a timeout.
pub fn byte_stream(
    resp: reqwest::Response,
    idle: Duration,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    let inner = resp.bytes_stream().boxed();
    futures_util::stream::unfold((inner, false), move |(mut inner, done)| async move {
        if done {
            return None;
        }
        match tokio::time::timeout(idle, inner.next()).await {
            Err(_) => Some((
                Err(UpstreamError::Timeout("the next stream event")),
                (inner, true),
            )),
            Ok(None) => None,
            Ok(Some(Ok(b))) => Some((Ok(b), (inner, false))),
            Ok(Some(Err(e))) => Some((Err(UpstreamError::Connect(describe(&e))), (inner, true))),
        }
    })
    .boxed()
}

/// SSE `data:` payloads of a response as they arrive.
pub fn sse_data(
    resp: reqwest::Response,
    idle: Duration,
) -> BoxStream<'static, Result<String, UpstreamError>> {
    struct State {
        bytes: BoxStream<'static, Result<Bytes, UpstreamError>>,
        decoder: SseDecoder,
        done: bool,
    }
    let state = State {
        bytes: byte_stream(resp, idle),
        decoder: SseDecoder::default(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.decoder.next_event() {
                Ok(Some(ev)) => return Some((Ok(ev), st)),
                Ok(None) => {}
                Err(_) => {
                    st.done = true;
                    return Some((Err(UpstreamError::Protocol("SSE line too long".into())), st));
                }
            }
            match st.bytes.next().await {
                Some(Ok(chunk)) => st.decoder.push(&chunk),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    return st.decoder.finish().map(|ev| (Ok(ev), st));
                }
            }
        }
    })
    .boxed()
}

/// Checks an upstream stream's content type.
pub fn is_event_stream(resp: &reqwest::Response, prefix: &str) -> bool {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(prefix))
}
