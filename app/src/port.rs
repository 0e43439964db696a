//! The console's port: what the pages need from the gateway, as a trait `app` defines and
//! `server` implements. Keeps the crate dependency one-way (`server` → `app`).

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;

use crate::dto::{ModelGroupDto, OverviewDto, SessionUser};

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
    /// Something failed inside; the cause is logged on the server.
    Internal,
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::BadCredentials => f.write_str("invalid user name or password"),
            ConsoleError::Throttled => f.write_str("too many attempts, try again in a minute"),
            ConsoleError::Forbidden(m) | ConsoleError::Invalid(m) => f.write_str(m),
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
}

/// How the port travels through Leptos context.
pub type SharedPort = Arc<dyn ConsolePort>;
