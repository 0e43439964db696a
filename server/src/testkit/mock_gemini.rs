//! The mock upstream's Gemini face: Google's Generative Language API wire format under
//! `POST /v1beta/models/{model}:{method}` for `generateContent`,
//! `streamGenerateContent?alt=sse` and `batchEmbedContents`, with the key in
//! `x-goog-api-key`. Replies and token counts are the OpenAI mock's (`reply_for`: "Mock
//! reply:" and the last user text's first words, one token a word, 3 more a message).
//!
//! The model name picks a behaviour, as for the OpenAI face: `fail-<status>` (a
//! Gemini-shaped error, `Retry-After: 1` on 429), `slow-<ms>`, `blocked` (the prompt is
//! refused: `promptFeedback.blockReason` SAFETY, no candidates) and `tool` (a
//! `functionCall` of the first declared function, or `lookup`). A key sent in the URL
//! (`?key=`) is refused: the gateway must only send it in the header.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::mock_upstream::{MockState, record};
use crate::dialect::openai::ChatRequest;
use crate::meter::Usage;
use crate::providers::mock::{embeddings_body, reply_for};

pub fn routes() -> Router<Arc<MockState>> {
    Router::new().route("/v1beta/models/{model_and_method}", post(dispatch))
}

/// A Gemini-shaped error: `{"error":{"code","message","status"}}`.
fn error(status: StatusCode, message: &str) -> Response {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    let mut resp = (
        status,
        axum::Json(json!({"error": {"code": status.as_u16(), "message": message, "status": name}})),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

async fn dispatch(
    State(st): State<Arc<MockState>>,
    Path(model_and_method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    if query.split('&').any(|p| p.starts_with("key=")) {
        return error(
            StatusCode::BAD_REQUEST,
            "the mock refuses API keys in the URL; send x-goog-api-key",
        );
    }
    let presented = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    if !st.key_ok(presented) {
        return error(
            StatusCode::UNAUTHORIZED,
            "API key not valid. Please pass a valid API key.",
        );
    }
    let Some((model, method)) = model_and_method.rsplit_once(':') else {
        return error(StatusCode::NOT_FOUND, "expected models/{model}:{method}");
    };
    let Ok(raw) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid JSON payload received.");
    };
    match method {
        "generateContent" => generate(&st, model, raw, false).await,
        "streamGenerateContent" if query.split('&').any(|p| p == "alt=sse") => {
            generate(&st, model, raw, true).await
        }
        "streamGenerateContent" => error(
            StatusCode::BAD_REQUEST,
            "the mock streams only with alt=sse",
        ),
        "batchEmbedContents" => embed(&st, model, raw),
        other => error(
            StatusCode::NOT_FOUND,
            &format!("method {other:?} is not served by the mock"),
        ),
    }
}

fn texts_of(parts: Option<&Value>) -> String {
    parts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Gemini request as the OpenAI request `reply_for` counts: one message per content
/// (and one for the system instruction), `maxOutputTokens` as `max_tokens`.
fn as_chat(raw: &Value) -> ChatRequest {
    let mut messages = Vec::new();
    if let Some(sys) = raw.get("systemInstruction") {
        messages.push(json!({"role": "system", "content": texts_of(sys.get("parts"))}));
    }
    for c in raw["contents"].as_array().into_iter().flatten() {
        let role = match c["role"].as_str() {
            Some("model") => "assistant",
            _ => "user",
        };
        messages.push(json!({"role": role, "content": texts_of(c.get("parts"))}));
    }
    let mut rest = Map::new();
    if let Some(max) = raw["generationConfig"]["maxOutputTokens"].as_u64() {
        rest.insert("max_tokens".into(), json!(max));
    }
    ChatRequest {
        model: String::new(),
        messages,
        stream: None,
        stream_options: None,
        rest,
    }
}

fn usage_metadata(u: Usage, complete: bool) -> Value {
    if complete {
        json!({
            "promptTokenCount": u.prompt_tokens,
            "candidatesTokenCount": u.completion_tokens,
            "totalTokenCount": u.prompt_tokens + u.completion_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.prompt_tokens}],
        })
    } else {
        json!({"promptTokenCount": u.prompt_tokens, "totalTokenCount": u.prompt_tokens})
    }
}

fn safety_ratings() -> Value {
    json!([
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"}
    ])
}

/// One `GenerateContentResponse` with a single candidate.
fn response(model: &str, parts: Value, finish: Option<&str>, usage: Value, id: &str) -> Value {
    let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish {
        cand["finishReason"] = json!(f);
        cand["safetyRatings"] = safety_ratings();
    }
    json!({"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": id})
}

async fn generate(st: &MockState, model: &str, raw: Value, stream: bool) -> Response {
    if let Some(code) = model
        .strip_prefix("fail-")
        .and_then(|c| c.parse::<u16>().ok())
    {
        record(st, "chat", model, &raw, None);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, &format!("mock failure {code}"));
    }
    if let Some(ms) = model
        .strip_prefix("slow-")
        .and_then(|c| c.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if raw["contents"].as_array().is_none_or(Vec::is_empty) {
        record(st, "chat", model, &raw, None);
        return error(
            StatusCode::BAD_REQUEST,
            "* GenerateContentRequest.contents: contents is not specified",
        );
    }
    let req = as_chat(&raw);
    let (words, mut usage) = reply_for(&req);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let events: Vec<Value> = match model {
        "blocked" => {
            usage.completion_tokens = 0;
            vec![json!({
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": safety_ratings()},
                "usageMetadata": usage_metadata(usage, false),
                "modelVersion": model, "responseId": id,
            })]
        }
        "tool" => {
            let name = raw["tools"][0]["functionDeclarations"][0]["name"]
                .as_str()
                .unwrap_or("lookup");
            let query = words.get(2..).unwrap_or_default().join(" ");
            usage.completion_tokens = 5;
            vec![response(
                model,
                json!([{"functionCall": {"name": name, "args": {"query": query}}}]),
                Some("STOP"),
                usage_metadata(usage, true),
                &id,
            )]
        }
        _ if stream => {
            let n = words.len();
            words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let text = if i == 0 { w.clone() } else { format!(" {w}") };
                    let last = i + 1 == n;
                    response(
                        model,
                        json!([{"text": text}]),
                        last.then_some("STOP"),
                        usage_metadata(usage, last),
                        &id,
                    )
                })
                .collect()
        }
        _ => vec![response(
            model,
            json!([{"text": words.join(" ")}]),
            Some("STOP"),
            usage_metadata(usage, true),
            &id,
        )],
    };
    record(st, "chat", model, &raw, Some(usage));
    if !stream {
        // One response; a streamed answer is the same thing in pieces.
        let one = events.into_iter().next().unwrap_or(Value::Null);
        return axum::Json(one).into_response();
    }
    let frames: Vec<Result<Bytes, Infallible>> = events
        .into_iter()
        .map(|e| Ok(Bytes::from(format!("data: {e}\r\n\r\n"))))
        .collect();
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(futures_util::stream::iter(frames)),
    )
        .into_response()
}

fn embed(st: &MockState, model: &str, raw: Value) -> Response {
    let Some(requests) = raw["requests"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "requests is required");
    };
    let texts: Vec<String> = requests
        .iter()
        .map(|r| texts_of(r["content"].get("parts")))
        .collect();
    let (body, _) = embeddings_body(&texts, model);
    let embeddings: Vec<Value> = body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| json!({"values": d["embedding"]}))
        .collect();
    // Like Gemini, no usage is reported.
    record(st, "embeddings", model, &raw, None);
    axum::Json(json!({ "embeddings": embeddings })).into_response()
}
