//! The `/v1` proxy API. Handlers only orchestrate the stages of a request:
//! accept (bounded body) → authenticate (done by the layer in `router`) → validate →
//! route (pick a deployment) → provider (call, stream) → meter (usage, price, ledger) →
//! respond. Each stage lives in its own module.

mod body;
mod messages;
pub mod spend;
mod stream;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Principal;
use crate::dialect::openai::{ChatRequest, EmbeddingsRequest};
use crate::error::ApiError;
use crate::meter::{LedgerRow, MeterGuard, Usage, micros_to_usd_string};
use crate::providers::ChatReply;
use crate::route::{Deployment, RouteContext, Served};
use crate::state::AppState;
use crate::telemetry::RequestId;

pub use body::read_json;
pub use messages::messages;
pub use stream::drains_finished;

pub static X_GATEWAY_DEPLOYMENT: HeaderName = HeaderName::from_static("x-gateway-deployment");
pub static X_GATEWAY_COST: HeaderName = HeaderName::from_static("x-gateway-cost-usd");
pub static X_GATEWAY_ATTEMPTS: HeaderName = HeaderName::from_static("x-gateway-attempts");

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    request: Request,
) -> Response {
    let mut meter = Some(new_meter(&st, &principal, &rid, "chat"));
    match chat(&st, &principal, request, &mut meter).await {
        Ok(resp) => resp,
        Err(e) => fail(meter, e),
    }
}

async fn chat(
    st: &AppState,
    principal: &Principal,
    request: Request,
    meter: &mut Option<MeterGuard>,
) -> Result<Response, ApiError> {
    let tags = request_tags(request.headers(), meter)?;
    let req: ChatRequest = read_json(request, &st.limits).await?;
    if let Some(row) = meter.as_mut().and_then(MeterGuard::row_mut) {
        row.model.clone_from(&req.model);
        row.stream = req.wants_stream();
    }
    req.validate()?;
    let (reply, served) = complete_chat(st, &req, meter, principal, tags).await?;
    let Some(mut m) = meter.take() else {
        return Err(ApiError::Internal);
    };
    let headroom = m.permit.as_ref().map(|p| p.headroom);
    match reply {
        ChatReply::Complete { body, usage } => {
            let cost = settle_complete(&mut m, &served.deployment, usage);
            m.finish(200, None);
            let mut resp = json_response(body, &served.deployment, Some(cost));
            attempts_header(&mut resp, served.attempts);
            spend::ratelimit_headers(&mut resp, headroom);
            Ok(resp)
        }
        ChatReply::Stream(events) => {
            let encoder = stream::Encoder::OpenAi {
                client_wants_usage: req.client_wants_usage(),
            };
            let drain = std::time::Duration::from_millis(st.config.spend.disconnect_drain_ms);
            let mut resp = stream::respond(
                events,
                m,
                encoder,
                served.deployment,
                served.busy,
                drain,
                st.accepting.clone(),
            );
            attempts_header(&mut resp, served.attempts);
            spend::ratelimit_headers(&mut resp, headroom);
            Ok(resp)
        }
    }
}

/// Routes a chat request (retries, fallbacks) and puts the serving deployment on the
/// ledger row; the reply is handed back with its [`Served`] record, whose value is taken.
pub(crate) async fn complete_chat(
    st: &AppState,
    req: &ChatRequest,
    meter: &mut Option<MeterGuard>,
    principal: &Principal,
    tags: Vec<String>,
) -> Result<(ChatReply, Served<()>), ApiError> {
    if !st.models.contains(&req.model) {
        return Err(ApiError::ModelNotFound(req.model.clone()));
    }
    if !principal.may_use(&req.model) {
        return Err(ApiError::ModelNotAllowed(req.model.clone()));
    }
    let prompt_chars = req.prompt_chars();
    if let Some(m) = meter.as_mut() {
        m.prompt_chars = prompt_chars;
    }
    // The key's own tags join the request's, for route rules and the ledger.
    let mut tags = tags;
    if let Some(k) = principal.key() {
        for t in &k.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        if let Some(row) = meter.as_mut().and_then(MeterGuard::row_mut) {
            row.tags = serde_json::to_string(&tags).unwrap_or_else(|_| "[]".to_owned());
        }
    }
    let ctx = RouteContext {
        key_id: principal.key_id(),
        team_id: principal.key().map(|k| k.team_id.clone()),
        tags,
        prompt_tokens: u64::try_from(crate::meter::estimate_tokens(prompt_chars))
            .unwrap_or(u64::MAX),
    };
    let target = st.models.rewrite(&req.model, &ctx);
    spend::admit(
        st,
        principal,
        meter,
        crate::meter::estimate_tokens(prompt_chars),
    )
    .await?;
    spend::check_and_hold(
        st,
        principal,
        meter,
        target,
        || {
            req.messages
                .iter()
                .chain(req.rest.values())
                .map(spend::token_bound)
                .fold(0, i64::saturating_add)
        },
        spend::requested_max_output(&req.rest),
    )
    .await?;
    let result = st
        .models
        .serve(target, |dep| async move {
            dep.provider.chat(req, &dep.upstream_model).await
        })
        .await;
    match result {
        Ok(served) => {
            if let Some(m) = meter.as_mut() {
                attach_deployment(st, m, &served.deployment);
            }
            let Served {
                value,
                deployment,
                attempts,
                busy,
            } = served;
            Ok((
                value,
                Served {
                    value: (),
                    deployment,
                    attempts,
                    busy,
                },
            ))
        }
        Err(failed) => {
            if let (Some(m), Some(dep)) = (meter.as_mut(), failed.deployment.as_ref()) {
                attach_deployment(st, m, dep);
            }
            Err(ApiError::from(failed.error))
        }
    }
}

/// Header carrying the request's tags (comma-separated): they go on the ledger row and
/// route rules can match them.
pub static X_GATEWAY_TAGS: HeaderName = HeaderName::from_static("x-gateway-tags");

/// Reads and checks `x-gateway-tags` (at most 16 tags of `[A-Za-z0-9_.:-]{1,64}`), and
/// puts them on the ledger row.
pub(crate) fn request_tags(
    headers: &HeaderMap,
    meter: &mut Option<MeterGuard>,
) -> Result<Vec<String>, ApiError> {
    let Some(raw) = headers.get(&X_GATEWAY_TAGS) else {
        return Ok(Vec::new());
    };
    let bad = || {
        ApiError::bad_request(
            "x-gateway-tags must be up to 16 comma-separated tags of letters, digits, _ . : -",
        )
    };
    let raw = raw.to_str().map_err(|_| bad())?;
    let tags: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = |t: &String| {
        t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    };
    if tags.len() > 16 || !tags.iter().all(valid) {
        return Err(bad());
    }
    if let Some(row) = meter.as_mut().and_then(MeterGuard::row_mut) {
        row.tags = serde_json::to_string(&tags).unwrap_or_else(|_| "[]".to_owned());
    }
    Ok(tags)
}

pub(crate) fn attempts_header(resp: &mut Response, attempts: u32) {
    resp.headers_mut()
        .insert(X_GATEWAY_ATTEMPTS.clone(), HeaderValue::from(attempts));
}

/// `POST /v1/embeddings`
pub async fn embeddings(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    request: Request,
) -> Response {
    let mut meter = Some(new_meter(&st, &principal, &rid, "embeddings"));
    match embed(&st, &principal, request, &mut meter).await {
        Ok(resp) => resp,
        Err(e) => fail(meter, e),
    }
}

async fn embed(
    st: &AppState,
    principal: &Principal,
    request: Request,
    meter: &mut Option<MeterGuard>,
) -> Result<Response, ApiError> {
    let req: EmbeddingsRequest = read_json(request, &st.limits).await?;
    if let Some(row) = meter.as_mut().and_then(MeterGuard::row_mut) {
        row.model.clone_from(&req.model);
    }
    req.validate()?;
    if !st.models.contains(&req.model) {
        return Err(ApiError::ModelNotFound(req.model.clone()));
    }
    if !principal.may_use(&req.model) {
        return Err(ApiError::ModelNotAllowed(req.model.clone()));
    }
    spend::admit(st, principal, meter, spend::token_bound(&req.input) / 4).await?;
    spend::check_and_hold(
        st,
        principal,
        meter,
        &req.model,
        || spend::token_bound(&req.input),
        Some(0),
    )
    .await?;
    let req = &req;
    let result = st
        .models
        .serve(&req.model, |dep| async move {
            dep.provider.embeddings(req, &dep.upstream_model).await
        })
        .await;
    let served = match result {
        Ok(s) => s,
        Err(failed) => {
            if let (Some(m), Some(dep)) = (meter.as_mut(), failed.deployment.as_ref()) {
                attach_deployment(st, m, dep);
            }
            return Err(failed.error.into());
        }
    };
    let Some(mut m) = meter.take() else {
        return Err(ApiError::Internal);
    };
    attach_deployment(st, &mut m, &served.deployment);
    m.mark_first_byte();
    let cost = settle_usage(&mut m, served.value.usage);
    m.finish(200, None);
    let mut resp = json_response(served.value.body, &served.deployment, Some(cost));
    attempts_header(&mut resp, served.attempts);
    Ok(resp)
}

/// `GET /v1/models`
pub async fn list_models(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let data: Vec<_> = st
        .models
        .groups()
        .filter(|(name, _)| principal.may_use(name))
        .map(|(name, _)| model_object(name))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{model}`
pub async fn get_model(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(model): Path<String>,
) -> Response {
    if st.models.contains(&model) && principal.may_use(&model) {
        axum::Json(model_object(&model)).into_response()
    } else {
        ApiError::ModelNotFound(model).into_response()
    }
}

fn model_object(name: &str) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "gateway"})
}

pub(crate) fn new_meter(
    st: &AppState,
    principal: &Principal,
    rid: &RequestId,
    endpoint: &'static str,
) -> MeterGuard {
    let ts_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let row = LedgerRow {
        request_id: rid.0.clone(),
        ts_ms,
        key_id: principal.key_id(),
        team_id: principal.key().map(|k| k.team_id.clone()),
        project_id: principal.key().and_then(|k| k.project_id.clone()),
        user_id: principal.key().and_then(|k| k.user_id.clone()),
        endpoint,
        model: String::new(),
        provider: None,
        deployment: None,
        stream: false,
        status: 0,
        error_type: None,
        usage: Usage::default(),
        usage_estimated: false,
        cost_micros: 0,
        latency_ms: 0,
        ttfb_ms: None,
        tags: "[]".to_owned(),
    };
    MeterGuard::new(st.ledger.clone(), row, rid.1)
}

pub(crate) fn attach_deployment(st: &AppState, m: &mut MeterGuard, dep: &Deployment) {
    m.set_price(st.prices.lookup(&dep.model, &dep.upstream_model));
    if let Some(row) = m.row_mut() {
        row.provider = Some(dep.kind.as_str());
        row.deployment = Some(dep.id.clone());
    }
}

/// A whole answer arrived: its usage goes on the row and against the deployment's tpm
/// cap; returns the cost in micro-dollars.
pub(crate) fn settle_complete(m: &mut MeterGuard, dep: &Deployment, usage: Option<Usage>) -> i64 {
    m.mark_first_byte();
    if let Some(u) = usage {
        dep.health.add_tokens(u.prompt_tokens + u.completion_tokens);
    }
    settle_usage(m, usage)
}

/// Puts the upstream's usage on the row and returns its cost in micro-dollars.
pub(crate) fn settle_usage(m: &mut MeterGuard, usage: Option<Usage>) -> i64 {
    if let (Some(u), Some(row)) = (usage, m.row_mut()) {
        row.usage = u;
    }
    m.cost_micros()
}

fn fail(meter: Option<MeterGuard>, e: ApiError) -> Response {
    let cost = finish_failed(meter, &e);
    let mut resp = e.into_response();
    cost_header(&mut resp, cost);
    resp
}

/// Records a failed request's row; returns its cost (what the upstream reported, if any).
pub(crate) fn finish_failed(meter: Option<MeterGuard>, e: &ApiError) -> i64 {
    let Some(m) = meter else { return 0 };
    let cost = m.cost_micros();
    m.finish(e.status().as_u16(), Some(e.ledger_label()));
    cost
}

/// `x-gateway-cost-usd` on every proxied answer, refusals and failures included.
pub(crate) fn cost_header(resp: &mut Response, cost_micros: i64) {
    if let Ok(v) = HeaderValue::from_str(&micros_to_usd_string(cost_micros)) {
        resp.headers_mut().insert(X_GATEWAY_COST.clone(), v);
    }
}

fn json_response(body: bytes::Bytes, dep: &Deployment, cost_micros: Option<i64>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    deployment_headers(&mut headers, dep, cost_micros);
    (StatusCode::OK, headers, body).into_response()
}

pub(crate) fn deployment_headers(
    headers: &mut HeaderMap,
    dep: &Deployment,
    cost_micros: Option<i64>,
) {
    if let Ok(v) = HeaderValue::from_str(&dep.id) {
        headers.insert(X_GATEWAY_DEPLOYMENT.clone(), v);
    }
    if let Some(c) = cost_micros.and_then(|c| HeaderValue::from_str(&micros_to_usd_string(c)).ok())
    {
        headers.insert(X_GATEWAY_COST.clone(), c);
    }
}

/// Elapsed time since a request started, for logs.
pub fn since(start: Instant) -> u128 {
    start.elapsed().as_micros()
}
