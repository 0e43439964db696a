//! Types that cross between the server and the console (serialised for server functions).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    pub username: String,
    pub role: String,
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
