//! The management API (`/admin/v1`): JSON for operators and automation, authenticated by
//! the master key (virtual keys never). Every change is written with its audit row in the
//! same transaction. Money is USD as a JSON number here, integer micro-dollars inside.

pub mod openapi;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::{KeyLimits, Refusal, Viewer};
use crate::error::ApiError;
use crate::proxy::read_json;
use crate::route::view::group_views;
use crate::state::AppState;
use crate::store::keys::{Actor, KeyRow};
use crate::store::people::{TEAM_ROLES, USER_ROLES};

/// `GET /admin/v1/deployments`: model groups, their deployments, live health and prices.
pub async fn deployments(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": group_views(&st.models, &st.prices)}))
}

/// `GET /admin/v1/openapi.json` (public: it describes, it reveals nothing).
pub async fn openapi_document() -> Json<Value> {
    Json(openapi::document())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Who passed the management API's authentication: `master`, or `admin:<username>` for an
/// admin's API token. Set by `router::require_admin`.
#[derive(Debug, Clone)]
pub struct AdminName(pub String);

fn actor(headers: &HeaderMap, name: Option<&AdminName>) -> Actor {
    Actor {
        name: name.map_or_else(|| "master".to_owned(), |n| n.0.clone()),
        source_ip: headers
            .get(crate::console::routes::PEER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

fn db_error(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "management API database error");
    ApiError::Internal
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTeam {
    name: String,
}

/// `POST /admin/v1/teams`
pub async fn create_team(
    State(st): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: NewTeam = read_json(request, &st.limits).await?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad_param(
            "name",
            "name must be 1 to 128 characters",
        ));
    }
    match st.store.create_team(name, now_ms(), &who).await {
        Ok(team) => Ok((StatusCode::CREATED, Json(team)).into_response()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::bad_param("name", "a team with this name exists"))
        }
        Err(e) => Err(db_error(e)),
    }
}

/// `GET /admin/v1/teams`
pub async fn list_teams(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let teams = st.store.list_teams().await.map_err(db_error)?;
    Ok(Json(json!({"object": "list", "data": teams})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    team_id: String,
    project: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    /// Unix seconds.
    expires_at: Option<i64>,
}

/// A key as the API shows it: never the hash; the secret only when just created or rotated.
fn key_json(k: &KeyRow, secret: Option<&str>) -> Value {
    let list = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| json!([]));
    let mut v = json!({
        "id": k.id, "object": "key", "name": k.name, "prefix": k.prefix, "team_id": k.team_id,
        "project_id": k.project_id, "user_id": k.user_id, "status": k.status,
        "models": list(&k.models), "tags": list(&k.tags),
        "budget_usd": k.budget_micros.map(|m| m as f64 / 1_000_000.0), "budget_period": k.budget_period,
        "rpm_limit": k.rpm_limit, "tpm_limit": k.tpm_limit,
        "expires_at": k.expires_at.map(|ms| ms / 1000), "created_at": k.created_at / 1000,
        "previous_key_valid_until": k.previous_valid_until.map(|ms| ms / 1000),
        "purpose": k.purpose, "decided_by": k.decided_by, "decided_at": k.decided_at.map(|ms| ms / 1000),
        "decision_reason": k.decision_reason,
    });
    if let Some(s) = secret {
        v["key"] = json!(s);
    }
    v
}

/// `POST /admin/v1/keys`: creates an active key; the secret is in this answer only.
pub async fn create_key(
    State(st): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: NewKey = read_json(request, &st.limits).await?;
    let service = st.key_service();
    let name = crate::access::valid_name("name", &body.name).map_err(refused)?;
    let Some(team) = st.store.team(&body.team_id).await.map_err(db_error)? else {
        return Err(ApiError::bad_param("team_id", "no such team"));
    };
    let models = service.check_models(&team, &body.models).map_err(refused)?;
    crate::access::valid_tags(&body.tags).map_err(refused)?;
    let project = match body.project.as_deref() {
        Some(p) => Some(crate::access::valid_name("project", p).map_err(refused)?),
        None => None,
    };
    let budget_micros = match body.budget_usd {
        Some(usd) if !usd.is_finite() || !(0.0..=1e9).contains(&usd) => {
            return Err(ApiError::bad_param(
                "budget_usd",
                "budget_usd must be a number from 0 to 1e9",
            ));
        }
        Some(usd) => Some((usd * 1_000_000.0).round() as i64),
        None => None,
    };
    if let Some(p) = &body.budget_period
        && !matches!(p.as_str(), "daily" | "weekly" | "monthly" | "total")
    {
        return Err(ApiError::bad_param(
            "budget_period",
            "budget_period is daily, weekly, monthly or total",
        ));
    }
    if body.rpm_limit.is_some_and(|v| v <= 0) || body.tpm_limit.is_some_and(|v| v <= 0) {
        return Err(ApiError::bad_request(
            "rpm_limit and tpm_limit must be positive",
        ));
    }
    let now = now_ms();
    let expires_at = body.expires_at.map(|s| s.saturating_mul(1000));
    if expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::bad_param(
            "expires_at",
            "expires_at must be in the future (Unix seconds)",
        ));
    }
    let secret = st.key_hasher.generate();
    let row = KeyRow {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name,
        prefix: secret.prefix.clone(),
        key_hash: Some(secret.hash.clone()),
        team_id: body.team_id,
        project_id: None,
        user_id: None,
        status: "active".into(),
        models: serde_json::to_string(&models).unwrap_or_else(|_| "[]".into()),
        tags: serde_json::to_string(&body.tags).unwrap_or_else(|_| "[]".into()),
        rpm_limit: body.rpm_limit,
        tpm_limit: body.tpm_limit,
        budget_micros,
        budget_period: body.budget_period,
        expires_at,
        created_at: now,
        updated_at: now,
        previous_key_hash: None,
        previous_valid_until: None,
        purpose: None,
        decided_by: None,
        decided_at: None,
        decision_reason: None,
    };
    let row = st
        .store
        .create_key(row, project.as_deref(), &who)
        .await
        .map_err(db_error)?;
    service
        .sync_policies(&row, &who, true, true)
        .await
        .map_err(refused)?;
    st.keys.apply(&row);
    Ok((
        StatusCode::CREATED,
        Json(key_json(&row, Some(&secret.secret))),
    )
        .into_response())
}

/// A refusal from the key lifecycle in the API's error shape.
fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::NotFound(what) => ApiError::NoSuch(what),
        // The management API's callers are operators: they see everything, so a refusal
        // here is a rule, not a hidden object.
        Refusal::Forbidden(m) | Refusal::Conflict(m) => ApiError::Conflict(m),
        Refusal::Invalid { param, message } => ApiError::bad_param(param, message),
        Refusal::Internal => ApiError::Internal,
    }
}

#[derive(Default)]
struct KeyFilter {
    team_id: Option<String>,
    user_id: Option<String>,
    status: Option<String>,
}

impl KeyFilter {
    fn parse(query: Option<&str>) -> Result<KeyFilter, ApiError> {
        let mut f = KeyFilter::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "team_id" => &mut f.team_id,
                "user_id" => &mut f.user_id,
                "status" => &mut f.status,
                _ => {
                    return Err(ApiError::bad_request(
                        "unknown filter; use team_id, user_id or status",
                    ));
                }
            };
            *slot = Some(v.into_owned());
        }
        Ok(f)
    }
}

/// `GET /admin/v1/keys?team_id=&user_id=&status=`
pub async fn list_keys(
    State(st): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let f = KeyFilter::parse(query.as_deref())?;
    let keys = st.store.list_keys().await.map_err(db_error)?;
    let data: Vec<Value> = keys
        .iter()
        .filter(|k| f.team_id.as_ref().is_none_or(|t| *t == k.team_id))
        .filter(|k| f.user_id.is_none() || f.user_id == k.user_id)
        .filter(|k| f.status.as_ref().is_none_or(|s| *s == k.status))
        .map(|k| key_json(k, None))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /admin/v1/keys/{id}`
pub async fn get_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let k = st
        .key_service()
        .visible_key(&Viewer::Operator, &id)
        .await
        .map_err(refused)?;
    Ok(Json(key_json(&k, None)))
}

/// `DELETE /admin/v1/keys/{id}`: revokes at once here, within a second on every instance.
pub async fn revoke_key(
    State(st): State<AppState>,
    headers: HeaderMap,
    name: Option<axum::Extension<AdminName>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = actor(&headers, name.as_ref().map(|e| &e.0));
    let row = st
        .key_service()
        .revoke(&Viewer::Operator, &who, &id)
        .await
        .map_err(refused)?;
    Ok(Json(key_json(&row, None)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// How long the old secret keeps working (default one hour, at most a week).
    grace_seconds: Option<i64>,
}

/// An optional JSON body: absent or empty means the defaults.
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    st: &AppState,
    request: Request,
) -> Result<T, ApiError> {
    let has_body = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0");
    if has_body {
        read_json(request, &st.limits).await
    } else {
        Ok(T::default())
    }
}

/// `POST /admin/v1/keys/{id}/rotate`: a new secret (in this answer only); the old one
/// works for the grace period.
pub async fn rotate_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: Rotate = optional_json(&st, request).await?;
    let (row, secret) = st
        .key_service()
        .rotate(
            &Viewer::Operator,
            &who,
            &id,
            body.grace_seconds.unwrap_or(3600),
        )
        .await
        .map_err(refused)?;
    Ok(Json(key_json(&row, Some(&secret.secret))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    reason: Option<String>,
}

/// `POST /admin/v1/keys/{id}/approve`: approves a member's request; the member reveals the
/// secret once in the console.
pub async fn approve_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    decide(st, id, request, true).await
}

/// `POST /admin/v1/keys/{id}/reject` with `{"reason"}`.
pub async fn reject_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    decide(st, id, request, false).await
}

async fn decide(
    st: AppState,
    id: String,
    request: Request,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: Decision = optional_json(&st, request).await?;
    let row = st
        .key_service()
        .decide(
            &Viewer::Operator,
            &who,
            &id,
            approve,
            body.reason.as_deref(),
        )
        .await
        .map_err(refused)?;
    Ok(Json(key_json(&row, None)))
}

/// `Some(null)` in JSON clears a field; an absent field leaves it.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyPatch {
    models: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_period: Option<Option<String>>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<i64>>,
}

/// `PATCH /admin/v1/keys/{id}`: models, tags, limits, budget, expiry.
pub async fn update_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: KeyPatch = read_json(request, &st.limits).await?;
    let budget_micros = match body.budget_usd {
        Some(Some(usd)) if !usd.is_finite() || !(0.0..=1e9).contains(&usd) => {
            return Err(ApiError::bad_param(
                "budget_usd",
                "budget_usd must be a number from 0 to 1e9",
            ));
        }
        Some(v) => Some(v.map(|usd| (usd * 1_000_000.0).round() as i64)),
        None => None,
    };
    let limits = KeyLimits {
        models: body.models,
        tags: body.tags,
        rpm_limit: body.rpm_limit,
        tpm_limit: body.tpm_limit,
        budget_micros,
        budget_period: body.budget_period,
        expires_at: body.expires_at.map(|e| e.map(|s| s.saturating_mul(1000))),
    };
    let row = st
        .key_service()
        .set_limits(&Viewer::Operator, &who, &id, limits)
        .await
        .map_err(refused)?;
    Ok(Json(key_json(&row, None)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamPatch {
    models: Vec<String>,
}

/// `PATCH /admin/v1/teams/{id}`: the team's model allow-list (empty: every model).
pub async fn update_team(
    State(st): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: TeamPatch = read_json(request, &st.limits).await?;
    if let Some(m) = body.models.iter().find(|m| !st.models.contains(m)) {
        return Err(ApiError::bad_param(
            "models",
            format!("{m:?} is not a configured model"),
        ));
    }
    let team = st
        .store
        .set_team_models(&id, &body.models, now_ms(), &who)
        .await
        .map_err(db_error)?
        .ok_or(ApiError::NoSuch("team"))?;
    Ok(Json(json!(team)))
}

/// `GET /admin/v1/teams/{id}/projects`
pub async fn list_projects(
    State(st): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if st.store.team(&team_id).await.map_err(db_error)?.is_none() {
        return Err(ApiError::NoSuch("team"));
    }
    let projects = st
        .store
        .projects_of_team(&team_id)
        .await
        .map_err(db_error)?;
    let data: Vec<Value> = projects
        .into_iter()
        .map(|(id, name)| json!({"id": id, "name": name, "team_id": team_id}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `DELETE /admin/v1/teams/{id}/members/{user_id}`
pub async fn remove_member(
    State(st): State<AppState>,
    headers: HeaderMap,
    name: Option<axum::Extension<AdminName>>,
    Path((team_id, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let who = actor(&headers, name.as_ref().map(|e| &e.0));
    if st
        .store
        .remove_member(&team_id, &user_id, now_ms(), &who)
        .await
        .map_err(db_error)?
    {
        Ok(Json(
            json!({"team_id": team_id, "user_id": user_id, "removed": true}),
        ))
    } else {
        Err(ApiError::NoSuch("member"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    role: String,
}

/// `PATCH /admin/v1/users/{id}`: the organisation role.
pub async fn update_user(
    State(st): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: UserPatch = read_json(request, &st.limits).await?;
    if !USER_ROLES.contains(&body.role.as_str()) {
        return Err(ApiError::bad_param(
            "role",
            "role is admin, finance, auditor or member",
        ));
    }
    let user = st
        .store
        .set_user_role(&id, &body.role, now_ms(), &who)
        .await
        .map_err(db_error)?
        .ok_or(ApiError::NoSuch("user"))?;
    Ok(Json(json!(user)))
}

/// `GET /admin/v1/audit`: the audit log, oldest first, with whether the hash chain holds.
pub async fn audit(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = st.store.audit_rows().await.map_err(db_error)?;
    let mut prev = String::new();
    let mut intact = true;
    for r in &rows {
        intact &= r.verifies(&prev);
        prev.clone_from(&r.hash);
    }
    Ok(Json(
        json!({"object": "list", "chain_intact": intact, "data": rows}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    display_name: Option<String>,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "member".to_owned()
}

/// `POST /admin/v1/users`: a person (SSO will also create them just in time).
pub async fn create_user(
    State(st): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: NewUser = read_json(request, &st.limits).await?;
    let email = body.email.trim().to_lowercase();
    let plausible = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
    if !plausible || email.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_param(
            "email",
            "email must be an e-mail address",
        ));
    }
    if !USER_ROLES.contains(&body.role.as_str()) {
        return Err(ApiError::bad_param(
            "role",
            "role is admin, finance, auditor or member",
        ));
    }
    if body.display_name.as_ref().is_some_and(|d| d.len() > 128) {
        return Err(ApiError::bad_param(
            "display_name",
            "display_name has at most 128 characters",
        ));
    }
    match st
        .store
        .create_user(
            &email,
            body.display_name.as_deref(),
            &body.role,
            now_ms(),
            &who,
        )
        .await
    {
        Ok(user) => Ok((StatusCode::CREATED, Json(user)).into_response()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::bad_param(
            "email",
            "a user with this e-mail exists",
        )),
        Err(e) => Err(db_error(e)),
    }
}

/// `GET /admin/v1/users`
pub async fn list_users(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let users = st.store.list_users().await.map_err(db_error)?;
    Ok(Json(json!({"object": "list", "data": users})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    user_id: String,
    role: String,
}

/// `POST /admin/v1/teams/{id}/members`: adds a user to a team as lead or member (or
/// changes their role there).
pub async fn set_member(
    State(st): State<AppState>,
    Path(team_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: NewMember = read_json(request, &st.limits).await?;
    if !TEAM_ROLES.contains(&body.role.as_str()) {
        return Err(ApiError::bad_param("role", "role is lead or member"));
    }
    if st.store.team(&team_id).await.map_err(db_error)?.is_none() {
        return Err(ApiError::NoSuch("team"));
    }
    if !st
        .store
        .user_exists(&body.user_id)
        .await
        .map_err(db_error)?
    {
        return Err(ApiError::bad_param("user_id", "no such user"));
    }
    let member = st
        .store
        .set_member(&team_id, &body.user_id, &body.role, now_ms(), &who)
        .await
        .map_err(db_error)?;
    Ok(Json(member).into_response())
}

/// `GET /admin/v1/teams/{id}/members`
pub async fn list_members(
    State(st): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if st.store.team(&team_id).await.map_err(db_error)?.is_none() {
        return Err(ApiError::NoSuch("team"));
    }
    let members = st.store.team_members(&team_id).await.map_err(db_error)?;
    Ok(Json(json!({"object": "list", "data": members})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

/// `POST /admin/v1/users/{id}/tokens`: an API token for an admin user (the secret is in
/// this answer only). Only admins hold tokens, and a token stops working when its user
/// stops being an admin.
pub async fn create_admin_token(
    State(st): State<AppState>,
    Path(user_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: NewToken = read_json(request, &st.limits).await?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad_param(
            "name",
            "name must be 1 to 128 characters",
        ));
    }
    let user = st
        .store
        .user(&user_id)
        .await
        .map_err(db_error)?
        .ok_or(ApiError::NoSuch("user"))?;
    if user.role != "admin" {
        return Err(ApiError::bad_param(
            "user_id",
            "only admins hold management API tokens",
        ));
    }
    let secret = st.key_hasher.generate_with(crate::keys::ADMIN_TOKEN_PREFIX);
    let row = st
        .store
        .create_admin_token(&user.id, name, &secret.prefix, &secret.hash, now_ms(), &who)
        .await
        .map_err(db_error)?;
    let mut v = serde_json::to_value(&row).unwrap_or_else(|_| json!({}));
    v["token"] = json!(secret.secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `DELETE /admin/v1/tokens/{id}`
pub async fn revoke_admin_token(
    State(st): State<AppState>,
    headers: HeaderMap,
    name: Option<axum::Extension<AdminName>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = actor(&headers, name.as_ref().map(|e| &e.0));
    if st
        .store
        .revoke_admin_token(&id, now_ms(), &who)
        .await
        .map_err(db_error)?
    {
        Ok(Json(json!({"id": id, "revoked": true})))
    } else {
        Err(ApiError::NoSuch("token"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    scope_type: String,
    scope_id: String,
    amount_usd: f64,
    period: String,
    #[serde(default = "default_thresholds")]
    thresholds: Vec<u32>,
}

fn default_thresholds() -> Vec<u32> {
    vec![50, 80, 100]
}

/// A budget as the API shows it, with this period's spending.
async fn budget_json(
    st: &AppState,
    b: &crate::store::budgets::BudgetRow,
) -> Result<Value, ApiError> {
    use crate::meter::budget::{Period, rfc3339};
    let now = now_ms();
    let period = Period::parse(&b.period).unwrap_or(Period::Total);
    let start = period.start(now);
    let usage = st
        .store
        .period_usage(&b.id, start)
        .await
        .map_err(db_error)?;
    let thresholds: Value = serde_json::from_str(&b.thresholds).unwrap_or_else(|_| json!([]));
    Ok(json!({
        "id": b.id, "object": "budget", "scope_type": b.scope_type, "scope_id": b.scope_id,
        "amount_usd": b.amount_micros as f64 / 1e6, "period": b.period, "thresholds": thresholds,
        "period_start": rfc3339(start), "resets_at": period.reset_at(now).map(rfc3339),
        "spent_usd": usage.spent_micros as f64 / 1e6,
        "reserved_usd": usage.leased_micros as f64 / 1e6,
    }))
}

async fn scope_exists(st: &AppState, scope_type: &str, id: &str) -> Result<bool, ApiError> {
    Ok(match scope_type {
        "key" => st.store.key(id).await.map_err(db_error)?.is_some(),
        "team" => st.store.team(id).await.map_err(db_error)?.is_some(),
        "user" => st.store.user_exists(id).await.map_err(db_error)?,
        "project" => st
            .store
            .all_projects()
            .await
            .map_err(db_error)?
            .iter()
            .any(|(p, _)| p == id),
        _ => false,
    })
}

/// `PUT /admin/v1/budgets`: sets the budget of a key, project, team or user (hard limit
/// per period, alert thresholds in percent). Takes effect at once on this instance and
/// within a second on the others.
pub async fn put_budget(
    State(st): State<AppState>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    use crate::store::budgets::SCOPES;
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: BudgetBody = read_json(request, &st.limits).await?;
    if !SCOPES.contains(&body.scope_type.as_str()) {
        return Err(ApiError::bad_param(
            "scope_type",
            "scope_type is key, project, team or user",
        ));
    }
    let (micros, thresholds) =
        crate::meter::budget::check_budget(body.amount_usd, &body.period, &body.thresholds)
            .map_err(|(param, why)| ApiError::bad_param(param, why))?;
    if body.scope_id.len() > 64 || !scope_exists(&st, &body.scope_type, &body.scope_id).await? {
        return Err(ApiError::bad_param(
            "scope_id",
            format!("no such {}", body.scope_type),
        ));
    }
    let row = st
        .store
        .upsert_budget(
            &body.scope_type,
            &body.scope_id,
            micros,
            &body.period,
            &thresholds,
            now_ms(),
            &who,
        )
        .await
        .map_err(db_error)?;
    st.budgets.reload().await;
    Ok(Json(budget_json(&st, &row).await?))
}

/// `GET /admin/v1/budgets`: every budget with this period's spending.
pub async fn list_budgets(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = st.store.list_budgets().await.map_err(db_error)?;
    let mut data = Vec::with_capacity(rows.len());
    for r in &rows {
        data.push(budget_json(&st, r).await?);
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `DELETE /admin/v1/budgets/{scope_type}/{scope_id}`
pub async fn delete_budget(
    State(st): State<AppState>,
    headers: HeaderMap,
    name: Option<axum::Extension<AdminName>>,
    Path((scope_type, scope_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let who = actor(&headers, name.as_ref().map(|e| &e.0));
    if st
        .store
        .delete_budget(&scope_type, &scope_id, now_ms(), &who)
        .await
        .map_err(db_error)?
    {
        st.budgets.reload().await;
        Ok(Json(
            json!({"scope_type": scope_type, "scope_id": scope_id, "deleted": true}),
        ))
    } else {
        Err(ApiError::NoSuch("budget"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    scope_type: String,
    scope_id: String,
    rpm: Option<i64>,
    tpm: Option<i64>,
    max_parallel: Option<i64>,
}

/// `PUT /admin/v1/rate_limits`: requests and tokens per minute and requests in flight for
/// a key, project, team or user (all null removes them).
pub async fn put_rate_limits(
    State(st): State<AppState>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let who = actor(request.headers(), request.extensions().get::<AdminName>());
    let body: RateLimitBody = read_json(request, &st.limits).await?;
    if !crate::store::budgets::SCOPES.contains(&body.scope_type.as_str()) {
        return Err(ApiError::bad_param(
            "scope_type",
            "scope_type is key, project, team or user",
        ));
    }
    for (param, v) in [
        ("rpm", body.rpm),
        ("tpm", body.tpm),
        ("max_parallel", body.max_parallel),
    ] {
        if v.is_some_and(|v| v <= 0) {
            return Err(ApiError::bad_param(
                param,
                format!("{param} must be positive"),
            ));
        }
    }
    if body.scope_id.len() > 64 || !scope_exists(&st, &body.scope_type, &body.scope_id).await? {
        return Err(ApiError::bad_param(
            "scope_id",
            format!("no such {}", body.scope_type),
        ));
    }
    let row = crate::store::budgets::RateLimitRow {
        scope_type: body.scope_type,
        scope_id: body.scope_id,
        rpm: body.rpm,
        tpm: body.tpm,
        max_parallel: body.max_parallel,
        updated_at: now_ms(),
    };
    st.store
        .set_rate_limits(&row, &who)
        .await
        .map_err(db_error)?;
    st.rate_limits.reload().await;
    Ok(Json(json!(row)))
}

/// `GET /admin/v1/rate_limits`
pub async fn list_rate_limits(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = st.store.list_rate_limits().await.map_err(db_error)?;
    Ok(Json(json!({"object": "list", "data": rows})))
}

/// A time in a query: Unix seconds, or a UTC date `YYYY-MM-DD`, or an RFC 3339 instant
/// `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_instant(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return secs.checked_mul(1000);
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = crate::meter::budget::day_number(y, m, day) * 86_400_000;
    if let Some(t) = time {
        let mut parts = t.split(':').map(|p| p.parse::<i64>().ok());
        let (h, mi, sec) = (parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        ms += ((h * 60 + mi) * 60 + sec) * 1000;
    }
    Some(ms)
}

/// `GET /admin/v1/spend?group_by=team|project|key|user|model|provider|deployment&from=&to=`:
/// requests, tokens and cost from the ledger, grouped; the range defaults to this month.
pub async fn spend(
    State(st): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    use crate::meter::budget::{Period, rfc3339};
    let mut group_by = "team".to_owned();
    let now = now_ms();
    let mut from = Period::Monthly.start(now);
    let mut to = now + 1;
    for (k, v) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "group_by" => group_by = v.into_owned(),
            "from" => {
                from = parse_instant(&v).ok_or_else(|| {
                    ApiError::bad_param(
                        "from",
                        "from is Unix seconds, YYYY-MM-DD or an RFC 3339 time",
                    )
                })?;
            }
            "to" => {
                to = parse_instant(&v).ok_or_else(|| {
                    ApiError::bad_param("to", "to is Unix seconds, YYYY-MM-DD or an RFC 3339 time")
                })?;
            }
            _ => {
                return Err(ApiError::bad_request(
                    "unknown parameter; use group_by, from and to",
                ));
            }
        }
    }
    let column = crate::store::budgets::spend_column(&group_by).ok_or_else(|| {
        ApiError::bad_param(
            "group_by",
            "group_by is team, project, key, user, model, provider or deployment",
        )
    })?;
    if to <= from {
        return Err(ApiError::bad_param("to", "to must be after from"));
    }
    let rows = st
        .store
        .spend_grouped(column, from, to)
        .await
        .map_err(db_error)?;
    // Names for ids, where the group has them.
    let names: std::collections::HashMap<String, String> = match group_by.as_str() {
        "team" => st
            .store
            .list_teams()
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect(),
        "project" => st
            .store
            .all_projects()
            .await
            .map_err(db_error)?
            .into_iter()
            .collect(),
        "key" => st
            .store
            .list_keys()
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|k| (k.id, k.name))
            .collect(),
        "user" => st
            .store
            .list_users()
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|u| (u.id, u.username))
            .collect(),
        _ => std::collections::HashMap::new(),
    };
    let usd = |m: i64| m as f64 / 1e6;
    let mut total = crate::store::budgets::SpendRow {
        group_id: None,
        requests: 0,
        errors: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        cost_micros: 0,
    };
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            total.requests += r.requests;
            total.errors += r.errors;
            total.prompt_tokens += r.prompt_tokens;
            total.completion_tokens += r.completion_tokens;
            total.cached_tokens += r.cached_tokens;
            total.cost_micros += r.cost_micros;
            json!({
                "group": r.group_id,
                "name": r.group_id.as_ref().and_then(|g| names.get(g)),
                "requests": r.requests, "errors": r.errors,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "cached_tokens": r.cached_tokens, "cost_usd": usd(r.cost_micros),
                "cost_micros": r.cost_micros,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "group_by": group_by, "from": rfc3339(from), "to": rfc3339(to),
        "data": data,
        "total": {"requests": total.requests, "errors": total.errors,
            "prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
            "cached_tokens": total.cached_tokens, "cost_usd": usd(total.cost_micros),
            "cost_micros": total.cost_micros},
    })))
}
