//! `POST /v1/messages`: Anthropic's Messages API. The request is translated to the
//! canonical OpenAI form at the edge and then takes the same path as a chat completion
//! (route, provider, meter); the answer, the stream and every error go back in Anthropic's
//! shapes, whichever provider served.

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::stream::{self, Encoder};
use super::{
    attempts_header, complete_chat, deployment_headers, new_meter, read_json, request_tags,
    settle_complete,
};
use crate::auth::Principal;
use crate::dialect::anthropic::{self, EventEncoder};
use crate::error::ApiError;
use crate::meter::MeterGuard;
use crate::providers::ChatReply;
use crate::state::AppState;
use crate::telemetry::RequestId;

pub async fn messages(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    request: Request,
) -> Response {
    let mut meter = Some(new_meter(&st, &principal, &rid, "messages"));
    match handle(&st, &principal, request, &mut meter).await {
        Ok(resp) => resp,
        Err(e) => {
            let cost = super::finish_failed(meter, &e);
            let mut resp = anthropic::error_response(&e);
            super::cost_header(&mut resp, cost);
            resp
        }
    }
}

async fn handle(
    st: &AppState,
    principal: &Principal,
    request: Request,
    meter: &mut Option<MeterGuard>,
) -> Result<Response, ApiError> {
    let tags = request_tags(request.headers(), meter)?;
    let body: serde_json::Value = read_json(request, &st.limits).await?;
    let req = anthropic::to_chat(body)?;
    if let Some(row) = meter.as_mut().and_then(MeterGuard::row_mut) {
        row.model.clone_from(&req.model);
        row.stream = req.wants_stream();
    }
    req.validate()?;
    let (reply, served) = complete_chat(st, &req, meter, principal, tags).await?;
    let Some(mut m) = meter.take() else {
        return Err(ApiError::Internal);
    };
    match reply {
        ChatReply::Complete { body, usage } => {
            let cost = settle_complete(&mut m, &served.deployment, usage);
            let message = match anthropic::from_completion(&body, &req.model) {
                Ok(msg) => msg,
                Err(e) => {
                    m.finish(e.status().as_u16(), Some(e.ledger_label()));
                    return Ok(anthropic::error_response(&e));
                }
            };
            m.finish(200, None);
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            deployment_headers(&mut headers, &served.deployment, Some(cost));
            let mut resp = (StatusCode::OK, headers, message.to_string()).into_response();
            attempts_header(&mut resp, served.attempts);
            Ok(resp)
        }
        ChatReply::Stream(events) => {
            let encoder = Encoder::Anthropic(Box::new(EventEncoder::new(&req.model)));
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
            Ok(resp)
        }
    }
}
