//! OpenAI's chat completions and embeddings request shapes. Only the fields the gateway
//! acts on are typed; everything else is kept verbatim in `rest` and passed on, so new
//! OpenAI parameters work without a gateway release.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Fields a client may never set: they would choose upstream hosts or credentials.
const FORBIDDEN_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "custom_llm_provider",
    "extra_headers",
    "extra_query",
    "organization",
    "aws_access_key_id",
    "aws_secret_access_key",
];

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl ChatRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        validate_model(&self.model)?;
        if self.messages.is_empty() {
            return Err(ApiError::bad_param(
                "messages",
                "messages must be a non-empty array",
            ));
        }
        if let Some((i, _)) = self
            .messages
            .iter()
            .enumerate()
            .find(|(_, m)| !m.is_object())
        {
            return Err(ApiError::bad_param(
                "messages",
                format!("messages[{i}] must be an object"),
            ));
        }
        if self.stream_options.is_some() && !self.wants_stream() {
            return Err(ApiError::bad_param(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ));
        }
        reject_forbidden(&self.rest)
    }

    pub fn wants_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client itself asked for the usage chunk at the end of a stream.
    pub fn client_wants_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Characters of message text, for usage estimates when an upstream reports none.
    pub fn prompt_chars(&self) -> usize {
        self.messages
            .iter()
            .map(|m| text_chars(m.get("content")))
            .sum()
    }
}

fn text_chars(v: Option<&Value>) -> usize {
    match v {
        Some(Value::String(s)) => s.chars().count(),
        Some(Value::Array(parts)) => parts.iter().map(|p| text_chars(p.get("text"))).sum(),
        _ => 0,
    }
}

/// The chat request as sent upstream: the deployment's model, usage always requested for
/// streams, everything else as the client sent it (serialised from borrows, no copy).
#[derive(Serialize)]
pub struct OutboundChat<'a> {
    pub model: &'a str,
    pub messages: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub rest: &'a Map<String, Value>,
}

impl<'a> OutboundChat<'a> {
    pub fn new(req: &'a ChatRequest, upstream_model: &'a str) -> Self {
        let stream_options = req.wants_stream().then(|| {
            let mut o = req.stream_options.clone().unwrap_or_default();
            o.insert("include_usage".into(), Value::Bool(true));
            o
        });
        OutboundChat {
            model: upstream_model,
            messages: &req.messages,
            stream: req.stream,
            stream_options,
            rest: &req.rest,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl EmbeddingsRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        validate_model(&self.model)?;
        let ok = match &self.input {
            Value::String(s) => !s.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(ApiError::bad_param(
                "input",
                "input must be a non-empty string or array",
            ));
        }
        reject_forbidden(&self.rest)
    }

    /// The inputs as strings (token-id arrays count as their length in words).
    pub fn texts(&self) -> Vec<String> {
        match &self.input {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Serialize)]
pub struct OutboundEmbeddings<'a> {
    pub model: &'a str,
    pub input: &'a Value,
    #[serde(flatten)]
    pub rest: &'a Map<String, Value>,
}

fn validate_model(model: &str) -> Result<(), ApiError> {
    if model.is_empty() || model.len() > 256 {
        return Err(ApiError::bad_param(
            "model",
            "model must be a string of 1 to 256 characters",
        ));
    }
    Ok(())
}

fn reject_forbidden(rest: &Map<String, Value>) -> Result<(), ApiError> {
    match FORBIDDEN_FIELDS.iter().find(|f| rest.contains_key(**f)) {
        Some(f) => Err(ApiError::bad_param(
            f,
            format!("the field {f:?} cannot be set by clients"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn outbound_keeps_unknown_fields_and_forces_usage() {
        let req = chat(serde_json::json!({
            "model": "pub", "messages": [{"role": "user", "content": "hi"}],
            "stream": true, "temperature": 0.2, "tools": [{"type": "function"}],
            "stream_options": {"continuous_usage_stats": true}
        }));
        req.validate().unwrap();
        assert!(!req.client_wants_usage());
        let out: Value = serde_json::to_value(OutboundChat::new(&req, "up")).unwrap();
        assert_eq!(out["model"], "up");
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["tools"][0]["type"], "function");
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["stream_options"]["continuous_usage_stats"], true);
    }

    #[test]
    fn non_stream_sends_no_stream_options() {
        let req =
            chat(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        let out: Value = serde_json::to_value(OutboundChat::new(&req, "m")).unwrap();
        assert!(out.get("stream_options").is_none());
        assert!(out.get("stream").is_none());
    }

    #[test]
    fn refuses_upstream_choosing_fields_and_bad_shapes() {
        let bad = chat(
            serde_json::json!({"model": "m", "messages": [{"role":"user","content":"x"}], "api_base": "http://evil"}),
        );
        assert!(matches!(
            bad.validate(),
            Err(ApiError::BadRequest {
                param: Some("api_base"),
                ..
            })
        ));
        let empty = chat(serde_json::json!({"model": "m", "messages": []}));
        assert!(empty.validate().is_err());
        let not_obj = chat(serde_json::json!({"model": "m", "messages": ["x"]}));
        assert!(not_obj.validate().is_err());
        let opts = chat(
            serde_json::json!({"model": "m", "messages": [{"role":"user"}], "stream_options": {"include_usage": true}}),
        );
        assert!(opts.validate().is_err());
    }
}
