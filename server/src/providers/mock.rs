//! The `mock` provider: answers locally in OpenAI's shapes, for the demo and for tests.
//! Its reply and token counts are deterministic functions of the request, so tests can
//! check metering exactly. The project's mock upstream server builds its bodies with the
//! same functions.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{ChatReply, EmbeddingsReply, shape};
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest};
use crate::meter::Usage;

pub struct Mock;

impl Mock {
    pub fn chat(&self, req: &ChatRequest, model: &str) -> ChatReply {
        let (words, usage) = reply_for(req);
        let id = format!("chatcmpl-mock-{}", uuid::Uuid::new_v4().simple());
        if req.wants_stream() {
            let events = stream_events(&id, model, &words, usage);
            ChatReply::Stream(Box::pin(futures_util::stream::iter(
                events.into_iter().map(Ok),
            )))
        } else {
            let body = completion_body(&id, model, &words.join(" "), usage);
            ChatReply::Complete {
                body: Bytes::from(body.to_string()),
                usage: Some(usage),
            }
        }
    }

    pub fn embeddings(&self, req: &EmbeddingsRequest, model: &str) -> EmbeddingsReply {
        let (body, usage) = embeddings_body(&req.texts(), model);
        EmbeddingsReply {
            body: Bytes::from(body.to_string()),
            usage: Some(usage),
        }
    }
}

fn count_words(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.split_whitespace().count() as i64,
        Some(Value::Array(parts)) => parts.iter().map(|p| count_words(p.get("text"))).sum(),
        _ => 0,
    }
}

fn last_user_text(req: &ChatRequest) -> String {
    let msg = req
        .messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    match msg.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The mock's answer: "Mock reply:" and the last user message's first words, cut to
/// `max_tokens` words; one word is one token, and each message costs 3 tokens more.
pub fn reply_for(req: &ChatRequest) -> (Vec<String>, Usage) {
    let prompt_tokens: i64 = req
        .messages
        .iter()
        .map(|m| count_words(m.get("content")) + 3)
        .sum();
    let mut words: Vec<String> = ["Mock", "reply:"].iter().map(|s| (*s).to_owned()).collect();
    words.extend(
        last_user_text(req)
            .split_whitespace()
            .take(48)
            .map(str::to_owned),
    );
    let limit = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.rest.get(*k).and_then(Value::as_u64))
        .unwrap_or(u64::MAX);
    words.truncate(usize::try_from(limit.max(1)).unwrap_or(usize::MAX));
    let usage = Usage {
        prompt_tokens,
        completion_tokens: words.len() as i64,
        cached_tokens: 0,
    };
    (words, usage)
}

pub fn completion_body(id: &str, model: &str, text: &str, usage: Usage) -> Value {
    shape::completion(id, model, Some(text), &[], "stop", usage)
}

/// The SSE payloads of a streamed completion: a role chunk, one chunk per word, the finish
/// chunk, the usage chunk (always; the gateway strips it unless the client asked), `[DONE]`.
pub fn stream_events(id: &str, model: &str, words: &[String], usage: Usage) -> Vec<String> {
    let c = shape::Chunks::new(id, model);
    let mut out = Vec::with_capacity(words.len() + 4);
    out.push(c.role());
    for (i, w) in words.iter().enumerate() {
        out.push(if i == 0 {
            c.text(w)
        } else {
            c.text(&format!(" {w}"))
        });
    }
    out.push(c.finish("stop"));
    out.push(c.usage(usage));
    out.push(shape::DONE.to_owned());
    out
}

/// Deterministic 8-dimension vectors; one token per word of input.
pub fn embeddings_body(texts: &[String], model: &str) -> (Value, Usage) {
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
            for b in t.bytes() {
                seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            let v: Vec<f64> = (0..8)
                .map(|k| {
                    let x = seed.rotate_left(k * 8) & 0xffff;
                    (x as f64 / 65535.0) * 2.0 - 1.0
                })
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let tokens: i64 = texts
        .iter()
        .map(|t| t.split_whitespace().count().max(1) as i64)
        .sum();
    let usage = Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
        cached_tokens: 0,
    };
    let body = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    (body, usage)
}
