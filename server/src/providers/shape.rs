//! OpenAI's response shapes, built by providers that translate from another format (and
//! by the mock): the `chat.completion` body and the `chat.completion.chunk` events.

use serde_json::{Value, json};

use crate::meter::Usage;

pub fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A tool call the model made: id, function name, JSON arguments as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A whole `chat.completion` with one choice.
pub fn completion(
    id: &str,
    model: &str,
    text: Option<&str>,
    tool_calls: &[ToolCall],
    finish_reason: &str,
    usage: Usage,
) -> Value {
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = tool_calls
            .iter()
            .map(|t| json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}))
            .collect();
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage_json(usage),
    })
}

/// Writes the `chat.completion.chunk` events of one streamed completion.
pub struct Chunks {
    id: String,
    model: String,
    created: u64,
}

impl Chunks {
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Chunks {
            id: id.into(),
            model: model.into(),
            created: now_secs(),
        }
    }

    fn choice(&self, delta: Value, finish: Value) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
        .to_string()
    }

    pub fn role(&self) -> String {
        self.choice(json!({"role": "assistant", "content": ""}), Value::Null)
    }

    pub fn text(&self, text: &str) -> String {
        self.choice(json!({"content": text}), Value::Null)
    }

    /// The first chunk of a tool call (`index` counts tool calls from 0).
    pub fn tool_start(&self, index: usize, id: &str, name: &str) -> String {
        self.choice(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        )
    }

    pub fn tool_arguments(&self, index: usize, fragment: &str) -> String {
        self.choice(
            json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
            Value::Null,
        )
    }

    pub fn finish(&self, reason: &str) -> String {
        self.choice(json!({}), json!(reason))
    }

    /// The usage-only chunk (no choices), as OpenAI sends it with `include_usage`.
    pub fn usage(&self, u: Usage) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(u),
        })
        .to_string()
    }
}

pub const DONE: &str = "[DONE]";

/// Numbers the tool calls of a stream whose upstream numbers content blocks instead
/// (Anthropic, Bedrock): a tool block's index → OpenAI's tool-call index, from 0.
#[derive(Debug, Default)]
pub struct ToolIndex {
    by_block: std::collections::HashMap<u64, usize>,
}

impl ToolIndex {
    /// A tool call starts in content block `block`; returns its OpenAI index.
    pub fn start(&mut self, block: u64) -> usize {
        let i = self.by_block.len();
        self.by_block.insert(block, i);
        i
    }

    /// The OpenAI index of the tool call in content block `block`.
    pub fn of(&self, block: u64) -> usize {
        self.by_block.get(&block).copied().unwrap_or(0)
    }
}
