//! Types that cross between the server and the console (serialised for server functions).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: String,
    pub username: String,
    /// Organisation role: admin, finance, auditor or member.
    pub role: String,
    /// The session's anti-forgery token: every state-changing form sends it back.
    pub csrf: String,
    pub teams: Vec<TeamRef>,
}

impl SessionUser {
    pub fn leads_any(&self) -> bool {
        self.role == "admin" || self.teams.iter().any(|t| t.role == "lead")
    }
}

/// A team as one of its people sees it: id, name and their role there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRef {
    pub id: String,
    pub name: String,
    pub role: String,
}

/// A virtual key as the console shows it (never a hash; the secret only in [`SecretDto`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDto {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub team_id: String,
    pub team: String,
    pub project: Option<String>,
    pub owner: Option<String>,
    /// requested, approved, active, rejected, revoked or expired.
    pub status: String,
    pub models: Vec<String>,
    pub purpose: Option<String>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub budget_usd: Option<f64>,
    pub budget_period: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub previous_valid_until: Option<i64>,
}

/// A secret shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDto {
    pub key_id: String,
    pub name: String,
    pub secret: String,
}

/// A team a member may request a key in, with the models they may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamOption {
    pub id: String,
    pub name: String,
    pub models: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MyKeysDto {
    pub csrf: String,
    pub keys: Vec<KeyDto>,
    pub teams: Vec<TeamOption>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDto {
    pub user_id: String,
    pub username: String,
    pub role: String,
}

/// One team on the Team page; `keys` (pending requests included) only for its leads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamPageDto {
    pub id: String,
    pub name: String,
    pub models: Vec<String>,
    /// The viewer's role here: lead, member, or admin.
    pub my_role: String,
    pub members: Vec<MemberDto>,
    pub projects: Vec<String>,
    pub keys: Vec<KeyDto>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamsDto {
    pub csrf: String,
    pub my_id: String,
    pub teams: Vec<TeamPageDto>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDto {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub role: String,
    pub teams: Vec<TeamRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersDto {
    pub csrf: String,
    pub my_id: String,
    pub users: Vec<UserDto>,
    /// Every team: (id, name).
    pub teams: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub name: String,
    pub providers: Vec<String>,
    pub deployments: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OverviewDto {
    pub models: Vec<ModelSummary>,
    pub requests_today: i64,
    pub errors_today: i64,
    pub prompt_tokens_today: i64,
    pub completion_tokens_today: i64,
}

/// One deployment as the Models page and `/admin/v1/deployments` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDto {
    pub id: String,
    pub provider: String,
    pub upstream_model: String,
    pub weight: u32,
    /// `up`, `cooling_down` or `at_capacity`.
    pub status: String,
    pub cooldown_remaining_ms: u64,
    pub in_flight: u32,
    pub latency_ms: u64,
    pub requests: u64,
    pub failures: u64,
    /// Failures per attempt since start, 0 to 1.
    pub error_rate: f64,
    /// USD per million tokens, when priced.
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub cached_input_per_mtok: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelGroupDto {
    pub model: String,
    pub strategy: String,
    pub fallbacks: Vec<String>,
    pub deployments: Vec<DeploymentDto>,
}

/// A budget with its current period's spending, as the Spend page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetView {
    pub scope_type: String,
    pub scope_id: String,
    /// The team, project, key or user name.
    pub scope_name: String,
    pub amount_usd: f64,
    pub period: String,
    pub spent_usd: f64,
    /// Spent of the amount, 0 to 100 (or more, if prices changed mid-period).
    pub percent: f64,
    pub thresholds: Vec<u32>,
    /// Thresholds already alerted this period.
    pub alerted: Vec<u32>,
    /// `YYYY-MM-DDTHH:MM:SSZ`, or none for a total budget.
    pub resets_at: Option<String>,
}

/// Spending of one group this month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendLine {
    pub name: String,
    pub requests: i64,
    pub tokens: i64,
    pub cost_usd: f64,
}

/// Something a budget can be set on, for the form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeOption {
    pub scope_type: String,
    pub scope_id: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendDto {
    pub csrf: String,
    /// Budgets the viewer sees (their own keys', their teams' for leads, all for
    /// finance and admins).
    pub budgets: Vec<BudgetView>,
    /// This month by team (finance and admins) or by the viewer's keys.
    pub lines: Vec<SpendLine>,
    /// Scopes the viewer may set budgets on (empty: none).
    pub settable: Vec<ScopeOption>,
}
