//! The management API (`/admin/v1`): JSON for operators and automation. Everything the
//! console shows, the API shows too, from the same views.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::route::view::group_views;
use crate::state::AppState;

/// `GET /admin/v1/deployments`: model groups, their deployments, live health and prices.
pub async fn deployments(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": group_views(&st.models, &st.prices)}))
}
