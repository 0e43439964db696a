//! Providers: one file each, dispatched through the [`Provider`] enum with `match`. A
//! provider takes a request in the gateway's canonical dialect (OpenAI's), calls its
//! upstream in the upstream's own wire format (or answers locally, for `mock`), and returns
//! the reply in OpenAI's shapes with the usage the upstream reported. Inbound dialects
//! other than OpenAI's translate at the edge (`dialect/`), never here.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod http;
pub mod mock;
pub mod openai;
pub mod shape;
pub mod sse;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use crate::config::{DeploymentConfig, ProviderKind};
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest};
use crate::error::ApiError;
use crate::meter::Usage;

/// A stream of SSE `data:` payloads in OpenAI's chunk format (the last one is `[DONE]`).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<String, UpstreamError>> + Send>>;

pub enum ChatReply {
    /// A whole `chat.completion` body in OpenAI's shape.
    Complete {
        body: Bytes,
        usage: Option<Usage>,
    },
    Stream(EventStream),
}

pub struct EmbeddingsReply {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// Why an upstream call failed. Carries nothing secret: never the key, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to the upstream: {0}")]
    Connect(String),
    #[error("upstream timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("upstream answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        code: Option<String>,
        retry_after: Option<u64>,
    },
    #[error("upstream broke the protocol: {0}")]
    Protocol(String),
    /// The request uses something this provider cannot do (and the deployment does not
    /// say to drop it): the client's request is at fault, not the upstream.
    #[error("{message}")]
    Unsupported {
        param: &'static str,
        message: String,
    },
    /// The provider refused the content on policy grounds (safety filters).
    #[error("the provider refused the content: {0}")]
    ContentPolicy(String),
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout(_) => ApiError::GatewayTimeout,
            UpstreamError::Status {
                status: 429,
                retry_after,
                ..
            } => ApiError::UpstreamRateLimited { retry_after },
            UpstreamError::Status {
                status: s @ (400 | 413 | 422),
                message,
                code,
                ..
            } => ApiError::UpstreamRejected {
                status: http_status(s),
                message,
                code,
            },
            UpstreamError::Unsupported { param, message } => ApiError::BadRequest {
                message,
                param: Some(param),
            },
            UpstreamError::ContentPolicy(message) => ApiError::UpstreamRejected {
                status: http_status(400),
                message,
                code: Some("content_policy_violation".into()),
            },
            UpstreamError::Status { .. }
            | UpstreamError::Connect(_)
            | UpstreamError::Protocol(_) => ApiError::BadGateway,
        }
    }
}

fn http_status(s: u16) -> ::http::StatusCode {
    ::http::StatusCode::from_u16(s).unwrap_or(::http::StatusCode::BAD_REQUEST)
}

/// Limits of one upstream call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub first_byte: Duration,
    pub idle: Duration,
    pub max_body: usize,
}

pub enum Provider {
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
    Bedrock(bedrock::Bedrock),
    Gemini(gemini::Gemini),
    Mock(mock::Mock),
}

impl Provider {
    pub fn from_config(d: &DeploymentConfig, http: &reqwest::Client, max_body: usize) -> Provider {
        let limits = CallLimits {
            first_byte: Duration::from_millis(d.first_byte_timeout_ms),
            idle: Duration::from_millis(d.idle_timeout_ms),
            max_body,
        };
        let base = d.base_url.as_ref().map_or("", |u| u.as_str());
        match d.provider {
            ProviderKind::Mock => Provider::Mock(mock::Mock),
            ProviderKind::Bedrock => {
                let secret = |s: &Option<secrecy::SecretString>| {
                    s.clone().unwrap_or_else(|| secrecy::SecretString::from(""))
                };
                Provider::Bedrock(bedrock::Bedrock::new(
                    base,
                    d.region.clone().unwrap_or_default(),
                    bedrock::AwsCredentials {
                        access_key_id: secret(&d.aws_access_key_id),
                        secret_access_key: secret(&d.aws_secret_access_key),
                        session_token: d.aws_session_token.clone(),
                    },
                    Params {
                        drop_unsupported: d.drop_unsupported_params,
                        default_max_tokens: d.default_max_tokens,
                    },
                    http.clone(),
                    limits,
                ))
            }
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
                Provider::OpenAi(openai::OpenAi::new(
                    base,
                    d.api_key.clone(),
                    openai::Flavor::OpenAi,
                    http.clone(),
                    limits,
                ))
            }
            ProviderKind::Azure => {
                let api_version = d
                    .api_version
                    .clone()
                    .unwrap_or_else(|| openai::AZURE_DEFAULT_API_VERSION.to_owned());
                Provider::OpenAi(openai::OpenAi::new(
                    base,
                    d.api_key.clone(),
                    openai::Flavor::Azure { api_version },
                    http.clone(),
                    limits,
                ))
            }
            ProviderKind::Anthropic => Provider::Anthropic(anthropic::Anthropic::new(
                base,
                d.api_key.clone(),
                Params {
                    drop_unsupported: d.drop_unsupported_params,
                    default_max_tokens: d.default_max_tokens,
                },
                http.clone(),
                limits,
            )),
            ProviderKind::Gemini => Provider::Gemini(gemini::Gemini::new(
                base,
                d.api_key.clone(),
                Params {
                    drop_unsupported: d.drop_unsupported_params,
                    default_max_tokens: d.default_max_tokens,
                },
                http.clone(),
                limits,
            )),
        }
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        upstream_model: &str,
    ) -> Result<ChatReply, UpstreamError> {
        match self {
            Provider::OpenAi(p) => p.chat(req, upstream_model).await,
            Provider::Anthropic(p) => p.chat(req, upstream_model).await,
            Provider::Bedrock(p) => p.chat(req, upstream_model).await,
            Provider::Gemini(p) => p.chat(req, upstream_model).await,
            Provider::Mock(p) => Ok(p.chat(req, upstream_model)),
        }
    }

    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        upstream_model: &str,
    ) -> Result<EmbeddingsReply, UpstreamError> {
        match self {
            Provider::OpenAi(p) => p.embeddings(req, upstream_model).await,
            Provider::Anthropic(_) => Err(UpstreamError::Unsupported {
                param: "model",
                message: "this model's provider (anthropic) offers no embeddings".into(),
            }),
            Provider::Gemini(p) => p.embeddings(req, upstream_model).await,
            Provider::Bedrock(p) => p.embeddings(req, upstream_model).await,
            Provider::Mock(p) => Ok(p.embeddings(req, upstream_model)),
        }
    }
}

/// An image given as a URL in an OpenAI message part.
pub enum ImageUrl<'a> {
    /// A base64 `data:` URL: its media type and data.
    Inline { media_type: &'a str, data: &'a str },
    /// An http(s) URL the provider may fetch.
    Remote(&'a str),
}

/// Splits an image URL the way every translating provider needs it.
pub fn image_url(url: &str) -> Result<ImageUrl<'_>, UpstreamError> {
    let bad = |m: &str| UpstreamError::Unsupported {
        param: "messages",
        message: m.to_owned(),
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("malformed data URL"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| bad("image data URLs must be base64"))?;
        Ok(ImageUrl::Inline { media_type, data })
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(ImageUrl::Remote(url))
    } else {
        Err(bad("image_url must be a data: or http(s) URL"))
    }
}

/// Adds a turn's content to a conversation for providers that need roles to alternate
/// (Anthropic, Gemini, Bedrock): content of the same role as the last turn joins it, and
/// empty content is skipped.
pub fn push_turn(
    turns: &mut Vec<(&'static str, Vec<serde_json::Value>)>,
    role: &'static str,
    content: Vec<serde_json::Value>,
) {
    if content.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((r, c)) if *r == role => c.extend(content),
        _ => turns.push((role, content)),
    }
}

/// How a translating provider treats request parameters it cannot express.
#[derive(Debug, Clone, Copy, Default)]
pub struct Params {
    /// Drop them silently (config `drop_unsupported_params`) instead of answering 400.
    pub drop_unsupported: bool,
    /// `max_tokens` sent when the client gave none and the upstream needs one.
    pub default_max_tokens: Option<u32>,
}

impl Params {
    /// Refuses (or, when configured, lets pass) the request's parameters outside `known`:
    /// fields the translation reads or can safely ignore.
    pub fn check(
        &self,
        req: &ChatRequest,
        provider: &str,
        known: &[&str],
    ) -> Result<(), UpstreamError> {
        if self.drop_unsupported {
            return Ok(());
        }
        let mut keys: Vec<&String> = req
            .rest
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        keys.sort();
        match keys.first() {
            None => Ok(()),
            Some(k) => Err(UpstreamError::Unsupported {
                param: leak_param(k),
                message: format!(
                    "the parameter {k:?} is not supported by this model's provider ({provider}); remove it, or set drop_unsupported_params on the deployment"
                ),
            }),
        }
    }
}

/// Parameter names for error bodies are `&'static str`; a small fixed set covers the ones
/// clients send, anything else is reported by name in the message only.
fn leak_param(k: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "logprobs",
        "top_logprobs",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "seed",
        "response_format",
        "parallel_tool_calls",
        "service_tier",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "store",
        "metadata",
        "user",
        "web_search_options",
    ];
    NAMES
        .iter()
        .find(|n| **n == k)
        .copied()
        .unwrap_or("(unsupported)")
}

/// Turns a provider's native events into OpenAI chunk payloads, one event at a time.
pub trait StreamTranslator: Send + 'static {
    fn event(&mut self, data: &str) -> Result<Vec<String>, UpstreamError>;
    /// Called once when the upstream stream ends (for a closing `[DONE]`).
    fn end(&mut self) -> Vec<String>;
}

/// Applies a [`StreamTranslator`] to a stream of native events, keeping the
/// event-as-it-arrives behaviour: nothing is held back beyond the current event.
pub fn translate(
    events: BoxStream<'static, Result<String, UpstreamError>>,
    t: impl StreamTranslator,
) -> EventStream {
    struct St<T> {
        events: BoxStream<'static, Result<String, UpstreamError>>,
        t: T,
        pending: std::collections::VecDeque<String>,
        ended: bool,
    }
    let st = St {
        events,
        t,
        pending: Default::default(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(out) = st.pending.pop_front() {
                return Some((Ok(out), st));
            }
            if st.ended {
                return None;
            }
            match st.events.next().await {
                Some(Ok(ev)) => match st.t.event(&ev) {
                    Ok(out) => st.pending.extend(out),
                    Err(e) => {
                        st.ended = true;
                        return Some((Err(e), st));
                    }
                },
                Some(Err(e)) => {
                    st.ended = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.ended = true;
                    let tail = st.t.end();
                    st.pending.extend(tail);
                }
            }
        }
    }))
}
