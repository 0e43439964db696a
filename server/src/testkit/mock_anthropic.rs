//! The mock upstream's Anthropic face: the Messages API wire format under
//! `POST /v1/messages` (key in `x-api-key`, `anthropic-version` required), plain and
//! streamed (`message_start` … `message_stop`), as Anthropic's API reference records them.
//! Replies and token counts are the OpenAI mock's: "Mock reply:" and the last user text's
//! first words, one token a word, 3 more a message; `max_tokens` cuts the reply.
//!
//! The model picks a behaviour: `fail-<status>` (an Anthropic-shaped error),
//! `slow-<ms>`, `tool` (a `tool_use` of the first declared tool), `cached` (part of the
//! prompt reported as cache reads).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::mock_upstream::{MockState, record};
use crate::meter::Usage;

pub fn routes() -> Router<Arc<MockState>> {
    Router::new().route("/v1/messages", post(messages))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

async fn messages(State(st): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if !st.key_ok(key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid JSON",
        );
    };
    let model = req["model"].as_str().unwrap_or("").to_owned();
    let (Some(max_tokens), Some(turns)) = (req["max_tokens"].as_u64(), req["messages"].as_array())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model, max_tokens and messages are required",
        );
    };
    if let Some(code) = model
        .strip_prefix("fail-")
        .and_then(|c| c.parse::<u16>().ok())
    {
        record(&st, "chat", &model, &req, None);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match code {
            429 => "rate_limit_error",
            529 => "overloaded_error",
            400 => "invalid_request_error",
            _ => "api_error",
        };
        return error(status, kind, &format!("mock failure {code}"));
    }
    if let Some(ms) = model
        .strip_prefix("slow-")
        .and_then(|c| c.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let system_words = text_of(&req["system"]).split_whitespace().count() as i64;
    let prompt_tokens: i64 = turns
        .iter()
        .map(|t| text_of(&t["content"]).split_whitespace().count() as i64 + 3)
        .sum::<i64>()
        + system_words;
    let last_user = turns
        .iter()
        .rev()
        .find(|t| t["role"] == "user")
        .map(|t| text_of(&t["content"]))
        .unwrap_or_default();
    let mut words: Vec<String> = ["Mock", "reply:"].iter().map(|s| (*s).to_owned()).collect();
    words.extend(last_user.split_whitespace().take(48).map(str::to_owned));
    words.truncate(usize::try_from(max_tokens.max(1)).unwrap_or(usize::MAX));
    let cached = if model == "cached" {
        prompt_tokens / 2
    } else {
        0
    };
    let usage = Usage {
        prompt_tokens,
        completion_tokens: words.len() as i64,
        cached_tokens: cached,
    };
    record(&st, "chat", &model, &req, Some(usage));
    let id = format!("msg_mock_{}", uuid::Uuid::new_v4().simple());
    let tool = (model == "tool").then(|| {
        req["tools"][0]["name"]
            .as_str()
            .unwrap_or("lookup")
            .to_owned()
    });
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let wire_usage = json!({
        "input_tokens": prompt_tokens - cached,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    });
    if req["stream"] != json!(true) {
        let mut content = vec![json!({"type": "text", "text": words.join(" ")})];
        if let Some(name) = &tool {
            content.push(json!({"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {"query": "cats"}}));
        }
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": null, "usage": wire_usage,
        }))
        .into_response();
    }
    let ev = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut frames = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": prompt_tokens - cached, "output_tokens": 1, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0},
            }}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev("ping", json!({"type": "ping"})),
    ];
    for (i, w) in words.iter().enumerate() {
        let piece = if i == 0 { w.clone() } else { format!(" {w}") };
        frames.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    frames.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some(name) = &tool {
        frames.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}}),
        ));
        for part in ["{\"query\":", " \"cats\"}"] {
            frames.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        frames.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    frames.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": usage.completion_tokens}}),
    ));
    frames.push(ev("message_stop", json!({"type": "message_stop"})));
    let body = Body::from_stream(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, Infallible>),
    ));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}
