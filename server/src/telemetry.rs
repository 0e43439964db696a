//! Logs and request ids. Logs are JSON lines by default; no secret is ever a field.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway's id for a request (never taken from the client, so a client cannot make
/// two requests share a ledger row), and when it arrived.
#[derive(Clone, Debug)]
pub struct RequestId(pub String, pub Instant);

/// Installs the log subscriber. Lines are written by a background thread so a slow
/// stderr never stalls a request; keep the returned guard alive until exit (it flushes).
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_env("GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

/// Gives every request an id (in its extensions and the `x-request-id` response header)
/// and logs one line per request: method, path (never the query), status, duration.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = format!("req_{}", uuid::Uuid::now_v7().simple());
    req.extensions_mut().insert(RequestId(id.clone(), started));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    tracing::info!(
        request_id = %id,
        method = %method,
        path = %truncate(&path, 200),
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
