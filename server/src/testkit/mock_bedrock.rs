//! The mock upstream's Bedrock face: `POST /model/{model}/converse`, `/converse-stream`
//! (real AWS event-stream frames) and `/invoke` (Titan embeddings). Replies and token
//! counts are the OpenAI mock's (`reply_for`: "Mock reply:" and the last user text's first
//! words, one token a word, 3 more a message).
//!
//! Every request must carry a SigV4 `Authorization` (service `bedrock`) and `x-amz-date`;
//! the access key id plays the mock's api key, and the signature is recomputed with
//! [`MOCK_AWS_SECRET`] as the secret key: a mismatch is answered 403 like AWS does.
//!
//! The model id picks a behaviour: `fail-<status>` (a Bedrock-shaped error with
//! `x-amzn-errortype`, `Retry-After: 1` on 429), `slow-<ms>`, `tool` (a `toolUse` of the
//! first declared tool, or `lookup`), `guardrail` (stop reason `guardrail_intervened`, no
//! content) and `throttle` (streams: a `throttlingException` frame after the first word).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::mock_upstream::{MockState, record};
use crate::dialect::openai::ChatRequest;
use crate::meter::Usage;
use crate::providers::bedrock::{EVENT_STREAM, event_frame, exception_frame};
use crate::providers::mock::{embeddings_body, reply_for};

/// The secret access key the mock checks signatures with; deployments pointing at the
/// mock use it as `aws_secret_access_key`.
pub const MOCK_AWS_SECRET: &str = "mock/SECRET+access+key+for+tests+only";

pub fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/model/{model}/converse", post(converse))
        .route("/model/{model}/converse-stream", post(converse_stream))
        .route("/model/{model}/invoke", post(invoke))
}

/// A Bedrock-shaped error: `{"message"}` plus `x-amzn-errortype`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut resp = (status, axum::Json(json!({"message": message}))).into_response();
    if let Ok(v) = header::HeaderValue::from_str(kind) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// `20240102T030405Z` → a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 || s.as_bytes()[8] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok());
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Checks the SigV4 signature of a request against [`MOCK_AWS_SECRET`] and the access key
/// id against the mock's key. The answer on failure is AWS's.
pub(crate) fn check_sigv4(
    st: &MockState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Box<Response>> {
    let missing = || {
        Box::new(error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ))
    };
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let auth = text("authorization").ok_or_else(missing)?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or_else(missing)?;
    let (credential, rest) = rest.split_once(", SignedHeaders=").ok_or_else(missing)?;
    let (signed_headers, _signature) = rest.split_once(", Signature=").ok_or_else(missing)?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, _date, region, service, "aws4_request"] = scope[..] else {
        return Err(missing());
    };
    if !st.key_ok(Some(access_key_id)) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )));
    }
    let time = text("x-amz-date")
        .and_then(parse_amz_date)
        .ok_or_else(missing)?;
    let host = text("host").unwrap_or("localhost");
    let url = format!(
        "http://{host}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in signed_headers.split(';') {
        if matches!(name, "host" | "x-amz-date" | "x-amz-security-token") {
            continue; // the signer derives or adds these itself
        }
        signed.push((name, text(name).unwrap_or("")));
    }
    let identity: Identity = Credentials::new(
        access_key_id,
        MOCK_AWS_SECRET,
        text("x-amz-security-token").map(str::to_owned),
        None,
        "mock",
    )
    .into();
    let expected = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .ok()
        .map(Into::into)
        .and_then(|params| {
            let req = SignableRequest::new(
                method.as_str(),
                url,
                signed.into_iter(),
                SignableBody::Bytes(body),
            )
            .ok()?;
            let (instructions, _) = sign(req, &params).ok()?.into_parts();
            let (hdrs, _) = instructions.into_parts();
            hdrs.into_iter()
                .find(|h| h.name() == "authorization")
                .map(|h| h.value().to_owned())
        });
    if service != "bedrock" || expected.as_deref() != Some(auth) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        )));
    }
    Ok(())
}

/// A Converse body seen as an OpenAI chat request, for `reply_for`.
fn as_chat(body: &Value) -> Option<ChatRequest> {
    let text = |content: &Value| -> String {
        content
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.push(json!({"role": "system", "content": text(system)}));
    }
    for m in body.get("messages")?.as_array()? {
        messages.push(json!({"role": m.get("role")?, "content": text(&m["content"])}));
    }
    let mut req = json!({"model": "bedrock", "messages": messages});
    if let Some(n) = body["inferenceConfig"]["maxTokens"].as_u64() {
        req["max_tokens"] = json!(n);
    }
    serde_json::from_value(req).ok()
}

struct Answer {
    words: Vec<String>,
    usage: Usage,
    tool: Option<(String, Value)>,
    stop: &'static str,
}

/// Checks, parses, records and answers one Converse call (or returns the error response).
async fn prepare(
    st: &MockState,
    model: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Answer, Box<Response>> {
    check_sigv4(st, method, uri, headers, body)?;
    let raw: Value = serde_json::from_slice(body).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Malformed input request",
        ))
    })?;
    let req = as_chat(&raw).ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "messages are required",
        ))
    })?;
    if let Some(code) = model
        .strip_prefix("fail-")
        .and_then(|c| c.parse::<u16>().ok())
    {
        record(st, "chat", model, &raw, None);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match code {
            400 => "ValidationException",
            403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            429 => "ThrottlingException",
            503 => "ServiceUnavailableException",
            _ => "InternalServerException",
        };
        return Err(Box::new(error(
            status,
            kind,
            &format!("mock failure {code}"),
        )));
    }
    if let Some(ms) = model
        .strip_prefix("slow-")
        .and_then(|c| c.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (words, usage) = reply_for(&req);
    record(st, "chat", model, &raw, Some(usage));
    Ok(match model {
        "tool" => {
            let name = raw["toolConfig"]["tools"][0]["toolSpec"]["name"]
                .as_str()
                .unwrap_or("lookup")
                .to_owned();
            let query = words.get(2..).unwrap_or_default().join(" ");
            Answer {
                words: Vec::new(),
                usage,
                tool: Some((name, json!({"query": query}))),
                stop: "tool_use",
            }
        }
        "guardrail" => Answer {
            words: Vec::new(),
            usage,
            tool: None,
            stop: "guardrail_intervened",
        },
        _ => Answer {
            words,
            usage,
            tool: None,
            stop: "end_turn",
        },
    })
}

fn usage_json(u: Usage) -> Value {
    json!({
        "inputTokens": u.prompt_tokens,
        "outputTokens": u.completion_tokens,
        "totalTokens": u.prompt_tokens + u.completion_tokens,
    })
}

const TOOL_USE_ID: &str = "tooluse_mock1";

async fn converse(
    State(st): State<Arc<MockState>>,
    Path(model): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let a = match prepare(&st, &model, &method, &uri, &headers, &body).await {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let mut content = Vec::new();
    if !a.words.is_empty() {
        content.push(json!({"text": a.words.join(" ")}));
    }
    if let Some((name, input)) = a.tool {
        content.push(json!({"toolUse": {"toolUseId": TOOL_USE_ID, "name": name, "input": input}}));
    }
    axum::Json(json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": a.stop,
        "usage": usage_json(a.usage),
        "metrics": {"latencyMs": 1},
    }))
    .into_response()
}

async fn converse_stream(
    State(st): State<Arc<MockState>>,
    Path(model): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let a = match prepare(&st, &model, &method, &uri, &headers, &body).await {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let mut frames = vec![event_frame("messageStart", &json!({"role": "assistant"}))];
    for (i, w) in a.words.iter().enumerate() {
        let text = if i == 0 { w.clone() } else { format!(" {w}") };
        frames.push(event_frame(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": text}}),
        ));
        if model == "throttle" {
            frames.push(exception_frame("throttlingException", "Too many requests"));
            break;
        }
    }
    if !a.words.is_empty() {
        frames.push(event_frame(
            "contentBlockStop",
            &json!({"contentBlockIndex": 0}),
        ));
    }
    if let Some((name, input)) = &a.tool {
        let input = input.to_string();
        let (head, tail) = input.split_at(input.len() / 2);
        frames.push(event_frame(
            "contentBlockStart",
            &json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": TOOL_USE_ID, "name": name}}}),
        ));
        for part in [head, tail] {
            frames.push(event_frame(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": part}}}),
            ));
        }
        frames.push(event_frame(
            "contentBlockStop",
            &json!({"contentBlockIndex": 1}),
        ));
    }
    if model != "throttle" {
        frames.push(event_frame("messageStop", &json!({"stopReason": a.stop})));
        frames.push(event_frame(
            "metadata",
            &json!({"usage": usage_json(a.usage), "metrics": {"latencyMs": 1}}),
        ));
    }
    let body = Body::from_stream(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, Infallible>),
    ));
    ([(header::CONTENT_TYPE, EVENT_STREAM)], body).into_response()
}

/// Titan text embeddings: `{"inputText"}` → `{"embedding", "inputTextTokenCount"}`.
async fn invoke(
    State(st): State<Arc<MockState>>,
    Path(model): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = check_sigv4(&st, &method, &uri, &headers, &body) {
        return *resp;
    }
    let raw: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(text) = raw.get("inputText").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "inputText is required",
        );
    };
    let (openai, usage) = embeddings_body(&[text.to_owned()], &model);
    record(&st, "embeddings", &model, &raw, Some(usage));
    axum::Json(json!({
        "embedding": openai["data"][0]["embedding"],
        "inputTextTokenCount": usage.prompt_tokens,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse() {
        assert_eq!(
            parse_amz_date("20240102T030405Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645))
        );
        assert_eq!(
            parse_amz_date("19700101T000000Z"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(parse_amz_date("2024-01-02T03:04:05Z"), None);
    }
}
