//! The `openai`, `openai-compatible` (vLLM, Ollama and the like; key optional) and `azure`
//! providers: the request goes out in OpenAI's own shape, so translation is only the
//! model name and forcing usage on streams. Azure differs in the URL (deployment and
//! `api-version`) and the `api-key` header.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::http::{self, is_event_stream};
use super::{CallLimits, ChatReply, EmbeddingsReply, UpstreamError};
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest, OutboundChat, OutboundEmbeddings};
use crate::meter::{Usage, WireUsage};

/// Azure's GA data-plane API version, used when the config names none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

pub enum Flavor {
    /// `{base}/chat/completions`, `Authorization: Bearer` (optional key).
    OpenAi,
    /// `{base}/openai/deployments/{upstream_model}/chat/completions?api-version=…`, `api-key`.
    Azure { api_version: String },
}

pub struct OpenAi {
    base: String,
    api_key: Option<SecretString>,
    flavor: Flavor,
    http: reqwest::Client,
    limits: CallLimits,
}

#[derive(Deserialize)]
struct UsageOnly {
    usage: Option<WireUsage>,
}

impl OpenAi {
    pub fn new(
        base_url: &str,
        api_key: Option<SecretString>,
        flavor: Flavor,
        http: reqwest::Client,
        limits: CallLimits,
    ) -> Self {
        OpenAi {
            base: base_url.trim_end_matches('/').to_owned(),
            api_key,
            flavor,
            http,
            limits,
        }
    }

    fn url(&self, upstream_model: &str, op: &str) -> String {
        match &self.flavor {
            Flavor::OpenAi => format!("{}/{op}", self.base),
            Flavor::Azure { api_version } => format!(
                "{}/openai/deployments/{}/{op}?api-version={}",
                self.base,
                url_segment(upstream_model),
                url_segment(api_version)
            ),
        }
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        upstream_model: &str,
    ) -> Result<ChatReply, UpstreamError> {
        let body = serde_json::to_vec(&OutboundChat::new(req, upstream_model))
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let resp = self
            .post(&self.url(upstream_model, "chat/completions"), body)
            .await?;
        if req.wants_stream() {
            if !is_event_stream(&resp, "text/event-stream") {
                return Err(UpstreamError::Protocol("expected an event stream".into()));
            }
            return Ok(ChatReply::Stream(http::sse_data(resp, self.limits.idle)));
        }
        let body = http::read_body(resp, self.limits.max_body, self.limits.idle).await?;
        Ok(ChatReply::Complete {
            usage: usage_of(&body),
            body,
        })
    }

    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        upstream_model: &str,
    ) -> Result<EmbeddingsReply, UpstreamError> {
        let out = OutboundEmbeddings {
            model: upstream_model,
            input: &req.input,
            rest: &req.rest,
        };
        let body = serde_json::to_vec(&out)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let resp = self
            .post(&self.url(upstream_model, "embeddings"), body)
            .await?;
        let body = http::read_body(resp, self.limits.max_body, self.limits.idle).await?;
        Ok(EmbeddingsReply {
            usage: usage_of(&body),
            body,
        })
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<reqwest::Response, UpstreamError> {
        let mut rb = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(key) = &self.api_key {
            let (name, value) = match self.flavor {
                Flavor::OpenAi => (
                    AUTHORIZATION.as_str(),
                    format!("Bearer {}", key.expose_secret()),
                ),
                Flavor::Azure { .. } => ("api-key", key.expose_secret().to_owned()),
            };
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                UpstreamError::Protocol("api_key is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            rb = rb.header(name, v);
        }
        http::send(
            rb,
            &self.limits,
            parse_error,
            self.api_key.as_ref().map(|k| k.expose_secret()),
        )
        .await
    }
}

/// Percent-encodes a value placed in a URL path or query (config values, never client ones).
pub fn url_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn usage_of(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<UsageOnly>(body)
        .ok()
        .and_then(|u| u.usage)
        .map(Usage::from)
}

/// OpenAI's (and Azure's) error body: `{"error":{"message","code",…}}`.
pub fn parse_error(raw: &[u8]) -> (String, Option<String>) {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        code: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Outer>(raw) {
        Ok(o) => (
            o.error.message.unwrap_or_else(|| "upstream error".into()),
            o.error.code.and_then(|c| c.as_str().map(str::to_owned)),
        ),
        Err(_) => ("upstream error".into(), None),
    }
}
