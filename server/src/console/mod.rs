//! The console's server side: the [`ConsolePort`] implementation (local sign-in with
//! argon2id, server-side sessions, first-run setup, the Overview's figures) and the Leptos
//! routes with the gate that keeps signed-out visitors on the sign-in page.

mod manage;
pub mod password;
pub mod routes;
mod spend;
pub mod sso;
mod throttle;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::dto::{
    KeyDto, ModelGroupDto, ModelSummary, MyKeysDto, OverviewDto, SecretDto, SessionUser, SpendDto,
    TeamRef, TeamsDto, UsersDto,
};
use app::port::{BudgetForm, ConsoleError, ConsolePort, KeyLimitsForm, KeyRequestForm, SetCookie};
use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::access::KeyService;
use crate::auth::Authenticator;
use crate::meter::PriceBook;
use crate::route::ModelGroups;
use crate::store::Store;
use throttle::Throttle;

/// The break-glass admin's user name.
pub const LOCAL_ADMIN: &str = "admin";
pub const MIN_PASSWORD_LEN: usize = 12;
/// A session ends after this long without use…
const IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// …and in any case this long after sign-in.
const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY_MS: i64 = 60_000;

pub struct Console {
    store: Store,
    models: Arc<ModelGroups>,
    prices: Arc<PriceBook>,
    auth: Arc<Authenticator>,
    keys: KeyService,
    budgets: Arc<crate::meter::budget::Budgets>,
    pub(crate) sso: Option<Arc<sso::Sso>>,
    secure_cookies: bool,
    throttle: Throttle,
    /// SSO sign-ins started per client address (each one stores an attempt).
    pub(crate) sso_starts: Throttle,
}

impl Console {
    pub fn new(
        state: &crate::state::AppState,
        sso: Option<Arc<sso::Sso>>,
        secure_cookies: bool,
    ) -> Self {
        Console {
            store: state.store.clone(),
            models: state.models.clone(),
            prices: state.prices.clone(),
            auth: state.auth.clone(),
            keys: state.key_service(),
            budgets: state.budgets.clone(),
            sso,
            secure_cookies,
            throttle: Throttle::new(5, Duration::from_secs(60)),
            sso_starts: Throttle::new(30, Duration::from_secs(60)),
        }
    }

    /// Whether `presented` is the anti-forgery token of the session these headers carry.
    pub fn csrf_matches(&self, headers: &HeaderMap, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        match self.session_token(headers) {
            Some(token) => {
                let want = csrf_for(&token);
                presented.len() == want.len()
                    && bool::from(presented.as_bytes().ct_eq(want.as_bytes()))
            }
            None => false,
        }
    }

    /// Opens a session for a user who just proved who they are: a new random id (no
    /// fixation), the old cookie's session, if any, ended. Returns the cookie.
    pub(crate) async fn open_session(
        &self,
        headers: &HeaderMap,
        user_id: &str,
    ) -> Result<SetCookie, ConsoleError> {
        if let Some(old) = self.session_token(headers) {
            let _ = self.store.delete_session(&hash_token(&old)).await;
        }
        let token = random_token();
        let now = now_ms();
        let expires = now + i64::try_from(ABSOLUTE_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        self.store
            .create_session(&hash_token(&token), user_id, now, expires)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not create a session");
                ConsoleError::Internal
            })?;
        Ok(self.cookie(&token, Some(ABSOLUTE_TIMEOUT)))
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// `__Host-` needs `Secure`, which browsers only keep over https.
    pub fn cookie_name(&self) -> &'static str {
        cookie_name(self.secure_cookies)
    }

    fn cookie(&self, value: &str, max_age: Option<Duration>) -> String {
        session_cookie(self.secure_cookies, value, max_age)
    }

    fn session_token(&self, headers: &HeaderMap) -> Option<String> {
        token_cookie(headers, self.cookie_name())
    }
}

/// The value of cookie `name` if it is one of our 256-bit hex tokens (anything else is
/// ignored before it reaches a hash or a query).
pub(crate) fn token_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-gateway_session"
    } else {
        "gateway_session"
    }
}

/// The session cookie: never readable by scripts, not sent on cross-site subrequests,
/// `Secure` with the `__Host-` prefix when the console is served over https.
fn session_cookie(secure: bool, value: &str, max_age: Option<Duration>) -> String {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax",
        cookie_name(secure)
    );
    if secure {
        c.push_str("; Secure");
    }
    match max_age {
        Some(d) => c.push_str(&format!("; Max-Age={}", d.as_secs())),
        None => c.push_str("; Max-Age=0"),
    }
    c
}

/// 256 random bits, hex.
pub(crate) fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

/// The session's anti-forgery token: derived from the session's secret id, so it needs no
/// storage and cannot be known without the cookie (which scripts cannot read).
fn csrf_for(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"gateway csrf v1\0");
    h.update(session_token.as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Sessions are stored by the hash of their id: a database read never yields a cookie.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn client_ip(headers: &HeaderMap) -> String {
    // Set by the server from the TCP peer, never from client headers.
    headers
        .get(routes::PEER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

#[async_trait]
impl ConsolePort for Console {
    async fn current_user(&self, headers: &HeaderMap) -> Option<SessionUser> {
        let token = self.session_token(headers)?;
        let id_hash = hash_token(&token);
        let now = now_ms();
        let idle = i64::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        match self.store.session_user(&id_hash, now, idle).await {
            Ok(Some((user, last_seen))) => {
                if now - last_seen > TOUCH_EVERY_MS
                    && let Err(e) = self.store.touch_session(&id_hash, now).await
                {
                    tracing::warn!(error = %e, "could not refresh a session");
                }
                let teams = match self.store.memberships(&user.id).await {
                    Ok(m) => m
                        .into_iter()
                        .map(|m| TeamRef {
                            id: m.team_id,
                            name: m.team_name,
                            role: m.role,
                        })
                        .collect(),
                    Err(e) => {
                        tracing::error!(error = %e, "membership lookup failed");
                        return None;
                    }
                };
                Some(SessionUser {
                    id: user.id,
                    username: user.username,
                    role: user.role,
                    csrf: csrf_for(&token),
                    teams,
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                None
            }
        }
    }

    async fn sign_in(
        &self,
        headers: &HeaderMap,
        username: &str,
        password: &str,
    ) -> Result<SetCookie, ConsoleError> {
        let throttle_key = format!("{}|{}", username.to_lowercase(), client_ip(headers));
        if !self.throttle.allow(&throttle_key) {
            tracing::warn!(user = %username, "sign-in throttled");
            return Err(ConsoleError::Throttled);
        }
        if username.len() > 128 || password.len() > 1024 {
            return Err(ConsoleError::BadCredentials);
        }
        let user = self.store.user_by_username(username).await.map_err(|e| {
            tracing::error!(error = %e, "user lookup failed");
            ConsoleError::Internal
        })?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        // Unknown users cost the same argon2 work as known ones.
        let ok = password::verify(password.to_owned(), stored).await;
        let Some(user) = user.filter(|_| ok) else {
            self.throttle.fail(&throttle_key);
            tracing::info!(user = %username, "sign-in refused");
            return Err(ConsoleError::BadCredentials);
        };
        self.throttle.clear(&throttle_key);
        let cookie = self.open_session(headers, &user.id).await?;
        tracing::info!(user = %user.username, "signed in");
        Ok(cookie)
    }

    async fn sign_out(&self, headers: &HeaderMap) -> SetCookie {
        if let Some(token) = self.session_token(headers)
            && let Err(e) = self.store.delete_session(&hash_token(&token)).await
        {
            tracing::error!(error = %e, "could not end a session");
        }
        self.cookie("", None)
    }

    async fn setup_needed(&self) -> bool {
        !self.store.admin_exists().await.unwrap_or(true)
    }

    async fn setup_admin(&self, master_key: &str, password: &str) -> Result<(), ConsoleError> {
        if !self.throttle.allow("setup") {
            return Err(ConsoleError::Throttled);
        }
        if !self.auth.is_master(master_key) {
            self.throttle.fail("setup");
            return Err(ConsoleError::Forbidden("wrong master key".into()));
        }
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(ConsoleError::Invalid(format!(
                "the password needs at least {MIN_PASSWORD_LEN} characters"
            )));
        }
        let hash = password::hash(password.to_owned())
            .await
            .ok_or(ConsoleError::Internal)?;
        match self
            .store
            .create_first_admin(LOCAL_ADMIN, &hash, now_ms())
            .await
        {
            Ok(true) => {
                tracing::info!("local admin created through first-run setup");
                Ok(())
            }
            Ok(false) => Err(ConsoleError::Forbidden("an admin exists already".into())),
            Err(e) => {
                tracing::error!(error = %e, "first-run setup failed");
                Err(ConsoleError::Internal)
            }
        }
    }

    async fn models(&self, _user: &SessionUser) -> Result<Vec<ModelGroupDto>, ConsoleError> {
        Ok(crate::route::view::group_views(&self.models, &self.prices))
    }

    async fn overview(&self, user: &SessionUser) -> Result<OverviewDto, ConsoleError> {
        let day_start = now_ms() - now_ms().rem_euclid(86_400_000);
        // Admins, finance and auditors see the organisation; everyone else the teams they
        // lead and their own requests.
        let org_wide = matches!(user.role.as_str(), "admin" | "finance" | "auditor");
        let totals = if org_wide {
            self.store.usage_since(day_start).await
        } else {
            let led: Vec<String> = user
                .teams
                .iter()
                .filter(|t| t.role == "lead")
                .map(|t| t.id.clone())
                .collect();
            self.store
                .usage_since_scoped(day_start, &led, &user.id)
                .await
        };
        let totals = totals.map_err(|e| {
            tracing::error!(error = %e, "overview query failed");
            ConsoleError::Internal
        })?;
        let models = self
            .models
            .groups()
            .map(|(name, deps)| {
                let mut providers: Vec<String> =
                    deps.iter().map(|d| d.kind.as_str().to_owned()).collect();
                providers.dedup();
                ModelSummary {
                    name: name.clone(),
                    providers,
                    deployments: deps.len(),
                }
            })
            .collect();
        Ok(OverviewDto {
            models,
            requests_today: totals.requests,
            errors_today: totals.errors,
            prompt_tokens_today: totals.prompt_tokens,
            completion_tokens_today: totals.completion_tokens,
        })
    }

    fn sso_label(&self) -> Option<String> {
        self.sso.as_ref().map(|s| s.label().to_owned())
    }

    async fn my_keys(&self, user: &SessionUser) -> Result<MyKeysDto, ConsoleError> {
        self.my_keys_impl(user).await
    }

    async fn request_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        req: KeyRequestForm,
    ) -> Result<KeyDto, ConsoleError> {
        self.request_key_impl(headers, user, req).await
    }

    async fn reveal_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
    ) -> Result<SecretDto, ConsoleError> {
        self.reveal_impl(headers, user, key_id).await
    }

    async fn rotate_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
    ) -> Result<SecretDto, ConsoleError> {
        self.rotate_impl(headers, user, key_id).await
    }

    async fn revoke_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
    ) -> Result<KeyDto, ConsoleError> {
        self.revoke_impl(headers, user, key_id).await
    }

    async fn decide_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<KeyDto, ConsoleError> {
        self.decide_impl(headers, user, key_id, approve, reason)
            .await
    }

    async fn set_key_limits(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
        limits: KeyLimitsForm,
    ) -> Result<KeyDto, ConsoleError> {
        self.set_limits_impl(headers, user, key_id, limits).await
    }

    async fn teams(&self, user: &SessionUser) -> Result<TeamsDto, ConsoleError> {
        self.teams_impl(user).await
    }

    async fn users(&self, user: &SessionUser) -> Result<UsersDto, ConsoleError> {
        self.users_impl(user).await
    }

    async fn set_user_role(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        user_id: &str,
        role: &str,
    ) -> Result<(), ConsoleError> {
        self.set_role_impl(headers, user, user_id, role).await
    }

    async fn set_membership(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        team_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<(), ConsoleError> {
        self.set_membership_impl(headers, user, team_id, user_id, role)
            .await
    }

    async fn create_team(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        name: &str,
    ) -> Result<(), ConsoleError> {
        self.create_team_impl(headers, user, name).await
    }

    async fn spend(&self, user: &SessionUser) -> Result<SpendDto, ConsoleError> {
        self.spend_impl(user).await
    }

    async fn set_budget(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        form: BudgetForm,
    ) -> Result<(), ConsoleError> {
        self.set_budget_impl(headers, user, form).await
    }
}

/// Sets the local admin's password from `GATEWAY_ADMIN_PASSWORD` at start-up, rehashing
/// only when it changed. Ends the admin's sessions when the password changes.
pub async fn ensure_admin_password(store: &Store, password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        anyhow::bail!("GATEWAY_ADMIN_PASSWORD must have at least {MIN_PASSWORD_LEN} characters");
    }
    let existing = store.user_by_username(LOCAL_ADMIN).await?;
    if let Some(u) = &existing
        && u.role == "admin"
        && password::verify(password.to_owned(), u.password_hash.clone()).await
    {
        return Ok(());
    }
    let hash = password::hash(password.to_owned())
        .await
        .ok_or_else(|| anyhow::anyhow!("password hashing failed"))?;
    let id = store
        .upsert_local_admin(LOCAL_ADMIN, &hash, now_ms())
        .await?;
    store.delete_user_sessions(&id).await?;
    tracing::info!("local admin password set from GATEWAY_ADMIN_PASSWORD");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_secure_behind_https() {
        let plain = session_cookie(false, "abc", Some(Duration::from_secs(60)));
        assert_eq!(
            plain,
            "gateway_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        let https = session_cookie(true, "abc", None);
        assert_eq!(
            https,
            "__Host-gateway_session=abc; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0"
        );
    }
}
