//! The `bedrock` provider: OpenAI chat requests translated to AWS Bedrock's Converse API
//! (`POST {base}/model/{id}/converse` and `/converse-stream`), signed with SigV4 (service
//! `bedrock`) over the exact bytes sent; answers, stop reasons, tool calls and usage (with
//! cache tokens) translated back. Streams arrive as AWS event-stream binary frames, decoded
//! as the bytes come in. Embeddings use Titan's `POST {base}/model/{id}/invoke`, one call
//! per input.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::Message;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::shape::{self, Chunks, ToolCall};
use super::{
    CallLimits, ChatReply, EmbeddingsReply, Params, StreamTranslator, UpstreamError, http,
    translate,
};
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest};
use crate::meter::Usage;

/// The SigV4 signing name of Bedrock's runtime API.
pub const SERVICE: &str = "bedrock";
/// Content type of Converse streams.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
/// Event-stream messages are at most 16 MiB (AWS's limit); more buffered is a broken stream.
const MAX_BUFFERED_FRAME: usize = 16 * 1024 * 1024 + 1024;
/// Embedding inputs per request at most (each is one upstream call).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

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
    "n",
];

/// OpenAI embeddings parameters the Titan translation reads or can ignore.
const KNOWN_EMBEDDINGS: &[&str] = &["user", "encoding_format", "dimensions"];

/// The deployment's AWS credentials (kept secret; only the signer sees them).
pub struct AwsCredentials {
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

pub struct Bedrock {
    base: String,
    region: String,
    credentials: AwsCredentials,
    params: Params,
    http: reqwest::Client,
    limits: CallLimits,
}

impl Bedrock {
    pub fn new(
        base_url: &str,
        region: String,
        credentials: AwsCredentials,
        params: Params,
        http: reqwest::Client,
        limits: CallLimits,
    ) -> Self {
        Bedrock {
            base: base_url.trim_end_matches('/').to_owned(),
            region,
            credentials,
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
        self.params.check(req, "bedrock", KNOWN)?;
        let body = to_converse(req, self.params)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let stream = req.wants_stream();
        let (action, accept) = if stream {
            ("converse-stream", EVENT_STREAM)
        } else {
            ("converse", "application/json")
        };
        let resp = self
            .post(&model_url(upstream_model, action), bytes, accept)
            .await?;
        if stream {
            if !http::is_event_stream(&resp, EVENT_STREAM) {
                return Err(UpstreamError::Protocol("expected an event stream".into()));
            }
            let events = frames(http::byte_stream(resp, self.limits.idle));
            return Ok(ChatReply::Stream(translate(
                events,
                StreamState::new(upstream_model),
            )));
        }
        let raw = http::read_body(resp, self.limits.max_body, self.limits.idle).await?;
        let (body, usage) = from_converse(&raw, upstream_model)?;
        Ok(ChatReply::Complete {
            body: body.to_string().into(),
            usage: Some(usage),
        })
    }

    /// Titan text embeddings: one `invoke` per input, in order.
    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        upstream_model: &str,
    ) -> Result<EmbeddingsReply, UpstreamError> {
        if !self.params.drop_unsupported {
            let mut keys: Vec<&String> = req
                .rest
                .keys()
                .filter(|k| !KNOWN_EMBEDDINGS.contains(&k.as_str()))
                .collect();
            keys.sort();
            if let Some(k) = keys.first() {
                return Err(unsupported(
                    "(unsupported)",
                    format!(
                        "the parameter {k:?} is not supported by this model's provider (bedrock); remove it, or set drop_unsupported_params on the deployment"
                    ),
                ));
            }
        }
        let base64 = match req.rest.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "float" => false,
            Some(Value::String(s)) if s == "base64" => true,
            Some(_) => {
                return Err(unsupported(
                    "encoding_format",
                    "encoding_format must be float or base64",
                ));
            }
        };
        let texts = req.texts();
        if texts.len() > MAX_EMBEDDING_INPUTS {
            return Err(unsupported(
                "input",
                format!("bedrock embeddings take at most {MAX_EMBEDDING_INPUTS} inputs"),
            ));
        }
        let url = model_url(upstream_model, "invoke");
        let mut data = Vec::with_capacity(texts.len());
        let mut tokens: i64 = 0;
        for (i, text) in texts.iter().enumerate() {
            let mut body = json!({"inputText": text});
            if let Some(d) = req.rest.get("dimensions").filter(|d| !d.is_null()) {
                body["dimensions"] = d.clone();
            }
            let bytes = serde_json::to_vec(&body)
                .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
            let resp = self.post(&url, bytes, "application/json").await?;
            let raw = http::read_body(resp, self.limits.max_body, self.limits.idle).await?;
            let (vector, n) = from_titan(&raw)?;
            tokens += n;
            let embedding = if base64 {
                json!(f32_base64(&vector))
            } else {
                json!(vector)
            };
            data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
        }
        let usage = Usage {
            prompt_tokens: tokens,
            completion_tokens: 0,
            cached_tokens: 0,
        };
        let body = json!({
            "object": "list",
            "data": data,
            "model": upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        });
        Ok(EmbeddingsReply {
            body: body.to_string().into(),
            usage: Some(usage),
        })
    }

    /// Signs and sends `POST {base}/{path}` with a JSON body; non-2xx answers become
    /// [`UpstreamError::Status`] with Bedrock's message and `x-amzn-errortype` code.
    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        accept: &'static str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}/{path}", self.base);
        let signed = sign_request(
            "POST",
            &url,
            &[("content-type", "application/json"), ("accept", accept)],
            &body,
            &self.region,
            &self.credentials,
            SystemTime::now(),
        )?;
        let mut rb = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static(accept));
        for (name, value) in signed {
            rb = rb.header(name, value);
        }
        let rb = rb.body(body);
        let resp = match tokio::time::timeout(self.limits.first_byte, rb.send()).await {
            Err(_) => return Err(UpstreamError::Timeout("the first byte")),
            Ok(Err(e)) if e.is_timeout() => return Err(UpstreamError::Timeout("a connection")),
            Ok(Err(e)) => return Err(UpstreamError::Connect(http::describe(&e))),
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let header_code = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(error_type);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let raw = http::read_body(resp, http::MAX_ERROR_BODY, self.limits.idle)
            .await
            .unwrap_or_default();
        let (message, body_code) = parse_error(&raw);
        let mut message = http::scrub(
            message,
            Some(self.credentials.secret_access_key.expose_secret()),
        );
        if let Some(token) = &self.credentials.session_token {
            message = http::scrub(message, Some(token.expose_secret()));
        }
        Err(UpstreamError::Status {
            status,
            message,
            code: header_code.or(body_code),
            retry_after,
        })
    }
}

fn unsupported(param: &'static str, message: impl Into<String>) -> UpstreamError {
    UpstreamError::Unsupported {
        param,
        message: message.into(),
    }
}

/// `model/{id}/{action}` with the model id percent-encoded as one path segment (ids
/// carry `:` and ARNs carry `/`).
pub fn model_url(model: &str, action: &str) -> String {
    let mut id = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    format!("model/{id}/{action}")
}

/// SigV4 headers (`authorization`, `x-amz-date`, and `x-amz-security-token` for temporary
/// credentials) for a request with these headers and exactly this body. The values that
/// carry secrets or signatures are marked sensitive so they never appear in logs.
pub fn sign_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    region: &str,
    credentials: &AwsCredentials,
    time: SystemTime,
) -> Result<Vec<(&'static str, HeaderValue)>, UpstreamError> {
    let identity: Identity = Credentials::new(
        credentials.access_key_id.expose_secret(),
        credentials.secret_access_key.expose_secret(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        None,
        "gateway-config",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| UpstreamError::Protocol(format!("cannot sign the request: {e}")))?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| UpstreamError::Protocol(format!("cannot sign the request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| UpstreamError::Protocol(format!("cannot sign the request: {e}")))?
        .into_parts();
    let (signed, _query) = instructions.into_parts();
    signed
        .into_iter()
        .map(|h| {
            let mut v = HeaderValue::from_str(h.value()).map_err(|_| {
                UpstreamError::Protocol("the signature is not a valid header value".into())
            })?;
            v.set_sensitive(h.sensitive() || h.name() == "authorization");
            Ok((h.name(), v))
        })
        .collect()
}

/// `ValidationException:http://internal.amazon.com/…` → `ValidationException`.
fn error_type(v: &str) -> String {
    v.split(':').next().unwrap_or(v).trim().to_owned()
}

/// Bedrock's error body: `{"message": "..."}` (sometimes `Message`, sometimes `__type`).
pub fn parse_error(raw: &[u8]) -> (String, Option<String>) {
    let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let message = ["message", "Message"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or("upstream error")
        .to_owned();
    let code = v.get("__type").and_then(Value::as_str).map(error_type);
    (message, code)
}

/// OpenAI `messages` and parameters → a Converse request body (the model goes in the URL).
pub fn to_converse(req: &ChatRequest, params: Params) -> Result<Value, UpstreamError> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let (role, blocks) = match role {
            "system" | "developer" => {
                for b in content_blocks(m.get("content"))? {
                    if b.get("text").is_some() {
                        system.push(b);
                    } else {
                        return Err(unsupported(
                            "messages",
                            "system messages may only hold text on bedrock",
                        ));
                    }
                }
                continue;
            }
            "user" => ("user", content_blocks(m.get("content"))?),
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
                    b.push(json!({"toolUse": {"toolUseId": call["id"], "name": f["name"], "input": input}}));
                }
                ("assistant", b)
            }
            "tool" => {
                let content = match m.get("content") {
                    Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                        Ok(v @ Value::Object(_)) => vec![json!({"json": v})],
                        _ => vec![json!({"text": s})],
                    },
                    Some(Value::Array(parts)) => {
                        content_blocks(Some(&Value::Array(parts.clone())))?
                    }
                    _ => vec![json!({"text": ""})],
                };
                let id = m.get("tool_call_id").cloned().unwrap_or(Value::Null);
                (
                    "user",
                    vec![
                        json!({"toolResult": {"toolUseId": id, "content": content, "status": "success"}}),
                    ],
                )
            }
            other => {
                return Err(unsupported(
                    "messages",
                    format!("message role {other:?} is not supported by bedrock"),
                ));
            }
        };
        super::push_turn(&mut turns, role, blocks);
    }
    let mut out = Map::new();
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
    let mut inference = Map::new();
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.rest.get(*k).and_then(Value::as_u64))
        .or(params.default_max_tokens.map(u64::from));
    if let Some(n) = max_tokens {
        inference.insert("maxTokens".into(), json!(n));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = req.rest.get(from).filter(|v| !v.is_null()) {
            inference.insert(to.into(), v.clone());
        }
    }
    match req.rest.get("stop") {
        Some(Value::String(s)) => {
            inference.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            inference.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(n) = req.rest.get("n").and_then(Value::as_u64)
        && n != 1
        && !params.drop_unsupported
    {
        return Err(unsupported("n", "bedrock returns one choice; n must be 1"));
    }
    if let Some(tools) = req.rest.get("tools").and_then(Value::as_array) {
        let mapped: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut spec = json!({
                    "name": f["name"],
                    "inputSchema": {"json": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}))},
                });
                if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
                    spec["description"] = d.clone();
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": mapped});
        match req.rest.get("tool_choice") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" => {}
            Some(Value::String(s)) if s == "auto" => config["toolChoice"] = json!({"auto": {}}),
            Some(Value::String(s)) if s == "required" => {
                config["toolChoice"] = json!({"any": {}});
            }
            Some(Value::Object(o)) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .cloned()
                    .unwrap_or(Value::Null);
                config["toolChoice"] = json!({"tool": {"name": name}});
            }
            Some(_) => {
                return Err(unsupported(
                    "tool_choice",
                    "tool_choice must be auto, required, none or a function",
                ));
            }
        }
        if !mapped_is_empty(&config) {
            out.insert("toolConfig".into(), config);
        }
    }
    Ok(Value::Object(out))
}

fn mapped_is_empty(config: &Value) -> bool {
    config["tools"].as_array().is_none_or(Vec::is_empty)
}

/// OpenAI message content (a string or parts) → Converse content blocks.
fn content_blocks(content: Option<&Value>) -> Result<Vec<Value>, UpstreamError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"text": p["text"]})),
                Some("image_url") => image_block(p["image_url"]["url"].as_str().unwrap_or("")),
                other => Err(unsupported(
                    "messages",
                    format!("content part {other:?} is not supported by bedrock"),
                )),
            })
            .collect(),
        Some(_) => Err(unsupported(
            "messages",
            "message content must be a string or an array of parts",
        )),
    }
}

/// A base64 `data:` URL → a Converse image block; Converse cannot fetch URLs.
pub fn image_block(url: &str) -> Result<Value, UpstreamError> {
    let super::ImageUrl::Inline { media_type, data } = super::image_url(url)? else {
        return Err(unsupported(
            "messages",
            "bedrock takes images as base64 data: URLs only, not http(s) URLs",
        ));
    };
    let format = match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(unsupported(
                "messages",
                format!("image type {other:?} is not supported by bedrock (png, jpeg, gif, webp)"),
            ));
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// Converse `stopReason` → OpenAI `finish_reason`.
pub fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
    #[serde(default)]
    cache_read_input_tokens: Option<i64>,
    #[serde(default)]
    cache_write_input_tokens: Option<i64>,
}

impl WireUsage {
    /// OpenAI counts every prompt token in `prompt_tokens`; Bedrock splits out cache reads
    /// and writes, so they are added back, with cache reads as `cached_tokens`.
    fn to_usage(self) -> Usage {
        Usage::with_cache_split(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens.unwrap_or(0),
            self.cache_write_input_tokens.unwrap_or(0),
        )
    }
}

/// A Converse response → OpenAI `chat.completion`.
fn from_converse(raw: &[u8], model: &str) -> Result<(Value, Usage), UpstreamError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Response {
        output: Output,
        stop_reason: Option<String>,
        #[serde(default)]
        usage: WireUsage,
    }
    #[derive(Deserialize)]
    struct Output {
        message: Option<OutMessage>,
    }
    #[derive(Deserialize)]
    struct OutMessage {
        #[serde(default)]
        content: Vec<Value>,
    }
    let r: Response = serde_json::from_slice(raw)
        .map_err(|e| UpstreamError::Protocol(format!("unexpected bedrock response: {e}")))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in r.output.message.iter().flat_map(|m| &m.content) {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(u) = block.get("toolUse") {
            calls.push(ToolCall {
                id: u["toolUseId"].as_str().unwrap_or("").to_owned(),
                name: u["name"].as_str().unwrap_or("").to_owned(),
                arguments: u
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            });
        }
    }
    let finish = finish_reason(r.stop_reason.as_deref());
    if finish == "content_filter" && text.is_empty() && calls.is_empty() {
        return Err(UpstreamError::ContentPolicy(format!(
            "bedrock stopped the answer ({})",
            r.stop_reason.as_deref().unwrap_or("content_filtered")
        )));
    }
    let usage = r.usage.to_usage();
    let content = if text.is_empty() && !calls.is_empty() {
        None
    } else {
        Some(text.as_str())
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let body = shape::completion(&id, model, content, &calls, finish, usage);
    Ok((body, usage))
}

/// A Titan embeddings answer: the vector and the input's token count.
fn from_titan(raw: &[u8]) -> Result<(Vec<f64>, i64), UpstreamError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Titan {
        embedding: Vec<f64>,
        #[serde(default)]
        input_text_token_count: i64,
    }
    let t: Titan = serde_json::from_slice(raw).map_err(|e| {
        UpstreamError::Protocol(format!("unexpected bedrock embeddings response: {e}"))
    })?;
    Ok((t.embedding, t.input_text_token_count.max(0)))
}

/// OpenAI's `base64` embedding encoding: little-endian f32s.
fn f32_base64(v: &[f64]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&(*x as f32).to_le_bytes());
    }
    aws_smithy_types::base64::encode(bytes)
}

fn header_str<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

/// One decoded event-stream message → the envelope the translator reads:
/// `{"event": type, "body": payload}` or `{"exception": type, "body": payload}`.
fn envelope(m: &Message) -> Result<String, UpstreamError> {
    let payload = || -> Result<Value, UpstreamError> {
        if m.payload().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(m.payload())
            .map_err(|e| UpstreamError::Protocol(format!("bad bedrock event payload: {e}")))
    };
    let v = match header_str(m, ":message-type") {
        Some("event") => json!({
            "event": header_str(m, ":event-type").unwrap_or(""),
            "body": payload()?,
        }),
        Some("exception") => {
            let body = payload().unwrap_or_else(
                |_| json!({"message": String::from_utf8_lossy(m.payload()).into_owned()}),
            );
            json!({"exception": header_str(m, ":exception-type").unwrap_or("internalServerException"), "body": body})
        }
        Some("error") => json!({
            "exception": header_str(m, ":error-code").unwrap_or("internalServerException"),
            "body": {"message": header_str(m, ":error-message").unwrap_or("upstream error")},
        }),
        other => {
            return Err(UpstreamError::Protocol(format!(
                "unexpected event-stream message type {other:?}"
            )));
        }
    };
    Ok(v.to_string())
}

/// Event-stream frames of a byte stream, decoded as the bytes arrive (never more than one
/// frame buffered), as translator envelopes.
pub fn frames(
    bytes: BoxStream<'static, Result<Bytes, UpstreamError>>,
) -> BoxStream<'static, Result<String, UpstreamError>> {
    struct State {
        bytes: BoxStream<'static, Result<Bytes, UpstreamError>>,
        buf: BytesMut,
        decoder: MessageFrameDecoder,
        done: bool,
    }
    let state = State {
        bytes,
        buf: BytesMut::new(),
        decoder: MessageFrameDecoder::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.decoder.decode_frame(&mut st.buf) {
                Ok(DecodedFrame::Complete(m)) => {
                    let out = envelope(&m);
                    st.done = out.is_err();
                    return Some((out, st));
                }
                Ok(DecodedFrame::Incomplete) => {}
                Err(e) => {
                    st.done = true;
                    return Some((
                        Err(UpstreamError::Protocol(format!(
                            "bad event-stream frame: {e}"
                        ))),
                        st,
                    ));
                }
            }
            if st.buf.len() > MAX_BUFFERED_FRAME {
                st.done = true;
                return Some((
                    Err(UpstreamError::Protocol(
                        "event-stream frame too large".into(),
                    )),
                    st,
                ));
            }
            match st.bytes.next().await {
                Some(Ok(chunk)) => st.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    if !st.buf.is_empty() {
                        return Some((
                            Err(UpstreamError::Protocol(
                                "the event stream ended inside a frame".into(),
                            )),
                            st,
                        ));
                    }
                }
            }
        }
    })
    .boxed()
}

/// A Bedrock stream exception type → an HTTP status for the gateway's error handling.
pub fn exception_status(kind: &str) -> u16 {
    match kind {
        "throttlingException" | "ThrottlingException" => 429,
        "validationException" | "ValidationException" => 400,
        "serviceUnavailableException"
        | "ServiceUnavailableException"
        | "modelNotReadyException"
        | "ModelNotReadyException" => 503,
        _ => 500,
    }
}

/// Converse stream events → OpenAI chunks.
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
            .map_err(|e| UpstreamError::Protocol(format!("bad bedrock event: {e}")))?;
        let body = &ev["body"];
        if let Some(kind) = ev.get("exception").and_then(Value::as_str) {
            return Err(UpstreamError::Status {
                status: exception_status(kind),
                message: body["message"]
                    .as_str()
                    .or_else(|| body["Message"].as_str())
                    .unwrap_or("upstream error")
                    .to_owned(),
                code: Some(kind.to_owned()),
                retry_after: None,
            });
        }
        let c = &self.chunks;
        let index = body["contentBlockIndex"].as_u64().unwrap_or(0);
        Ok(match ev["event"].as_str() {
            Some("messageStart") => vec![c.role()],
            Some("contentBlockStart") => match body["start"].get("toolUse") {
                Some(t) => {
                    let i = self.tools.start(index);
                    vec![c.tool_start(
                        i,
                        t["toolUseId"].as_str().unwrap_or(""),
                        t["name"].as_str().unwrap_or(""),
                    )]
                }
                None => vec![],
            },
            Some("contentBlockDelta") => {
                let d = &body["delta"];
                if let Some(t) = d.get("text").and_then(Value::as_str) {
                    if t.is_empty() {
                        vec![]
                    } else {
                        vec![c.text(t)]
                    }
                } else if let Some(input) = d["toolUse"].get("input").and_then(Value::as_str) {
                    let i = self.tools.of(index);
                    vec![c.tool_arguments(i, input)]
                } else {
                    vec![]
                }
            }
            Some("messageStop") => vec![c.finish(finish_reason(body["stopReason"].as_str()))],
            Some("metadata") => {
                if let Ok(u) = serde_json::from_value::<WireUsage>(body["usage"].clone()) {
                    self.usage = u;
                }
                self.finished = true;
                vec![c.usage(self.usage.to_usage()), shape::DONE.to_owned()]
            }
            _ => vec![],
        })
    }

    fn end(&mut self) -> Vec<String> {
        // A stream cut before `metadata` still reports what was counted (nothing, here),
        // and ends without `[DONE]` so the client sees it was cut.
        if self.finished {
            vec![]
        } else {
            vec![self.chunks.usage(self.usage.to_usage())]
        }
    }
}

/// Encodes one event-stream message (for the mock upstream and tests).
pub fn encode_frame(headers: &[(&'static str, &'static str)], payload: &[u8]) -> Bytes {
    use aws_smithy_types::event_stream::{Header, HeaderValue as EsValue};
    let m = Message::new_from_parts(
        headers
            .iter()
            .map(|(k, v)| Header::new(*k, EsValue::String((*v).into())))
            .collect(),
        Bytes::copy_from_slice(payload),
    );
    let mut out = Vec::new();
    // Writing to a Vec only fails for over-long headers or payloads, which callers never build.
    let _ = aws_smithy_eventstream::frame::write_message_to(&m, &mut out);
    Bytes::from(out)
}

/// An event frame as Bedrock sends it.
pub fn event_frame(event_type: &'static str, payload: &Value) -> Bytes {
    encode_frame(
        &[
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", "application/json"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// An exception frame as Bedrock sends it.
pub fn exception_frame(exception_type: &'static str, message: &str) -> Bytes {
    encode_frame(
        &[
            (":message-type", "exception"),
            (":exception-type", exception_type),
            (":content-type", "application/json"),
        ],
        json!({"message": message}).to_string().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    fn creds(session: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: SecretString::from("AKIDEXAMPLE"),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: session.map(SecretString::from),
        }
    }

    #[test]
    fn request_translation_field_by_field() {
        let r = req(json!({
            "model": "claude", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": "END",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [{"type": "text", "text": "What is in"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
                {"role": "user", "content": "this picture?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "tool", "tool_call_id": "call_2", "content": "{\"animal\":\"cat\"}"},
                {"role": "user", "content": "and?"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}}
        }));
        let out = to_converse(&r, Params::default()).unwrap();
        assert!(out.get("model").is_none(), "the model goes in the URL");
        assert_eq!(
            out["system"],
            json!([{"text": "Be brief."}, {"text": "Use tools."}])
        );
        assert_eq!(
            out["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]})
        );
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "same-role turns merge: {msgs:?}");
        assert_eq!(msgs[0]["role"], "user");
        assert_eq!(
            msgs[0]["content"],
            json!([
                {"text": "What is in"},
                {"image": {"format": "jpeg", "source": {"bytes": "AAAA"}}},
                {"text": "this picture?"}
            ])
        );
        assert_eq!(msgs[1]["role"], "assistant");
        assert_eq!(
            msgs[1]["content"],
            json!([{"toolUse": {"toolUseId": "call_1", "name": "look", "input": {"q": 1}}}])
        );
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(
            msgs[2]["content"],
            json!([
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "a cat"}], "status": "success"}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"json": {"animal": "cat"}}], "status": "success"}},
                {"text": "and?"}
            ])
        );
        assert_eq!(
            out["toolConfig"],
            json!({
                "tools": [{"toolSpec": {"name": "look", "description": "Looks", "inputSchema": {"json": {"type": "object"}}}}],
                "toolChoice": {"tool": {"name": "look"}}
            })
        );
    }

    #[test]
    fn tool_choice_variants_and_defaults() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, want) in [
            (json!("auto"), Some(json!({"auto": {}}))),
            (json!("required"), Some(json!({"any": {}}))),
            (json!("none"), None),
        ] {
            let r = req(
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "tools": tools, "tool_choice": choice}),
            );
            let out = to_converse(&r, Params::default()).unwrap();
            assert_eq!(out["toolConfig"].get("toolChoice").cloned(), want);
            assert_eq!(
                out["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"],
                json!({"json": {"type": "object"}})
            );
        }
        let r = req(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let out = to_converse(&r, Params::default()).unwrap();
        assert!(out.get("inferenceConfig").is_none());
        assert!(out.get("toolConfig").is_none());
        let out = to_converse(
            &r,
            Params {
                drop_unsupported: false,
                default_max_tokens: Some(7),
            },
        )
        .unwrap();
        assert_eq!(out["inferenceConfig"]["maxTokens"], 7);
    }

    #[test]
    fn unsupported_inputs_are_refused() {
        let r = req(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
        );
        assert!(matches!(
            to_converse(&r, Params::default()),
            Err(UpstreamError::Unsupported {
                param: "messages",
                ..
            })
        ));
        let r = req(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}),
        );
        let err = Params::default().check(&r, "bedrock", KNOWN).unwrap_err();
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
            default_max_tokens: None,
        };
        assert!(lenient.check(&r, "bedrock", KNOWN).is_ok());
        let r = req(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}));
        assert!(to_converse(&r, Params::default()).is_err());
        assert!(image_block("data:image/tiff;base64,AAAA").is_err());
        assert_eq!(
            image_block("data:image/webp;base64,QQ==").unwrap()["image"]["format"],
            "webp"
        );
    }

    #[test]
    fn model_ids_are_one_path_segment() {
        assert_eq!(
            model_url("anthropic.claude-3-5-sonnet-20240620-v1:0", "converse"),
            "model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(
            model_url("arn:aws:bedrock:us-east-1:1:inference-profile/x", "invoke"),
            "model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/invoke"
        );
    }

    #[test]
    fn response_translation_with_tools_and_cache_usage() {
        let raw = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": "Let me look."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "look", "input": {"q": 1}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "cacheReadInputTokens": 20, "cacheWriteInputTokens": 3},
            "metrics": {"latencyMs": 100}
        });
        let (body, usage) = from_converse(raw.to_string().as_bytes(), "claude-x").unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 33,
                completion_tokens: 5,
                cached_tokens: 20
            }
        );
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(body["choices"][0]["message"]["content"], "Let me look.");
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"][0],
            json!({"id": "tooluse_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}})
        );
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 20);
        assert_eq!(body["usage"]["total_tokens"], 38);
    }

    #[test]
    fn stop_reasons_and_content_policy() {
        for (stop, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(stop)), want);
        }
        let blocked = json!({"output": {"message": {"role": "assistant", "content": []}},
            "stopReason": "guardrail_intervened", "usage": {"inputTokens": 3, "outputTokens": 0}});
        assert!(matches!(
            from_converse(blocked.to_string().as_bytes(), "m"),
            Err(UpstreamError::ContentPolicy(_))
        ));
        let masked = json!({"output": {"message": {"role": "assistant", "content": [{"text": "Sorry."}]}},
            "stopReason": "guardrail_intervened", "usage": {"inputTokens": 3, "outputTokens": 1}});
        let (body, _) = from_converse(masked.to_string().as_bytes(), "m").unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    }

    #[test]
    fn error_bodies_and_titan_answers() {
        assert_eq!(
            parse_error(br#"{"message":"Malformed input request"}"#),
            ("Malformed input request".to_owned(), None)
        );
        assert_eq!(
            error_type("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            "ValidationException"
        );
        assert_eq!(parse_error(b"<html>").0, "upstream error");
        let (v, n) = from_titan(br#"{"embedding":[0.5,-1.0],"inputTextTokenCount":4}"#).unwrap();
        assert_eq!((v, n), (vec![0.5, -1.0], 4));
        assert_eq!(f32_base64(&[1.0]), "AACAPw==");
    }

    async fn collect(chunks: Vec<Bytes>) -> Vec<Result<String, UpstreamError>> {
        frames(futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed())
            .collect()
            .await
    }

    #[tokio::test]
    async fn stream_translation_from_encoded_frames() {
        let mut wire = Vec::new();
        for (t, p) in [
            ("messageStart", json!({"role": "assistant"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_9", "name": "f"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 1})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19}, "metrics": {"latencyMs": 5}}),
            ),
        ] {
            wire.extend_from_slice(&event_frame(t, &p));
        }
        // Split the bytes at awkward places: frames must decode across chunk boundaries.
        let chunks: Vec<Bytes> = wire.chunks(7).map(Bytes::copy_from_slice).collect();
        let envelopes = collect(chunks).await;
        assert_eq!(envelopes.len(), 8);
        let mut st = StreamState::new("claude-x");
        let mut out = Vec::new();
        for e in envelopes {
            out.extend(st.event(&e.unwrap()).unwrap());
        }
        out.extend(st.end());
        let v: Vec<Value> = out
            .iter()
            .filter(|s| *s != "[DONE]")
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(v[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            v[2]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "tooluse_9", "type": "function", "function": {"name": "f", "arguments": ""}})
        );
        assert_eq!(
            v[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        assert_eq!(v[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v[5]["usage"]["prompt_tokens"], 12);
        assert_eq!(v[5]["usage"]["completion_tokens"], 7);
        assert_eq!(v.len(), 6);
        assert_eq!(out.last().unwrap(), "[DONE]");
    }

    #[tokio::test]
    async fn exception_frames_become_statuses() {
        let mut wire = event_frame("messageStart", &json!({"role": "assistant"})).to_vec();
        wire.extend_from_slice(&exception_frame("throttlingException", "Too many requests"));
        let envelopes = collect(vec![Bytes::from(wire)]).await;
        let mut st = StreamState::new("m");
        assert_eq!(st.event(envelopes[0].as_ref().unwrap()).unwrap().len(), 1);
        let err = st.event(envelopes[1].as_ref().unwrap()).unwrap_err();
        match err {
            UpstreamError::Status {
                status,
                message,
                code,
                ..
            } => {
                assert_eq!(status, 429);
                assert_eq!(message, "Too many requests");
                assert_eq!(code.as_deref(), Some("throttlingException"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(exception_status("validationException"), 400);
        assert_eq!(exception_status("serviceUnavailableException"), 503);
        assert_eq!(exception_status("internalServerException"), 500);
        // A cut stream reports usage without `[DONE]`.
        let tail = st.end();
        assert_eq!(tail.len(), 1);
        assert!(tail[0].contains("\"usage\""));
    }

    #[tokio::test]
    async fn truncated_and_corrupt_frames_are_protocol_errors() {
        let frame = event_frame("messageStart", &json!({"role": "assistant"}));
        let cut = collect(vec![frame.slice(..frame.len() - 3)]).await;
        assert!(matches!(cut.last(), Some(Err(UpstreamError::Protocol(_)))));
        let mut bad = frame.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 0xff; // the message CRC
        let corrupt = collect(vec![Bytes::from(bad)]).await;
        assert!(matches!(
            corrupt.first(),
            Some(Err(UpstreamError::Protocol(_)))
        ));
    }

    #[test]
    fn signing_produces_the_bedrock_scope() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_704_164_645); // 2024-01-02T03:04:05Z
        let url = "https://bedrock-runtime.eu-west-3.amazonaws.com/model/m%3A0/converse";
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ];
        let signed = sign_request(
            "POST",
            url,
            &headers,
            b"{}",
            "eu-west-3",
            &creds(None),
            time,
        )
        .unwrap();
        let get = |n: &str| {
            signed
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/eu-west-3/bedrock/aws4_request, SignedHeaders=accept;content-type;host;x-amz-date, Signature="
            ),
            "{auth}"
        );
        assert!(!auth.contains("EXAMPLEKEY"));
        assert_eq!(get("x-amz-date").as_deref(), Some("20240102T030405Z"));
        assert!(get("x-amz-security-token").is_none());
        assert!(
            signed
                .iter()
                .find(|(k, _)| *k == "authorization")
                .unwrap()
                .1
                .is_sensitive()
        );
        // The signature covers the body.
        let other = sign_request(
            "POST",
            url,
            &headers,
            b"{ }",
            "eu-west-3",
            &creds(None),
            time,
        )
        .unwrap();
        let auth_of = |h: &[(&'static str, HeaderValue)]| {
            h.iter()
                .find(|(k, _)| *k == "authorization")
                .map(|(_, v)| v.clone())
        };
        assert_ne!(auth_of(&signed), auth_of(&other));
        // Temporary credentials add their token.
        let with_token = sign_request(
            "POST",
            url,
            &headers,
            b"{}",
            "eu-west-3",
            &creds(Some("TOKEN")),
            time,
        )
        .unwrap();
        assert!(
            with_token
                .iter()
                .any(|(k, v)| *k == "x-amz-security-token" && v.to_str().unwrap() == "TOKEN")
        );
    }
}
