//! Reading a JSON request body within the configured size and time limits; every failure
//! is an [`ApiError`] in OpenAI's shape (413 before buffering when the declared length is
//! already too big, 408 for a client that trickles, 400 for malformed JSON).

use axum::extract::Request;
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::RequestLimits;

pub async fn read_json<T: DeserializeOwned>(
    request: Request,
    limits: &RequestLimits,
) -> Result<T, ApiError> {
    let max = limits.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::PayloadTooLarge(max));
    }
    let body = request.into_body();
    let bytes =
        match tokio::time::timeout(limits.body_read_timeout, axum::body::to_bytes(body, max)).await
        {
            Err(_) => return Err(ApiError::RequestTimeout),
            Ok(Err(e)) => {
                return Err(if is_length_limit(&e) {
                    ApiError::PayloadTooLarge(max)
                } else {
                    ApiError::bad_request("could not read the request body")
                });
            }
            Ok(Ok(b)) => b,
        };
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("could not parse the JSON body of the request: {e}"))
    })
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = s.source();
    }
    false
}
