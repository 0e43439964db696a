//! The console's port: what the pages need from the gateway, as a trait `app` defines and
//! `server` implements. Keeps the crate dependency one-way (`server` → `app`).

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;

use crate::dto::{
    KeyDto, ModelGroupDto, MyKeysDto, OverviewDto, SecretDto, SessionUser, SpendDto, TeamsDto,
    UsersDto,
};

/// Why a console operation failed, in words safe to show a signed-out visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleError {
    /// Wrong user name or password (never says which).
    BadCredentials,
    /// Too many attempts; try again later.
    Throttled,
    /// The request is not allowed for this principal or in this state.
    Forbidden(String),
    /// Input that cannot be accepted, with the reason.
    Invalid(String),
    /// No such object, or not one this user may see.
    NotFound(String),
    /// The object's state does not allow the change.
    Conflict(String),
    /// Something failed inside; the cause is logged on the server.
    Internal,
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::BadCredentials => f.write_str("invalid user name or password"),
            ConsoleError::Throttled => f.write_str("too many attempts, try again in a minute"),
            ConsoleError::Forbidden(m)
            | ConsoleError::Invalid(m)
            | ConsoleError::Conflict(m)
            | ConsoleError::NotFound(m) => f.write_str(m),
            ConsoleError::Internal => f.write_str("internal error"),
        }
    }
}

/// A `Set-Cookie` header value the console must send back.
pub type SetCookie = String;

#[async_trait]
pub trait ConsolePort: Send + Sync + 'static {
    /// The signed-in user for these request headers (session cookie), if any.
    async fn current_user(&self, headers: &HeaderMap) -> Option<SessionUser>;
    /// Checks a local password and opens a session; returns the session cookie.
    async fn sign_in(
        &self,
        headers: &HeaderMap,
        username: &str,
        password: &str,
    ) -> Result<SetCookie, ConsoleError>;
    /// Ends the session named by the headers; returns the clearing cookie.
    async fn sign_out(&self, headers: &HeaderMap) -> SetCookie;
    /// Whether the local admin still has to be created through the setup form.
    async fn setup_needed(&self) -> bool;
    /// First-run setup: proves the operator with the master key, sets the admin password.
    async fn setup_admin(&self, master_key: &str, password: &str) -> Result<(), ConsoleError>;
    /// Figures for the Overview page.
    async fn overview(&self, user: &SessionUser) -> Result<OverviewDto, ConsoleError>;
    /// Model groups, their deployments, live health and prices (the Models page).
    async fn models(&self, user: &SessionUser) -> Result<Vec<ModelGroupDto>, ConsoleError>;
    /// The label of the single sign-on button, when SSO is configured.
    fn sso_label(&self) -> Option<String>;

    /// The user's own keys and the teams they may request keys in.
    async fn my_keys(&self, user: &SessionUser) -> Result<MyKeysDto, ConsoleError>;
    async fn request_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        req: KeyRequestForm,
    ) -> Result<KeyDto, ConsoleError>;
    /// The owner's one look at an approved key's secret.
    async fn reveal_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
    ) -> Result<SecretDto, ConsoleError>;
    async fn rotate_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
    ) -> Result<SecretDto, ConsoleError>;
    async fn revoke_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
    ) -> Result<KeyDto, ConsoleError>;
    async fn decide_key(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<KeyDto, ConsoleError>;
    /// A lead sets a key's models and request limits.
    async fn set_key_limits(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        key_id: &str,
        limits: KeyLimitsForm,
    ) -> Result<KeyDto, ConsoleError>;
    /// The teams the user sees, with members, projects and (for leads) keys and requests.
    async fn teams(&self, user: &SessionUser) -> Result<TeamsDto, ConsoleError>;
    /// Users, their roles and teams (admins).
    async fn users(&self, user: &SessionUser) -> Result<UsersDto, ConsoleError>;
    async fn set_user_role(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        user_id: &str,
        role: &str,
    ) -> Result<(), ConsoleError>;
    /// Adds a user to a team as lead or member, or (`role` = "none") removes them.
    async fn set_membership(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        team_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<(), ConsoleError>;
    async fn create_team(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        name: &str,
    ) -> Result<(), ConsoleError>;
    /// Budgets against this period's spending, and this month's spend, as the user may see.
    async fn spend(&self, user: &SessionUser) -> Result<SpendDto, ConsoleError>;
    /// Finance and admins set any budget; leads those of their teams' keys and projects.
    async fn set_budget(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        form: BudgetForm,
    ) -> Result<(), ConsoleError>;
}

/// A budget as the form sends it; `amount_usd` empty removes the budget.
#[derive(Debug, Clone, Default)]
pub struct BudgetForm {
    /// `type:id`, e.g. `team:team_…`.
    pub scope: String,
    pub amount_usd: Option<f64>,
    pub period: String,
    pub thresholds: Vec<u32>,
}

/// A member's key request as the form sends it.
#[derive(Debug, Clone, Default)]
pub struct KeyRequestForm {
    pub team_id: String,
    pub name: String,
    pub project: Option<String>,
    pub models: Vec<String>,
    pub purpose: Option<String>,
}

/// A lead's limits for a key; an empty model list keeps the team's.
#[derive(Debug, Clone, Default)]
pub struct KeyLimitsForm {
    pub models: Vec<String>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
}

/// How the port travels through Leptos context.
pub type SharedPort = Arc<dyn ConsolePort>;
