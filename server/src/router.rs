//! The one HTTP router, shared by `main` and the tests.
//!
//! Layer order, outermost first:
//! 1. `CatchPanicLayer`: a panic anywhere becomes a 500, never a dropped connection.
//! 2. `request_id`: every response gets `x-request-id`; one log line per request.
//! 3. per area: `/v1/*` runs `require_key` (authentication) before any handler or the
//!    404/405 fallbacks, so nothing under `/v1` answers an unauthenticated caller except
//!    with 401; bodies are read by the handlers within the size and time limits
//!    (`proxy::read_json`). The console's own gate sits in `console::routes`.
//!
//! Header read timeouts and connection limits are set in `startup`'s server loop, below
//! all of this.

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::proxy;
use crate::state::AppState;
use crate::telemetry;

pub fn router(state: AppState, console: Router) -> Router {
    let v1 = Router::new()
        .route("/chat/completions", post(proxy::chat_completions))
        .route("/embeddings", post(proxy::embeddings))
        .route("/messages", post(proxy::messages))
        .route("/models", get(proxy::list_models))
        .route("/models/{model}", get(proxy::get_model))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .with_state(state.clone());
    // The management API: the master key or an admin's API token; virtual keys never
    // authenticate here.
    let admin = Router::new()
        .route("/deployments", get(crate::admin::deployments))
        .route(
            "/teams",
            post(crate::admin::create_team).get(crate::admin::list_teams),
        )
        .route(
            "/keys",
            post(crate::admin::create_key).get(crate::admin::list_keys),
        )
        .route(
            "/keys/{id}",
            axum::routing::delete(crate::admin::revoke_key)
                .get(crate::admin::get_key)
                .patch(crate::admin::update_key),
        )
        .route("/keys/{id}/rotate", post(crate::admin::rotate_key))
        .route("/keys/{id}/approve", post(crate::admin::approve_key))
        .route("/keys/{id}/reject", post(crate::admin::reject_key))
        .route(
            "/teams/{id}",
            axum::routing::patch(crate::admin::update_team),
        )
        .route("/teams/{id}/projects", get(crate::admin::list_projects))
        .route(
            "/teams/{id}/members/{user_id}",
            axum::routing::delete(crate::admin::remove_member),
        )
        .route(
            "/users/{id}",
            axum::routing::patch(crate::admin::update_user),
        )
        .route(
            "/users",
            post(crate::admin::create_user).get(crate::admin::list_users),
        )
        .route("/users/{id}/tokens", post(crate::admin::create_admin_token))
        .route(
            "/tokens/{id}",
            axum::routing::delete(crate::admin::revoke_admin_token),
        )
        .route(
            "/teams/{id}/members",
            post(crate::admin::set_member).get(crate::admin::list_members),
        )
        .route(
            "/budgets",
            axum::routing::put(crate::admin::put_budget).get(crate::admin::list_budgets),
        )
        .route(
            "/budgets/{scope_type}/{scope_id}",
            axum::routing::delete(crate::admin::delete_budget),
        )
        .route(
            "/rate_limits",
            axum::routing::put(crate::admin::put_rate_limits).get(crate::admin::list_rate_limits),
        )
        .route("/spend", get(crate::admin::spend))
        .route("/audit", get(crate::admin::audit))
        .route("/openapi.json", get(crate::admin::openapi_document))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .with_state(state.clone());
    let health = Router::new()
        .route(
            "/health/live",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
        .with_state(state);
    Router::new()
        .nest("/v1", v1)
        .nest("/admin/v1", admin)
        .merge(health)
        .merge(console)
        .layer(middleware::from_fn(telemetry::request_id))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
}

async fn require_key(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    match st.auth.authenticate(req.headers()) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        // Anthropic clients get Anthropic's error shape.
        Err(e) if req.uri().path().ends_with("/messages") => {
            crate::dialect::anthropic::error_response(&e)
        }
        Err(e) => e.into_response(),
    }
}

async fn require_admin(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if req.uri().path().ends_with("/openapi.json") && req.method() == axum::http::Method::GET {
        return next.run(req).await;
    }
    // An admin's API token: checked against the database (this API is not a hot path),
    // only while its user is an active admin.
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| crate::keys::looks_like_admin_token(t))
        .map(str::to_owned);
    if let Some(token) = token {
        return match st.store.admin_for_token(&st.key_hasher.hash(&token)).await {
            Ok(Some(user)) => {
                req.extensions_mut()
                    .insert(crate::admin::AdminName(format!("admin:{}", user.username)));
                next.run(req).await
            }
            Ok(None) => ApiError::Unauthorized("invalid API key").into_response(),
            Err(e) => {
                tracing::error!(error = %e, "admin token lookup failed");
                ApiError::Unavailable.into_response()
            }
        };
    }
    match st.auth.authenticate(req.headers()) {
        Ok(crate::auth::Principal::Master) => next.run(req).await,
        // Virtual keys are for the proxy API only.
        Ok(crate::auth::Principal::Key(_)) => {
            ApiError::Forbidden("virtual keys cannot use the management API").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Ready when the database answers and the gateway is not draining.
async fn ready(State(st): State<AppState>) -> Response {
    let db = st.store.ping().await;
    let accepting = st.is_accepting();
    let body = axum::Json(
        json!({"status": if db && accepting {"ok"} else {"unavailable"}, "database": db, "accepting": accepting}),
    );
    if db && accepting {
        body.into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
