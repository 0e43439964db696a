//! Anthropic's Messages API as an inbound dialect (`POST /v1/messages`): requests are
//! translated to the gateway's canonical OpenAI form (so any provider can serve them), and
//! answers, streams and errors are translated back into Anthropic's shapes.

use serde_json::{Map, Value, json};

use crate::dialect::openai::ChatRequest;
use crate::error::ApiError;
use crate::meter::Usage;

fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_param(param, message)
}

/// A Messages request → an OpenAI chat request.
pub fn to_chat(body: Value) -> Result<ChatRequest, ApiError> {
    let Value::Object(mut b) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let model = match b.remove("model") {
        Some(Value::String(m)) => m,
        _ => return Err(bad("model", "model: field required")),
    };
    let max_tokens = b
        .remove("max_tokens")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("max_tokens", "max_tokens: field required"))?;
    let stream = b.remove("stream").and_then(|v| v.as_bool());
    let mut messages = Vec::new();
    match b.remove("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks
                .iter()
                .filter_map(|x| x.get("text").and_then(Value::as_str))
                .collect();
            messages.push(json!({"role": "system", "content": text.join("\n")}));
        }
        Some(_) => {
            return Err(bad(
                "system",
                "system must be a string or an array of text blocks",
            ));
        }
    }
    let Some(Value::Array(turns)) = b.remove("messages") else {
        return Err(bad("messages", "messages: field required"));
    };
    for (i, t) in turns.iter().enumerate() {
        let role = t.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(bad(
                "messages",
                format!("messages.{i}.role must be \"user\" or \"assistant\""),
            ));
        }
        push_turn(&mut messages, role, t.get("content"), i)?;
    }
    let mut rest = Map::new();
    rest.insert("max_tokens".into(), json!(max_tokens));
    for k in ["temperature", "top_p", "top_k"] {
        if let Some(v) = b.remove(k) {
            rest.insert(k.into(), v);
        }
    }
    if let Some(stop) = b.remove("stop_sequences") {
        rest.insert("stop".into(), stop);
    }
    if let Some(Value::Array(tools)) = b.remove("tools") {
        let mapped: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t["name"], "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
                if let Some(d) = t.get("description") {
                    f["description"] = d.clone();
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        rest.insert("tools".into(), Value::Array(mapped));
    }
    if let Some(choice) = b.remove("tool_choice") {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            _ => {
                return Err(bad(
                    "tool_choice",
                    "tool_choice.type must be auto, any, tool or none",
                ));
            }
        };
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            rest.insert("parallel_tool_calls".into(), json!(false));
        }
        rest.insert("tool_choice".into(), mapped);
    }
    if let Some(user) = b.remove("metadata").and_then(|m| m.get("user_id").cloned()) {
        rest.insert("user".into(), user);
    }
    // Fields with no OpenAI counterpart (thinking, service_tier, …) are refused rather
    // than silently dropped, so a client learns what it did not get.
    if let Some(k) = b.keys().next() {
        return Err(ApiError::bad_request(format!(
            "{k}: this field is not supported by the gateway"
        )));
    }
    Ok(ChatRequest {
        model,
        messages,
        stream,
        stream_options: None,
        rest,
    })
}

fn push_turn(
    out: &mut Vec<Value>,
    role: &str,
    content: Option<&Value>,
    i: usize,
) -> Result<(), ApiError> {
    let blocks = match content {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(bad(
                "messages",
                format!("messages.{i}.content must be a string or an array of blocks"),
            ));
        }
    };
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": block["text"]})),
            Some("image") => {
                let src = &block["source"];
                let url = match src.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        src["media_type"].as_str().unwrap_or("image/png"),
                        src["data"].as_str().unwrap_or("")
                    ),
                    Some("url") => src["url"].as_str().unwrap_or("").to_owned(),
                    _ => return Err(bad("messages", format!("messages.{i}: unsupported image source"))),
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("tool_use") if role == "assistant" => tool_calls.push(json!({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string)},
            })),
            Some("tool_result") if role == "user" => {
                let text = match block.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(items)) => {
                        items.iter().filter_map(|x| x.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                    }
                    _ => String::new(),
                };
                let text = if block.get("is_error") == Some(&Value::Bool(true)) { format!("Error: {text}") } else { text };
                out.push(json!({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}));
            }
            // Earlier thinking is context for Anthropic alone; other providers cannot use it.
            Some("thinking" | "redacted_thinking") => {}
            other => return Err(bad("messages", format!("messages.{i}: content block {other:?} is not supported here"))),
        }
    }
    if parts.is_empty() && tool_calls.is_empty() {
        return Ok(());
    }
    let mut m = json!({"role": role});
    m["content"] = if parts.is_empty() {
        Value::Null
    } else {
        Value::Array(parts)
    };
    if !tool_calls.is_empty() {
        m["tool_calls"] = Value::Array(tool_calls);
    }
    out.push(m);
    Ok(())
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": (u.prompt_tokens - u.cached_tokens).max(0),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// An OpenAI `chat.completion` → an Anthropic `message`, named with the model the client asked for.
pub fn from_completion(body: &[u8], model: &str) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| ApiError::BadGateway)?;
    let choice = &v["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    let usage = v
        .get("usage")
        .cloned()
        .and_then(|u| serde_json::from_value::<crate::meter::WireUsage>(u).ok())
        .map(Usage::from)
        .unwrap_or_default();
    Ok(json!({
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str()),
        "stop_sequence": null,
        "usage": usage_json(usage),
    }))
}

/// Turns the OpenAI chunk stream into Anthropic's event stream, event by event.
pub struct EventEncoder {
    id: String,
    model: String,
    started: bool,
    /// Index and kind of the open content block.
    open: Option<(usize, Open)>,
    next_index: usize,
    stop: &'static str,
    usage: Usage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool(u64),
}

pub fn frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

impl EventEncoder {
    pub fn new(model: &str) -> Self {
        EventEncoder {
            id: new_message_id(),
            model: model.to_owned(),
            started: false,
            open: None,
            next_index: 0,
            stop: "end_turn",
            usage: Usage::default(),
        }
    }

    fn start(&mut self, out: &mut Vec<String>) {
        if !self.started {
            self.started = true;
            out.push(frame(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                    "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            ));
        }
    }

    fn close(&mut self, out: &mut Vec<String>) {
        if let Some((i, _)) = self.open.take() {
            out.push(frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            ));
        }
    }

    fn open_block(&mut self, kind: Open, block: Value, out: &mut Vec<String>) -> usize {
        self.close(out);
        let i = self.next_index;
        self.next_index += 1;
        self.open = Some((i, kind));
        out.push(frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": i, "content_block": block}),
        ));
        i
    }

    /// One OpenAI chunk (parsed) → Anthropic events.
    pub fn chunk(&mut self, chunk: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.start(&mut out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object())
            && let Ok(w) = serde_json::from_value::<crate::meter::WireUsage>(u.clone())
        {
            self.usage = Usage::from(w);
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return out;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let i = match self.open {
                Some((i, Open::Text)) => i,
                _ => self.open_block(Open::Text, json!({"type": "text", "text": ""}), &mut out),
            };
            out.push(frame("content_block_delta", &json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}})));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let tool = call["index"].as_u64().unwrap_or(0);
            let i = match self.open {
                Some((i, Open::Tool(t))) if t == tool && call.get("id").is_none_or(Value::is_null) => i,
                _ => self.open_block(
                    Open::Tool(tool),
                    json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}),
                    &mut out,
                ),
            };
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                out.push(frame("content_block_delta", &json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": args}})));
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = stop_reason(Some(f));
        }
        out
    }

    /// The end of the stream.
    pub fn done(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        out.push(frame(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": null}, "usage": usage_json(self.usage)}),
        ));
        out.push(frame("message_stop", &json!({"type": "message_stop"})));
        out
    }
}

/// Anthropic's error `type` for a gateway error.
pub fn error_type(e: &ApiError) -> &'static str {
    match e.status().as_u16() {
        400 | 405 | 408 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    }
}

pub fn error_body(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e), "message": e.to_string()}})
}

/// A gateway error as `/v1/messages` answers it: Anthropic's shape, the same status.
pub fn error_response(e: &ApiError) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = (e.status(), axum::Json(error_body(e))).into_response();
    if let ApiError::UpstreamRateLimited { retry_after } = e {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(retry_after.unwrap_or(1)),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_to_openai_field_by_field() {
        let req = to_chat(json!({
            "model": "claude-x", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["END"], "temperature": 0.1, "metadata": {"user_id": "u9"},
            "tools": [{"name": "look", "description": "Looks", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "checking"}, {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"}, {"type": "text", "text": "so?"}]}
            ]
        }))
        .unwrap();
        assert_eq!(req.model, "claude-x");
        assert_eq!(req.rest["max_tokens"], 50);
        assert_eq!(req.rest["stop"], json!(["END"]));
        assert_eq!(req.rest["user"], "u9");
        assert_eq!(req.rest["tool_choice"], "required");
        assert_eq!(
            req.rest["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        let m = &req.messages;
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"q\":1}");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"})
        );
        assert_eq!(m[4]["content"][0]["text"], "so?");
        assert!(
            to_chat(json!({"model": "m", "messages": []})).is_err(),
            "max_tokens is required"
        );
        assert!(
            to_chat(json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {}}))
                .is_err()
        );
    }

    #[test]
    fn completion_to_message() {
        let body = json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":2}"}}]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 10}}
        });
        let m = from_completion(body.to_string().as_bytes(), "claude-x").unwrap();
        assert_eq!(m["type"], "message");
        assert_eq!(m["model"], "claude-x");
        assert_eq!(m["content"][0], json!({"type": "text", "text": "Hello"}));
        assert_eq!(
            m["content"][1],
            json!({"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 2}})
        );
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 20);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 10);
        assert_eq!(m["usage"]["output_tokens"], 4);
    }

    #[test]
    fn chunks_to_events() {
        let mut enc = EventEncoder::new("claude-x");
        let mut out = Vec::new();
        for c in [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}),
        ] {
            out.extend(enc.chunk(&c));
        }
        out.extend(enc.done());
        let kinds: Vec<&str> = out
            .iter()
            .map(|f| f.lines().next().unwrap().trim_start_matches("event: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let delta: Value =
            serde_json::from_str(out[7].lines().nth(1).unwrap().trim_start_matches("data: "))
                .unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], 3);
        assert_eq!(delta["usage"]["input_tokens"], 9);
    }
}
