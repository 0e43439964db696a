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
