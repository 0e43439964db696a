//! The project's mock upstream: an OpenAI-compatible server for tests and the benchmark.
//! Bodies come from the `mock` provider's builders, so answers and usage are predictable.
//!
//! The upstream model name picks a behaviour:
//! - anything else: a normal answer (streamed when asked), usage included;
//! - `fail-<status>`: an OpenAI-shaped error with that status (`Retry-After: 1` on 429);
//! - `slow-<ms>`: waits before the response headers;
//! - `hold`: streams the role chunk and the first word, then waits until
//!   `POST /__mock/release` before the rest (to prove the gateway does not buffer);
//! - `stall`: streams two chunks, then goes silent forever (idle timeouts);
//! - `nousage`: streams without the usage chunk;
//! - `not-sse`: answers a stream request with plain JSON.
//!
//! `GET /__mock/calls` gives call counts, the usage reported in total and the last request
//! body; `POST /__mock/reset` clears them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::dialect::openai::{ChatRequest, EmbeddingsRequest};
use crate::meter::Usage;
use crate::providers::mock::{completion_body, embeddings_body, reply_for, stream_events};

#[derive(Default)]
struct Counters {
    chat: u64,
    embeddings: u64,
    by_model: HashMap<String, u64>,
    prompt_tokens: i64,
    completion_tokens: i64,
    last_body: Option<Value>,
    last_authorization_ok: Option<bool>,
}

pub struct MockState {
    pub(crate) api_key: Option<String>,
    counters: Mutex<Counters>,
    pub(crate) release: Notify,
}

impl MockState {
    /// Whether a presented credential is the configured key (any, when none is set), and
    /// remembers the answer as `last_authorization_ok`.
    pub(crate) fn key_ok(&self, presented: Option<&str>) -> bool {
        let ok = match &self.api_key {
            None => true,
            Some(k) => presented == Some(k.as_str()),
        };
        if let Ok(mut c) = self.counters.lock() {
            c.last_authorization_ok = Some(ok);
        }
        ok
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Starts on `addr` (port 0 for any); requires `Bearer <api_key>` when one is given.
    pub async fn start(addr: SocketAddr, api_key: Option<String>) -> std::io::Result<MockUpstream> {
        let state = Arc::new(MockState {
            api_key,
            counters: Mutex::default(),
            release: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockUpstream { addr, state, task })
    }

    /// `http://addr/v1`, what a deployment's `base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn calls(&self) -> Value {
        calls_json(&self.state)
    }

    pub fn release(&self) {
        self.state.release.notify_waiters();
        self.state.release.notify_one();
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_chat),
        )
        .route(
            "/v1/models",
            get(|| async { axum::Json(json!({"object": "list", "data": []})) }),
        )
        .route(
            "/__mock/calls",
            get(|State(st): State<Arc<MockState>>| async move { axum::Json(calls_json(&st)) }),
        )
        .route(
            "/__mock/reset",
            post(|State(st): State<Arc<MockState>>| async move {
                if let Ok(mut c) = st.counters.lock() {
                    *c = Counters::default();
                }
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/__mock/release",
            post(|State(st): State<Arc<MockState>>| async move {
                st.release.notify_waiters();
                st.release.notify_one();
                StatusCode::NO_CONTENT
            }),
        )
        .merge(super::mock_anthropic::routes())
        .merge(super::mock_gemini::routes())
        .merge(super::mock_bedrock::routes())
        .with_state(state)
}

fn calls_json(st: &MockState) -> Value {
    let Ok(c) = st.counters.lock() else {
        return Value::Null;
    };
    json!({
        "chat": c.chat,
        "embeddings": c.embeddings,
        "by_model": c.by_model,
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens},
        "last_body": c.last_body,
        "last_authorization_ok": c.last_authorization_ok,
    })
}

/// An OpenAI-shaped error response.
pub(crate) fn error(status: StatusCode, message: &str, kind: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        ),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// Checks the key like OpenAI does, echoing what was presented in the message (as OpenAI
/// echoes part of it), which the gateway must never pass on.
fn check_auth(st: &MockState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if st.key_ok(presented.strip_prefix("Bearer ")) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            &format!("Incorrect API key provided: {presented}"),
            "invalid_request_error",
        )))
    }
}

/// Counts a call (per endpoint and model), adds its usage, keeps its body as `last_body`.
pub(crate) fn record(
    st: &MockState,
    endpoint: &str,
    model: &str,
    body: &Value,
    usage: Option<Usage>,
) {
    if let Ok(mut c) = st.counters.lock() {
        match endpoint {
            "embeddings" => c.embeddings += 1,
            _ => c.chat += 1,
        }
        *c.by_model.entry(model.to_owned()).or_default() += 1;
        if let Some(u) = usage {
            c.prompt_tokens += u.prompt_tokens;
            c.completion_tokens += u.completion_tokens;
        }
        c.last_body = Some(body.clone());
    }
}

async fn chat(State(st): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = check_auth(&st, &headers) {
        return *resp;
    }
    chat_answer(st, body).await
}

/// Azure OpenAI's face: `/openai/deployments/{deployment}/chat/completions?api-version=…`
/// with the key in `api-key`; the deployment in the path names the model.
async fn azure_chat(
    State(st): State<Arc<MockState>>,
    axum::extract::Path(deployment): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv.starts_with("api-version=") && kv.len() > 12)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "api-version query parameter is required",
            "invalid_request_error",
        );
    }
    if !st.key_ok(headers.get("api-key").and_then(|v| v.to_str().ok())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Access denied due to invalid subscription key.",
            "invalid_request_error",
        );
    }
    let Ok(mut raw) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid JSON",
            "invalid_request_error",
        );
    };
    // Azure routes by the path; the body's model must not decide anything.
    raw["model"] = Value::String(deployment);
    chat_answer(st, Bytes::from(raw.to_string())).await
}

async fn chat_answer(st: Arc<MockState>, body: Bytes) -> Response {
    let Ok(raw) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid JSON",
            "invalid_request_error",
        );
    };
    let Ok(req) = serde_json::from_value::<ChatRequest>(raw.clone()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "model and messages are required",
            "invalid_request_error",
        );
    };
    let model = req.model.clone();
    if let Some(code) = model
        .strip_prefix("fail-")
        .and_then(|c| c.parse::<u16>().ok())
    {
        record(&st, "chat", &model, &raw, None);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, &format!("mock failure {code}"), "server_error");
    }
    if let Some(ms) = model
        .strip_prefix("slow-")
        .and_then(|c| c.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (words, usage) = reply_for(&req);
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let streaming = req.wants_stream() && model != "not-sse";
    let with_usage = streaming
        && model != "nousage"
        && req
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    record(
        &st,
        "chat",
        &model,
        &raw,
        (!streaming || with_usage).then_some(usage),
    );
    if !streaming {
        return axum::Json(completion_body(&id, &model, &words.join(" "), usage)).into_response();
    }
    let mut events = stream_events(&id, &model, &words, usage);
    if !with_usage {
        // The usage chunk is the one before `[DONE]`.
        let n = events.len();
        events.remove(n - 2);
    }
    let frames: Vec<Bytes> = events
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    let body = match model.as_str() {
        "hold" => {
            let (head, tail) = frames.split_at(2.min(frames.len()));
            let (head, tail) = (head.to_vec(), tail.to_vec());
            let st2 = st.clone();
            let rest = futures_util::stream::once(async move {
                st2.release.notified().await;
                futures_util::stream::iter(tail.into_iter().map(Ok::<_, Infallible>))
            })
            .flatten();
            Body::from_stream(
                futures_util::stream::iter(head.into_iter().map(Ok::<_, Infallible>)).chain(rest),
            )
        }
        "stall" => {
            let head: Vec<Bytes> = frames.into_iter().take(2).collect();
            let forever = futures_util::stream::pending::<Result<Bytes, Infallible>>();
            Body::from_stream(
                futures_util::stream::iter(head.into_iter().map(Ok::<_, Infallible>))
                    .chain(forever),
            )
        }
        _ => Body::from_stream(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, Infallible>),
        )),
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn embeddings(State(st): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = check_auth(&st, &headers) {
        return *resp;
    }
    let Ok(raw) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid JSON",
            "invalid_request_error",
        );
    };
    let Ok(req) = serde_json::from_value::<EmbeddingsRequest>(raw.clone()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "model and input are required",
            "invalid_request_error",
        );
    };
    let (body, usage) = embeddings_body(&req.texts(), &req.model);
    record(&st, "embeddings", &req.model, &raw, Some(usage));
    axum::Json(body).into_response()
}
