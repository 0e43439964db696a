//! `ApiError`: every failure of the proxy API, answered in OpenAI's error shape
//! `{"error":{"message","type","param","code"}}` with the status SPEC maps it to.
//! 5xx bodies stay generic; the cause is logged where it happened.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("model {0:?} is not allowed for this key")]
    ModelNotAllowed(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the model {0:?} does not exist or you do not have access to it")]
    ModelNotFound(String),
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the client took too long to send the request body")]
    RequestTimeout,
    #[error("unknown endpoint")]
    NotFound,
    /// An object named in the path does not exist (or is not the caller's to see).
    #[error("no such {0}")]
    NoSuch(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The object is not in a state that allows the change.
    #[error("{0}")]
    Conflict(String),
    /// A rate limit of the key (or its team, project, owner) was reached.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// A budget would be crossed; the message names it and when it resets.
    #[error("{0}")]
    BudgetExceeded(String),
    /// The upstream refused the request itself (its 4xx other than auth and rate
    /// limits): the client's request is at fault, so the upstream's message is passed on.
    #[error("{message}")]
    UpstreamRejected {
        status: StatusCode,
        message: String,
        code: Option<String>,
    },
    #[error("the upstream is rate limiting; retry later")]
    UpstreamRateLimited { retry_after: Option<u64> },
    #[error("the upstream provider failed to answer")]
    BadGateway,
    #[error("the upstream provider timed out")]
    GatewayTimeout,
    #[error("the service is not ready")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotAllowed(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound(_) | ApiError::NotFound | ApiError::NoSuch(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BudgetExceeded(_) | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::UpstreamRejected { status, .. } => *status,
            ApiError::UpstreamRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` and `code` for this error.
    pub fn kind_and_code(&self) -> (&'static str, Option<&str>) {
        match self {
            ApiError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::ModelNotAllowed(_) => ("invalid_request_error", Some("model_not_allowed")),
            ApiError::Forbidden(_) => ("invalid_request_error", Some("forbidden")),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::BadRequest { .. } => ("invalid_request_error", None),
            ApiError::PayloadTooLarge(_) => ("invalid_request_error", Some("request_too_large")),
            ApiError::RequestTimeout => ("invalid_request_error", Some("request_timeout")),
            ApiError::NotFound => ("invalid_request_error", Some("unknown_url")),
            ApiError::NoSuch(_) => ("invalid_request_error", Some("not_found")),
            ApiError::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            ApiError::Conflict(_) => ("invalid_request_error", Some("conflict")),
            ApiError::BudgetExceeded(_) => ("insufficient_quota", Some("budget_exceeded")),
            ApiError::RateLimited { .. } => ("rate_limit_exceeded", Some("rate_limit_exceeded")),
            ApiError::UpstreamRejected { code, .. } => ("invalid_request_error", code.as_deref()),
            ApiError::UpstreamRateLimited { .. } => {
                ("rate_limit_exceeded", Some("upstream_rate_limited"))
            }
            ApiError::BadGateway => ("api_error", Some("upstream_error")),
            ApiError::GatewayTimeout => ("api_error", Some("upstream_timeout")),
            ApiError::Unavailable => ("api_error", Some("service_unavailable")),
            ApiError::Internal => ("api_error", Some("internal_error")),
        }
    }

    /// A short machine label for the ledger's `error_type`.
    pub fn ledger_label(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::ModelNotAllowed(_) => "model_not_allowed",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::NotFound => "not_found",
            ApiError::NoSuch(_) => "no_such_object",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::BudgetExceeded(_) => "budget_exceeded",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::UpstreamRejected { .. } => "upstream_rejected",
            ApiError::UpstreamRateLimited { .. } => "upstream_rate_limited",
            ApiError::BadGateway => "upstream_error",
            ApiError::GatewayTimeout => "upstream_timeout",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, code) = self.kind_and_code();
        let param = match &self {
            ApiError::BadRequest { param, .. } => *param,
            _ => None,
        };
        let body = Body {
            error: Detail {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":{\"message\":\"internal error\",\"type\":\"api_error\",\"param\":null,\"code\":null}}".to_vec());
        let mut resp = (status, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let retry = match &self {
            ApiError::UpstreamRateLimited { retry_after } => Some(retry_after.unwrap_or(1)),
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        if let Some(retry_after) = retry {
            let secs = retry_after.to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, ApiError::BudgetExceeded(_)) {
            // Retrying cannot help before the budget resets: tell SDKs not to.
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}
