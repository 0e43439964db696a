//! The `gemini` provider: OpenAI chat requests translated to Google's Generative Language
//! API (`POST {base}/v1beta/models/{model}:generateContent`, streams through
//! `:streamGenerateContent?alt=sse`, the key in `x-goog-api-key`, never in the URL), and
//! its answers, streams, finish reasons, safety blocks, function calls and usage
//! translated back. Embeddings go through `:batchEmbedContents`.

use std::collections::HashMap;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::openai::url_segment;
use super::shape::{self, Chunks, ToolCall};
use super::{
    CallLimits, ChatReply, EmbeddingsReply, Params, StreamTranslator, UpstreamError, http,
    translate,
};
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest};
use crate::meter::Usage;

/// OpenAI parameters this translation reads (or that have no effect on the answer).
const KNOWN: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "metadata",
];

pub struct Gemini {
    base: String,
    api_key: Option<SecretString>,
    params: Params,
    http: reqwest::Client,
    limits: CallLimits,
}

impl Gemini {
    pub fn new(
        base_url: &str,
        api_key: Option<SecretString>,
        params: Params,
        http: reqwest::Client,
        limits: CallLimits,
    ) -> Self {
        Gemini {
            base: base_url.trim_end_matches('/').to_owned(),
            api_key,
            params,
            http,
            limits,
        }
    }

    /// `{base}/v1beta/models/{model}:{method}`; a configured `models/` prefix is accepted.
    fn url(&self, upstream_model: &str, method: &str) -> String {
        let model = upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model);
        format!(
            "{}/v1beta/models/{}:{method}",
            self.base,
            url_segment(model)
        )
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        upstream_model: &str,
    ) -> Result<ChatReply, UpstreamError> {
        self.params.check(req, "gemini", KNOWN)?;
        let body = to_gemini(req, self.params)?;
        let method = if req.wants_stream() {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let resp = self.post(&self.url(upstream_model, method), &body).await?;
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
        let (body, usage) = from_response(&raw, upstream_model)?;
        Ok(ChatReply::Complete {
            body: body.to_string().into(),
            usage: Some(usage),
        })
    }

    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        upstream_model: &str,
    ) -> Result<EmbeddingsReply, UpstreamError> {
        let model = upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model);
        let texts = req.texts();
        let body = to_batch_embed(&texts, model);
        let resp = self
            .post(&self.url(upstream_model, "batchEmbedContents"), &body)
            .await?;
        let raw = http::read_body(resp, self.limits.max_body, self.limits.idle).await?;
        let (body, usage) = from_batch_embed(&raw, upstream_model, &texts)?;
        Ok(EmbeddingsReply {
            body: body.to_string().into(),
            usage: Some(usage),
        })
    }

    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, UpstreamError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let mut rb = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(bytes);
        if let Some(key) = &self.api_key {
            let mut v = HeaderValue::from_str(key.expose_secret()).map_err(|_| {
                UpstreamError::Protocol("api_key is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            rb = rb.header("x-goog-api-key", v);
        }
        let secret = self.api_key.as_ref().map(|k| k.expose_secret());
        http::send(rb, &self.limits, parse_error, secret).await
    }
}

fn unsupported(param: &'static str, message: impl Into<String>) -> UpstreamError {
    UpstreamError::Unsupported {
        param,
        message: message.into(),
    }
}

/// OpenAI chat request → Gemini `GenerateContentRequest`: system and developer messages
/// become `systemInstruction`, assistant turns `model` turns, tool results user turns with
/// `functionResponse` parts; consecutive same-role turns are merged.
pub fn to_gemini(req: &ChatRequest, params: Params) -> Result<Value, UpstreamError> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // OpenAI tool results name the call by id, Gemini's by function name.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for m in &req.messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let (role, parts) = match role {
            "system" | "developer" => {
                system.extend(parts(m.get("content"))?);
                continue;
            }
            "user" => ("user", parts(m.get("content"))?),
            "assistant" => {
                let mut p = parts(m.get("content"))?;
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = &call["function"];
                    let name = f["name"].as_str().unwrap_or("");
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id.to_owned(), name.to_owned());
                    }
                    let args = f["arguments"].as_str().unwrap_or("{}");
                    let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    p.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                ("model", p)
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = call_names
                    .get(id)
                    .map(String::as_str)
                    .or_else(|| m.get("name").and_then(Value::as_str))
                    .ok_or_else(|| {
                        unsupported(
                            "messages",
                            format!(
                                "tool message for {id:?} answers no earlier assistant tool call"
                            ),
                        )
                    })?;
                let content = tool_result(m.get("content"));
                (
                    "user",
                    vec![
                        json!({"functionResponse": {"name": name, "response": {"content": content}}}),
                    ],
                )
            }
            other => {
                return Err(unsupported(
                    "messages",
                    format!("message role {other:?} is not supported by gemini"),
                ));
            }
        };
        super::push_turn(&mut turns, role, parts);
    }
    let mut out = Map::new();
    out.insert(
        "contents".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let config = generation_config(req, params)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = req.rest.get("tools").and_then(Value::as_array) {
        let mut decls = Vec::with_capacity(tools.len());
        for t in tools {
            if t.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
                return Err(unsupported(
                    "tools",
                    "gemini supports only tools of type \"function\"",
                ));
            }
            let f = &t["function"];
            decls.push(strip_nulls(json!({
                "name": f["name"],
                "description": f.get("description").cloned().unwrap_or(Value::Null),
                "parameters": f.get("parameters").cloned().unwrap_or(Value::Null),
            })));
        }
        out.insert(
            "tools".into(),
            json!([{"functionDeclarations": Value::Array(decls)}]),
        );
    }
    if let Some(choice) = req.rest.get("tool_choice") {
        let config = match choice {
            Value::String(s) if s == "auto" => json!({"mode": "AUTO"}),
            Value::String(s) if s == "none" => json!({"mode": "NONE"}),
            Value::String(s) if s == "required" => json!({"mode": "ANY"}),
            Value::Object(o) => match o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
                None => {
                    return Err(unsupported("tool_choice", "tool_choice names no function"));
                }
            },
            _ => {
                return Err(unsupported(
                    "tool_choice",
                    "tool_choice must be auto, required, none or a function",
                ));
            }
        };
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(Value::Object(out))
}

/// OpenAI sampling and output parameters → Gemini `generationConfig`.
fn generation_config(
    req: &ChatRequest,
    params: Params,
) -> Result<Map<String, Value>, UpstreamError> {
    let mut g = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = req.rest.get(from).filter(|v| !v.is_null()) {
            g.insert(to.into(), v.clone());
        }
    }
    // Gemini needs no output limit; a deployment's `default_max_tokens` still applies.
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.rest.get(*k).and_then(Value::as_u64))
        .or(params.default_max_tokens.map(u64::from));
    if let Some(max) = max {
        g.insert("maxOutputTokens".into(), json!(max));
    }
    match req.rest.get("stop") {
        Some(Value::String(s)) => {
            g.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            g.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(n) = req.rest.get("n").and_then(Value::as_u64)
        && n != 1
    {
        // Stream chunks carry one choice; more than one candidate cannot be streamed.
        if req.wants_stream() {
            if !params.drop_unsupported {
                return Err(unsupported(
                    "n",
                    "gemini streams one choice; n must be 1 when streaming",
                ));
            }
        } else {
            g.insert("candidateCount".into(), json!(n));
        }
    }
    if let Some(rf) = req.rest.get("response_format") {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                g.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                g.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = rf.get("json_schema").and_then(|s| s.get("schema")) {
                    g.insert("responseSchema".into(), schema.clone());
                }
            }
            _ if params.drop_unsupported => {}
            _ => {
                return Err(unsupported(
                    "response_format",
                    "response_format must be text, json_object or json_schema",
                ));
            }
        }
    }
    Ok(g)
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.retain(|_, x| !x.is_null());
    }
    v
}

/// A tool message's content for `functionResponse.response.content`: a JSON object when
/// the text is one, the text otherwise.
fn tool_result(content: Option<&Value>) -> Value {
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(text),
    }
}

/// OpenAI message content (a string or parts) → Gemini parts.
fn parts(content: Option<&Value>) -> Result<Vec<Value>, UpstreamError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"text": p["text"]})),
                Some("image_url") => {
                    let url = p["image_url"]
                        .as_str()
                        .or_else(|| p["image_url"]["url"].as_str())
                        .unwrap_or("");
                    image_part(url)
                }
                other => Err(unsupported(
                    "messages",
                    format!("content part {other:?} is not supported by gemini"),
                )),
            })
            .collect(),
        Some(_) => Err(unsupported(
            "messages",
            "message content must be a string or an array of parts",
        )),
    }
}

/// A `data:` URL becomes `inlineData`, an http(s) URL `fileData` (its type guessed from
/// the extension, JPEG when there is none).
pub fn image_part(url: &str) -> Result<Value, UpstreamError> {
    Ok(match super::image_url(url)? {
        super::ImageUrl::Inline { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        super::ImageUrl::Remote(url) => {
            json!({"fileData": {"mimeType": guess_mime(url), "fileUri": url}})
        }
    })
}

fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
pub fn finish_reason(reason: Option<&str>, called_tools: bool) -> &'static str {
    if called_tools {
        return "tool_calls";
    }
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(r) if is_filtered(r) => "content_filter",
        _ => "stop",
    }
}

fn is_filtered(reason: &str) -> bool {
    matches!(
        reason,
        "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
    )
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: i64,
    #[serde(default)]
    candidates_token_count: i64,
    #[serde(default)]
    thoughts_token_count: i64,
    #[serde(default)]
    cached_content_token_count: i64,
}

impl WireUsage {
    /// Gemini counts cached tokens inside `promptTokenCount`, as OpenAI does; thinking
    /// tokens are billed as output, so they join the completion tokens.
    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count.max(0),
            completion_tokens: self.candidates_token_count.max(0)
                + self.thoughts_token_count.max(0),
            cached_tokens: self.cached_content_token_count.max(0),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Content {
    #[serde(default)]
    parts: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

impl Response {
    /// A prompt refused before any candidate was generated.
    fn blocked(&self) -> Option<UpstreamError> {
        let reason = self.prompt_feedback.as_ref()?.block_reason.as_deref()?;
        self.candidates
            .is_empty()
            .then(|| UpstreamError::ContentPolicy(format!("gemini blocked the prompt ({reason})")))
    }
}

/// A candidate's answer: visible text (thought summaries left out) and function calls.
fn answer(parts: &[Value], next_call: &mut usize) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts {
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought") != Some(&Value::Bool(true)) {
                text.push_str(t);
            }
        } else if let Some(f) = p.get("functionCall") {
            calls.push(ToolCall {
                id: call_id(f, *next_call),
                name: f["name"].as_str().unwrap_or("").to_owned(),
                arguments: f
                    .get("args")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            });
            *next_call += 1;
        }
    }
    (text, calls)
}

/// Gemini usually gives function calls no id; OpenAI clients need one to answer the call,
/// so one is made: `call_<n>_<random>`, unique across the conversation.
fn call_id(f: &Value, n: usize) -> String {
    match f.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            let r = uuid::Uuid::new_v4().simple().to_string();
            format!("call_{n}_{}", &r[..12])
        }
    }
}

/// A Gemini `GenerateContentResponse` → OpenAI `chat.completion` (one choice per
/// candidate).
fn from_response(raw: &[u8], model: &str) -> Result<(Value, Usage), UpstreamError> {
    let r: Response = serde_json::from_slice(raw)
        .map_err(|e| UpstreamError::Protocol(format!("unexpected gemini response: {e}")))?;
    if let Some(e) = r.blocked() {
        return Err(e);
    }
    let usage = r.usage_metadata.unwrap_or_default().to_usage();
    if r.candidates.is_empty() {
        return Err(UpstreamError::Protocol(
            "gemini answered without a candidate".into(),
        ));
    }
    let id = format!(
        "chatcmpl-{}",
        r.response_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
    );
    let model = r.model_version.as_deref().unwrap_or(model);
    let mut body = Value::Null;
    let mut choices = Vec::with_capacity(r.candidates.len());
    let mut next_call = 0;
    for (i, c) in r.candidates.iter().enumerate() {
        let parts = c.content.as_ref().map_or(&[][..], |c| c.parts.as_slice());
        let reason = c.finish_reason.as_deref();
        if parts.is_empty() && reason.is_some_and(is_filtered) && r.candidates.len() == 1 {
            return Err(UpstreamError::ContentPolicy(format!(
                "gemini withheld the answer ({})",
                reason.unwrap_or("SAFETY")
            )));
        }
        let (text, calls) = answer(parts, &mut next_call);
        let content = if text.is_empty() && !calls.is_empty() {
            None
        } else {
            Some(text.as_str())
        };
        let mut one = shape::completion(
            &id,
            model,
            content,
            &calls,
            finish_reason(reason, !calls.is_empty()),
            usage,
        );
        let mut choice = one["choices"][0].take();
        choice["index"] = json!(c.index.unwrap_or(i as u64));
        choices.push(choice);
        if body.is_null() {
            body = one;
        }
    }
    body["choices"] = Value::Array(choices);
    Ok((body, usage))
}

/// OpenAI embedding inputs → Gemini `BatchEmbedContentsRequest`.
fn to_batch_embed(texts: &[String], model: &str) -> Value {
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}}))
        .collect();
    json!({ "requests": requests })
}

/// Gemini `BatchEmbedContentsResponse` → OpenAI embeddings list.
fn from_batch_embed(
    raw: &[u8],
    model: &str,
    texts: &[String],
) -> Result<(Value, Usage), UpstreamError> {
    #[derive(Deserialize)]
    struct Batch {
        embeddings: Vec<Embedding>,
    }
    #[derive(Deserialize)]
    struct Embedding {
        values: Vec<f64>,
    }
    let b: Batch = serde_json::from_slice(raw)
        .map_err(|e| UpstreamError::Protocol(format!("unexpected gemini embeddings: {e}")))?;
    if b.embeddings.len() != texts.len() {
        return Err(UpstreamError::Protocol(format!(
            "gemini returned {} embeddings for {} inputs",
            b.embeddings.len(),
            texts.len()
        )));
    }
    let data: Vec<Value> = b
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.values}))
        .collect();
    // batchEmbedContents reports no token usage: estimate it (4 characters a token) so
    // the ledger and prices still see the request.
    let tokens = crate::meter::estimate_tokens(texts.iter().map(|t| t.chars().count()).sum());
    let usage = Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
        cached_tokens: 0,
    };
    let body = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok((body, usage))
}

/// Gemini's error body: `{"error":{"code":400,"message":"…","status":"INVALID_ARGUMENT"}}`
/// (some proxies answer with a one-element array of it).
pub fn parse_error(raw: &[u8]) -> (String, Option<String>) {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        status: Option<String>,
    }
    let parsed = serde_json::from_slice::<Value>(raw).and_then(|v| match v {
        Value::Array(mut items) if !items.is_empty() => {
            serde_json::from_value::<Outer>(items.swap_remove(0))
        }
        v => serde_json::from_value::<Outer>(v),
    });
    match parsed {
        Ok(o) => (
            o.error.message.unwrap_or_else(|| "upstream error".into()),
            o.error.status,
        ),
        Err(_) => ("upstream error".into(), None),
    }
}

/// Gemini stream events (each a whole `GenerateContentResponse` with the next piece of
/// the answer) → OpenAI chunks. Gemini has no closing event: the usage chunk and `[DONE]`
/// come from [`StreamTranslator::end`].
struct StreamState {
    chunks: Chunks,
    usage: WireUsage,
    started: bool,
    tools: usize,
    finished: bool,
}

impl StreamState {
    fn new(model: &str) -> Self {
        StreamState {
            chunks: Chunks::new(format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()), model),
            usage: WireUsage::default(),
            started: false,
            tools: 0,
            finished: false,
        }
    }
}

impl StreamTranslator for StreamState {
    fn event(&mut self, data: &str) -> Result<Vec<String>, UpstreamError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| UpstreamError::Protocol(format!("bad gemini event: {e}")))?;
        if let Some(err) = v.get("error") {
            let status = err["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            return Err(UpstreamError::Status {
                status,
                message: err["message"]
                    .as_str()
                    .unwrap_or("upstream error")
                    .to_owned(),
                code: err["status"].as_str().map(str::to_owned),
                retry_after: None,
            });
        }
        let r: Response = serde_json::from_value(v)
            .map_err(|e| UpstreamError::Protocol(format!("bad gemini event: {e}")))?;
        if let Some(u) = r.usage_metadata {
            self.usage = u;
        }
        if !self.started
            && let Some(e) = r.blocked()
        {
            return Err(e);
        }
        let c = &self.chunks;
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(c.role());
        }
        let Some(cand) = r.candidates.first() else {
            return Ok(out);
        };
        let parts = cand
            .content
            .as_ref()
            .map_or(&[][..], |c| c.parts.as_slice());
        let mut next_call = self.tools;
        let (text, calls) = answer(parts, &mut next_call);
        if !text.is_empty() {
            out.push(c.text(&text));
        }
        for call in &calls {
            out.push(c.tool_start(self.tools, &call.id, &call.name));
            out.push(c.tool_arguments(self.tools, &call.arguments));
            self.tools += 1;
        }
        if let Some(reason) = cand.finish_reason.as_deref()
            && !self.finished
        {
            self.finished = true;
            out.push(c.finish(finish_reason(Some(reason), self.tools > 0)));
        }
        Ok(out)
    }

    fn end(&mut self) -> Vec<String> {
        let mut out = vec![self.chunks.usage(self.usage.to_usage())];
        // Without a finish reason the stream was cut short: no `[DONE]` then.
        if self.finished {
            out.push(shape::DONE.to_owned());
        }
        out
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
            "model": "g", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "stop": "END", "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.2,
            "user": "u1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp?s=1"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat"}}
                ]},
                {"role": "user", "content": "these?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "fetch", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "a cat"},
                {"role": "tool", "tool_call_id": "call_b", "content": "{\"ok\":true}"},
                {"role": "user", "content": "and?"},
                {"role": "assistant", "content": "A cat."}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks", "parameters": {"type": "object"}}},
                      {"type": "function", "function": {"name": "fetch"}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}}
        }));
        let out = to_gemini(&r, Params::default()).unwrap();
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}, {"text": "Use tools."}]})
        );
        let contents = out["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 4, "same-role turns merge: {contents:#?}");
        assert_eq!(contents[0]["role"], "user");
        assert_eq!(
            contents[0]["parts"],
            json!([
                {"text": "What is in"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/cat.webp?s=1"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/cat"}},
                {"text": "these?"}
            ])
        );
        assert_eq!(contents[1]["role"], "model");
        assert_eq!(
            contents[1]["parts"],
            json!([
                {"functionCall": {"name": "look", "args": {"q": 1}}},
                {"functionCall": {"name": "fetch", "args": {}}}
            ])
        );
        assert_eq!(contents[2]["role"], "user");
        assert_eq!(
            contents[2]["parts"],
            json!([
                {"functionResponse": {"name": "look", "response": {"content": "a cat"}}},
                {"functionResponse": {"name": "fetch", "response": {"content": {"ok": true}}}},
                {"text": "and?"}
            ])
        );
        assert_eq!(
            contents[3],
            json!({"role": "model", "parts": [{"text": "A cat."}]})
        );
        assert_eq!(
            out["generationConfig"],
            json!({
                "temperature": 0.5, "topP": 0.9, "topK": 40, "seed": 7,
                "presencePenalty": 0.1, "frequencyPenalty": 0.2,
                "maxOutputTokens": 100, "stopSequences": ["END"]
            })
        );
        assert_eq!(
            out["tools"],
            json!([{"functionDeclarations": [
                {"name": "look", "description": "Looks", "parameters": {"type": "object"}},
                {"name": "fetch"}
            ]}])
        );
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["look"]}})
        );
        assert!(out.get("model").is_none() && out.get("stream").is_none());
    }

    #[test]
    fn tool_choice_modes_response_formats_and_candidates() {
        let base = json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]});
        let with = |extra: Value| {
            let mut v = base.clone();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            to_gemini(&req(v), Params::default())
        };
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            let out = with(json!({"tool_choice": choice})).unwrap();
            assert_eq!(
                out["toolConfig"],
                json!({"functionCallingConfig": {"mode": mode}})
            );
        }
        let out = with(json!({"response_format": {"type": "json_object"}, "max_completion_tokens": 9, "max_tokens": 50, "stop": ["a", "b"], "n": 2})).unwrap();
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json", "maxOutputTokens": 9, "stopSequences": ["a", "b"], "candidateCount": 2})
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let out = with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})).unwrap();
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json", "responseSchema": schema})
        );
        assert!(with(json!({})).unwrap().get("generationConfig").is_none());
        let err = with(json!({"stream": true, "n": 3})).unwrap_err();
        assert!(
            matches!(err, UpstreamError::Unsupported { param: "n", .. }),
            "{err:?}"
        );
        let err = with(json!({"tool_choice": "sometimes"})).unwrap_err();
        assert!(matches!(
            err,
            UpstreamError::Unsupported {
                param: "tool_choice",
                ..
            }
        ));
        let orphan = req(json!({"model": "g", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "nope", "content": "x"}
        ]}));
        assert!(matches!(
            to_gemini(&orphan, Params::default()),
            Err(UpstreamError::Unsupported {
                param: "messages",
                ..
            })
        ));
    }

    #[test]
    fn unsupported_params_are_refused_unless_dropped() {
        let r = req(
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "logprobs": true, "seed": 1}),
        );
        let err = Params::default().check(&r, "gemini", KNOWN).unwrap_err();
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
        assert!(lenient.check(&r, "gemini", KNOWN).is_ok());
        let out = to_gemini(&r, lenient).unwrap();
        assert_eq!(
            out["generationConfig"],
            json!({"seed": 1, "maxOutputTokens": 7})
        );
    }

    #[test]
    fn response_translation_with_tools_and_usage() {
        let raw = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "thinking…", "thought": true},
                    {"text": "Let me "}, {"text": "look."},
                    {"functionCall": {"name": "look", "args": {"q": 1}}}
                ]},
                "finishReason": "STOP", "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
            }],
            "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 5, "thoughtsTokenCount": 4,
                              "cachedContentTokenCount": 20, "totalTokenCount": 39},
            "modelVersion": "gemini-2.5-flash", "responseId": "abc"
        });
        let (body, usage) = from_response(raw.to_string().as_bytes(), "gemini-x").unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 30,
                completion_tokens: 9,
                cached_tokens: 20
            }
        );
        assert_eq!(body["id"], "chatcmpl-abc");
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gemini-2.5-flash");
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me look.");
        let call = &choice["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_0_"));
        assert_eq!(call["type"], "function");
        assert_eq!(
            call["function"],
            json!({"name": "look", "arguments": "{\"q\":1}"})
        );
        assert_eq!(body["usage"]["total_tokens"], 39);
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 20);

        let raw = json!({"candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS", "index": 0},
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "RECITATION", "index": 1}
        ]});
        let (body, usage) = from_response(raw.to_string().as_bytes(), "gemini-x").unwrap();
        assert_eq!(usage, Usage::default());
        assert_eq!(body["model"], "gemini-x");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["choices"][1]["index"], 1);
        assert_eq!(body["choices"][1]["message"]["content"], "b");
        assert_eq!(body["choices"][1]["finish_reason"], "content_filter");
    }

    #[test]
    fn safety_blocks_are_content_policy_errors() {
        let blocked = json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}
        });
        let err = from_response(blocked.to_string().as_bytes(), "g").unwrap_err();
        assert!(
            matches!(&err, UpstreamError::ContentPolicy(m) if m.contains("SAFETY")),
            "{err:?}"
        );
        let withheld = json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]});
        let err = from_response(withheld.to_string().as_bytes(), "g").unwrap_err();
        assert!(matches!(err, UpstreamError::ContentPolicy(_)), "{err:?}");
        let api: crate::error::ApiError = err.into();
        assert_eq!(api.status().as_u16(), 400);

        let mut st = StreamState::new("g");
        assert!(matches!(
            st.event(&blocked.to_string()),
            Err(UpstreamError::ContentPolicy(_))
        ));
    }

    #[test]
    fn stream_translation() {
        let mut st = StreamState::new("gemini-x");
        let mut out = Vec::new();
        for ev in [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}],
                   "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " there"}]}, "index": 0}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
                                   "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19}}),
        ] {
            out.extend(st.event(&ev.to_string()).unwrap());
        }
        out.extend(st.end());
        let v: Vec<Value> = out
            .iter()
            .filter(|s| *s != "[DONE]")
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(v[0]["object"], "chat.completion.chunk");
        assert_eq!(v[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(v[2]["choices"][0]["delta"]["content"], " there");
        let start = &v[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(start["index"], 0);
        assert_eq!(start["function"]["name"], "f");
        assert!(start["id"].as_str().unwrap().starts_with("call_0_"));
        assert_eq!(
            v[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(v[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v[6]["choices"], json!([]));
        assert_eq!(v[6]["usage"]["prompt_tokens"], 12);
        assert_eq!(v[6]["usage"]["completion_tokens"], 7);
        assert_eq!(v.len(), 7);
        assert_eq!(out.last().unwrap(), "[DONE]");

        let err = StreamState::new("g").event(
            &json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
                .to_string(),
        );
        assert!(matches!(
            err,
            Err(UpstreamError::Status { status: 429, code: Some(ref c), .. }) if c == "RESOURCE_EXHAUSTED"
        ));
        // A stream that ends without a finish reason was cut: usage, but no `[DONE]`.
        let mut cut = StreamState::new("g");
        cut.event(&json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}).to_string())
            .unwrap();
        let tail = cut.end();
        assert_eq!(tail.len(), 1);
        assert!(tail[0].contains("\"usage\""));
    }

    #[test]
    fn error_parsing() {
        let raw = json!({"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}});
        assert_eq!(
            parse_error(raw.to_string().as_bytes()),
            ("API key not valid.".into(), Some("INVALID_ARGUMENT".into()))
        );
        let arr = json!([{"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}]);
        assert_eq!(
            parse_error(arr.to_string().as_bytes()),
            ("not found".into(), Some("NOT_FOUND".into()))
        );
        assert_eq!(parse_error(b"<html>"), ("upstream error".into(), None));
    }

    #[test]
    fn embeddings_translation() {
        let texts = vec!["a b c d e".to_owned(), "xy".to_owned()];
        assert_eq!(
            to_batch_embed(&texts, "text-embedding-004"),
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a b c d e"}]}},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "xy"}]}}
            ]})
        );
        let raw = json!({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 0.0]}]});
        let (body, usage) =
            from_batch_embed(raw.to_string().as_bytes(), "text-embedding-004", &texts).unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(
            body["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [0.25, 0.0]})
        );
        assert_eq!(body["model"], "text-embedding-004");
        // 9 + 2 characters → 3 estimated tokens.
        assert_eq!(usage.prompt_tokens, 3);
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        assert!(from_batch_embed(raw.to_string().as_bytes(), "m", &texts[..1]).is_err());
    }

    #[test]
    fn config_requires_a_key_and_defaults_the_base_url() {
        struct NoEnv;
        impl crate::config::Env for NoEnv {
            fn var(&self, _: &str) -> Option<String> {
                None
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        let load = |deployment: &str| {
            std::fs::write(
                &path,
                format!(
                    "[server]\nmaster_key = \"test-master-key-0123456789\"\n[[deployments]]\nmodel = \"g\"\nprovider = \"gemini\"\n{deployment}"
                ),
            )
            .unwrap();
            crate::config::Config::load(Some(&path), None, &NoEnv)
        };
        let c = load("api_key = \"k\"\n").unwrap();
        let d = &c.deployments[0];
        assert_eq!(d.provider.as_str(), "gemini");
        assert_eq!(
            d.base_url.as_ref().unwrap().as_str(),
            "https://generativelanguage.googleapis.com/"
        );
        let err = load("").unwrap_err();
        assert_eq!(err.field, "deployments[0].api_key");
    }

    #[test]
    fn url_keeps_the_key_out_and_encodes_the_model() {
        let g = Gemini::new(
            "https://example.test/",
            Some(SecretString::from("k")),
            Params::default(),
            reqwest::Client::new(),
            CallLimits {
                first_byte: std::time::Duration::from_secs(1),
                idle: std::time::Duration::from_secs(1),
                max_body: 1,
            },
        );
        assert_eq!(
            g.url("models/gemini/x", "generateContent"),
            "https://example.test/v1beta/models/gemini%2Fx:generateContent"
        );
        assert_eq!(
            g.url("gemini-2.5-flash", "streamGenerateContent?alt=sse"),
            "https://example.test/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }
}
