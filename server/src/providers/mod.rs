//! Providers: one file each, dispatched through the [`Provider`] enum with `match`. A
//! provider takes a request in the gateway's dialect, calls its upstream (or answers
//! locally, for `mock`), and returns the reply with the usage it reported.

pub mod mock;
pub mod openai;
pub mod sse;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::config::{DeploymentConfig, ProviderKind};
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest};
use crate::error::ApiError;
use crate::meter::Usage;

/// A stream of SSE `data:` payloads in OpenAI's chunk format (the last one is `[DONE]`).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<String, UpstreamError>> + Send>>;

pub enum ChatReply {
    /// A whole `chat.completion` body, passed to the client as the upstream sent it.
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
                status: http::StatusCode::from_u16(s).unwrap_or(http::StatusCode::BAD_REQUEST),
                message,
                code,
            },
            UpstreamError::Status { .. }
            | UpstreamError::Connect(_)
            | UpstreamError::Protocol(_) => ApiError::BadGateway,
        }
    }
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
    Mock(mock::Mock),
}

impl Provider {
    pub fn from_config(d: &DeploymentConfig, http: &reqwest::Client, max_body: usize) -> Provider {
        let limits = CallLimits {
            first_byte: Duration::from_millis(d.first_byte_timeout_ms),
            idle: Duration::from_millis(d.idle_timeout_ms),
            max_body,
        };
        match d.provider {
            ProviderKind::Mock => Provider::Mock(mock::Mock),
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
                Provider::OpenAi(openai::OpenAi::new(
                    d.base_url.as_ref().map_or("", |u| u.as_str()),
                    d.api_key.clone(),
                    http.clone(),
                    limits,
                ))
            }
        }
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        upstream_model: &str,
    ) -> Result<ChatReply, UpstreamError> {
        match self {
            Provider::OpenAi(p) => p.chat(req, upstream_model).await,
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
            Provider::Mock(p) => Ok(p.embeddings(req, upstream_model)),
        }
    }
}
