//! The `anthropic` provider: OpenAI chat requests translated to Anthropic's Messages API
//! (`POST {base}/v1/messages`, `x-api-key`, `anthropic-version`), and its answers, streams
//! (`message_start` … `message_stop`), stop reasons, tool calls and usage (with cache
//! tokens) translated back.

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::shape::{self, Chunks, ToolCall};
use super::{CallLimits, ChatReply, Params, StreamTranslator, UpstreamError, http, translate};
use crate::dialect::openai::ChatRequest;
use crate::meter::Usage;

pub const ANTHROPIC_VERSION: &str = "2023-06-01";
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// OpenAI parameters this translation reads (or that have no effect on the answer).
const KNOWN: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "user",
    "metadata",
    "parallel_tool_calls",
    "top_k",
    "n",
];

pub struct Anthropic {
    base: String,
    api_key: Option<SecretString>,
    params: Params,
    http: reqwest::Client,
    limits: CallLimits,
}

impl Anthropic {
    pub fn new(
        base_url: &str,
        api_key: Option<SecretString>,
        params: Params,
        http: reqwest::Client,
        limits: CallLimits,
    ) -> Self {
        Anthropic {
            base: base_url.trim_end_matches('/').to_owned(),
            api_key,
            params,
            http,
            limits,
        }
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        upstream_model: &str,
    ) -> Result<ChatReply, UpstreamError> {
        self.params.check(req, "anthropic", KNOWN)?;
        let body = to_messages(req, upstream_model, self.params)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let mut rb = self
            .http
            .post(format!("{}/v1/messages", self.base))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("anthropic-version", ANTHROPIC_VERSION)
            .body(bytes);
        if let Some(key) = &self.api_key {
            let mut v = HeaderValue::from_str(key.expose_secret()).map_err(|_| {
                UpstreamError::Protocol("api_key is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            rb = rb.header("x-api-key", v);
        }
        let secret = self.api_key.as_ref().map(|k| k.expose_secret());
        let resp = http::send(rb, &self.limits, parse_error, secret).await?;
        if req.wants_stream() {
            if !http::is_event_stream(&resp, "text/event-stream") {
                return Err(UpstreamError::Protocol("expected an event stream".into()));
            }
            let events = http::sse_data(resp, self.limits.idle);
            return Ok(ChatReply::Stream(translate(
                events,
                StreamState::new(upstream_model),
            )));
        }
        let raw = http::read_body(resp, self.limits.max_body, self.limits.idle).await?;
        let (body, usage) = from_message(&raw)?;
        Ok(ChatReply::Complete {
            body: body.to_string().into(),
            usage: Some(usage),
        })
    }
}

fn unsupported(param: &'static str, message: impl Into<String>) -> UpstreamError {
    UpstreamError::Unsupported {
        param,
        message: message.into(),
    }
}

/// OpenAI `messages` → Anthropic `system` + `messages` (tool results become user turns
/// with `tool_result` blocks; consecutive same-role turns are merged, as Anthropic needs).
pub fn to_messages(req: &ChatRequest, model: &str, params: Params) -> Result<Value, UpstreamError> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let blocks = match role {
            "system" | "developer" => {
                system.extend(content_blocks(m.get("content"))?);
                continue;
            }
            "user" => content_blocks(m.get("content"))?,
            "assistant" => {
                let mut b = content_blocks(m.get("content"))?;
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = &call["function"];
                    let args = f["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    b.push(json!({"type": "tool_use", "id": call["id"], "name": f["name"], "input": input}));
                }
                b
            }
            "tool" => {
                let content = match m.get("content") {
                    Some(Value::String(s)) => json!(s),
                    Some(Value::Array(parts)) => {
                        Value::Array(content_blocks(Some(&Value::Array(parts.clone())))?)
                    }
                    _ => json!(""),
                };
                vec![
                    json!({"type": "tool_result", "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null), "content": content}),
                ]
            }
            other => {
                return Err(unsupported(
                    "messages",
                    format!("message role {other:?} is not supported by anthropic"),
                ));
            }
        };
        let role = if role == "assistant" {
            "assistant"
        } else {
            "user"
        };
        super::push_turn(&mut turns, role, blocks);
    }
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.rest.get(*k).and_then(Value::as_u64))
        .unwrap_or(u64::from(
            params.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        ));
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ] {
        if let Some(v) = req.rest.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    match req.rest.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(n) = req.rest.get("n").and_then(Value::as_u64)
        && n != 1
        && !params.drop_unsupported
    {
        return Err(unsupported(
            "n",
            "anthropic returns one choice; n must be 1",
        ));
    }
    if let Some(tools) = req.rest.get("tools").and_then(Value::as_array) {
        let mapped: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                json!({
                    "name": f["name"],
                    "description": f.get("description").cloned().unwrap_or(Value::Null),
                    "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                })
            })
            .map(strip_nulls)
            .collect();
        out.insert("tools".into(), Value::Array(mapped));
    }
    if let Some(choice) = req.rest.get("tool_choice") {
        let mut c = match choice {
            Value::String(s) if s == "auto" => json!({"type": "auto"}),
            Value::String(s) if s == "required" => json!({"type": "any"}),
            Value::String(s) if s == "none" => json!({"type": "none"}),
            Value::Object(o) => {
                json!({"type": "tool", "name": o.get("function").and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null)})
            }
            _ => {
                return Err(unsupported(
                    "tool_choice",
                    "tool_choice must be auto, required, none or a function",
                ));
            }
        };
        if req.rest.get("parallel_tool_calls") == Some(&Value::Bool(false)) && c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = req.rest.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.wants_stream() {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.retain(|_, x| !x.is_null());
    }
    v
}

/// OpenAI message content (a string or parts) → Anthropic content blocks.
fn content_blocks(content: Option<&Value>) -> Result<Vec<Value>, UpstreamError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"type": "text", "text": p["text"]})),
                Some("image_url") => {
                    let url = p["image_url"]["url"].as_str().unwrap_or("");
                    image_source(url).map(|source| json!({"type": "image", "source": source}))
                }
                other => Err(unsupported(
                    "messages",
                    format!("content part {other:?} is not supported by anthropic"),
                )),
            })
            .collect(),
        Some(_) => Err(unsupported(
            "messages",
            "message content must be a string or an array of parts",
        )),
    }
}

/// A `data:` URL becomes a base64 source; an http(s) URL a url source.
pub fn image_source(url: &str) -> Result<Value, UpstreamError> {
    Ok(match super::image_url(url)? {
        super::ImageUrl::Inline { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        super::ImageUrl::Remote(url) => json!({"type": "url", "url": url}),
    })
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
    #[serde(default)]
    cache_creation_input_tokens: Option<i64>,
    #[serde(default)]
    cache_read_input_tokens: Option<i64>,
}

impl WireUsage {
    /// OpenAI counts every prompt token in `prompt_tokens`; Anthropic splits out cache
    /// reads and writes, so they are added back, with cache reads as `cached_tokens`.
    fn to_usage(self) -> Usage {
        Usage::with_cache_split(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens.unwrap_or(0),
            self.cache_creation_input_tokens.unwrap_or(0),
        )
    }
}

/// An Anthropic `message` → OpenAI `chat.completion`.
fn from_message(raw: &[u8]) -> Result<(Value, Usage), UpstreamError> {
    #[derive(Deserialize)]
    struct Message {
        id: String,
        model: String,
        content: Vec<Value>,
        stop_reason: Option<String>,
        usage: WireUsage,
    }
    let m: Message = serde_json::from_slice(raw)
        .map_err(|e| UpstreamError::Protocol(format!("unexpected anthropic response: {e}")))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in &m.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or("").to_owned(),
                name: block["name"].as_str().unwrap_or("").to_owned(),
                arguments: block
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            }),
            _ => {}
        }
    }
    let usage = m.usage.to_usage();
    let content = if text.is_empty() && !calls.is_empty() {
        None
    } else {
        Some(text.as_str())
    };
    let body = shape::completion(
        &m.id,
        &m.model,
        content,
        &calls,
        finish_reason(m.stop_reason.as_deref()),
        usage,
    );
    Ok((body, usage))
}

/// Anthropic's error body: `{"type":"error","error":{"type","message"}}`.
pub fn parse_error(raw: &[u8]) -> (String, Option<String>) {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Outer>(raw) {
        Ok(o) => (
            o.error.message.unwrap_or_else(|| "upstream error".into()),
            o.error.kind,
        ),
        Err(_) => ("upstream error".into(), None),
    }
}

/// Anthropic stream events → OpenAI chunks.
struct StreamState {
    chunks: Chunks,
    usage: WireUsage,
    tools: shape::ToolIndex,
    finished: bool,
}

impl StreamState {
    fn new(model: &str) -> Self {
        StreamState {
            chunks: Chunks::new(format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()), model),
            usage: WireUsage::default(),
            tools: shape::ToolIndex::default(),
            finished: false,
        }
    }
}

impl StreamTranslator for StreamState {
    fn event(&mut self, data: &str) -> Result<Vec<String>, UpstreamError> {
        let ev: Value = serde_json::from_str(data)
            .map_err(|e| UpstreamError::Protocol(format!("bad anthropic event: {e}")))?;
        let c = &self.chunks;
        Ok(match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Ok(u) = serde_json::from_value::<WireUsage>(ev["message"]["usage"].clone()) {
                    self.usage = u;
                }
                vec![c.role()]
            }
            Some("content_block_start") => {
                let block = &ev["content_block"];
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let i = self.tools.start(ev["index"].as_u64().unwrap_or(0));
                        vec![c.tool_start(
                            i,
                            block["id"].as_str().unwrap_or(""),
                            block["name"].as_str().unwrap_or(""),
                        )]
                    }
                    Some("text") => match block["text"].as_str() {
                        Some(t) if !t.is_empty() => vec![c.text(t)],
                        _ => vec![],
                    },
                    _ => vec![],
                }
            }
            Some("content_block_delta") => {
                let d = &ev["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => vec![c.text(d["text"].as_str().unwrap_or(""))],
                    Some("input_json_delta") => {
                        let i = self.tools.of(ev["index"].as_u64().unwrap_or(0));
                        vec![c.tool_arguments(i, d["partial_json"].as_str().unwrap_or(""))]
                    }
                    _ => vec![],
                }
            }
            Some("message_delta") => {
                if let Some(out) = ev["usage"]["output_tokens"].as_i64() {
                    self.usage.output_tokens = out;
                }
                for (k, field) in [
                    ("input_tokens", 0),
                    ("cache_read_input_tokens", 1),
                    ("cache_creation_input_tokens", 2),
                ] {
                    if let Some(v) = ev["usage"][k].as_i64() {
                        match field {
                            0 => self.usage.input_tokens = v,
                            1 => self.usage.cache_read_input_tokens = Some(v),
                            _ => self.usage.cache_creation_input_tokens = Some(v),
                        }
                    }
                }
                vec![c.finish(finish_reason(ev["delta"]["stop_reason"].as_str()))]
            }
            Some("message_stop") => {
                self.finished = true;
                vec![c.usage(self.usage.to_usage()), shape::DONE.to_owned()]
            }
            Some("error") => {
                let kind = ev["error"]["type"].as_str().unwrap_or("api_error");
                let status = match kind {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "invalid_request_error" => 400,
                    _ => 500,
                };
                return Err(UpstreamError::Status {
                    status,
                    message: ev["error"]["message"]
                        .as_str()
                        .unwrap_or("upstream error")
                        .to_owned(),
                    code: Some(kind.to_owned()),
                    retry_after: None,
                });
            }
            _ => vec![],
        })
    }

    fn end(&mut self) -> Vec<String> {
        // A stream cut before `message_stop` still reports what was counted.
        if self.finished {
            vec![]
        } else {
            vec![self.chunks.usage(self.usage.to_usage())]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn request_translation_field_by_field() {
        let r = req(json!({
            "model": "claude", "max_tokens": 100, "temperature": 0.5, "stop": "END", "user": "u1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is in"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "user", "content": "and?"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks", "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        }));
        let out = to_messages(&r, "claude-x", Params::default()).unwrap();
        assert_eq!(out["model"], "claude-x");
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["temperature"], 0.5);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"], json!({"user_id": "u1"}));
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "Be brief."}])
        );
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(
            msgs.len(),
            3,
            "tool result and the next user turn merge: {msgs:?}"
        );
        assert_eq!(
            msgs[0]["content"][1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}})
        );
        assert_eq!(
            msgs[1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": 1}})
        );
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(
            msgs[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"})
        );
        assert_eq!(
            msgs[2]["content"][1],
            json!({"type": "text", "text": "and?"})
        );
        assert_eq!(
            out["tools"][0],
            json!({"name": "look", "description": "Looks", "input_schema": {"type": "object"}})
        );
        assert_eq!(out["tool_choice"], json!({"type": "any"}));
        assert!(out.get("stream").is_none());
    }

    #[test]
    fn default_max_tokens_and_unsupported_params() {
        let r = req(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(
            to_messages(&r, "m", Params::default()).unwrap()["max_tokens"],
            4096
        );
        let strict = Params::default();
        let r = req(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}),
        );
        let err = strict.check(&r, "anthropic", KNOWN).unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Unsupported {
                    param: "logprobs",
                    ..
                }
            ),
            "{err:?}"
        );
        let lenient = Params {
            drop_unsupported: true,
            default_max_tokens: Some(7),
        };
        assert!(lenient.check(&r, "anthropic", KNOWN).is_ok());
        assert_eq!(to_messages(&r, "m", lenient).unwrap()["max_tokens"], 7);
    }

    #[test]
    fn response_translation_with_tools_and_cache_usage() {
        let raw = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 3}
        });
        let (body, usage) = from_message(raw.to_string().as_bytes()).unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 33,
                completion_tokens: 5,
                cached_tokens: 20
            }
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(body["choices"][0]["message"]["content"], "Let me look.");
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"][0]["function"],
            json!({"name": "look", "arguments": "{\"q\":1}"})
        );
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 20);
    }

    #[test]
    fn stream_translation() {
        let mut st = StreamState::new("claude-x");
        let mut out = Vec::new();
        for ev in [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ] {
            out.extend(st.event(&ev.to_string()).unwrap());
        }
        let v: Vec<Value> = out
            .iter()
            .filter(|s| *s != "[DONE]")
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(v[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            v[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "toolu_9"
        );
        assert_eq!(
            v[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        assert_eq!(v[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v[5]["usage"]["prompt_tokens"], 12);
        assert_eq!(v[5]["usage"]["completion_tokens"], 7);
        assert_eq!(out.last().unwrap(), "[DONE]");
        let err = st.event(
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
                .to_string(),
        );
        assert!(matches!(
            err,
            Err(UpstreamError::Status { status: 529, .. })
        ));
    }
}
