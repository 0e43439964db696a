//! Spend control before a request goes upstream: its worst-case cost (an upper bound of
//! its prompt's tokens plus the most it may generate, at the dearest price among the
//! deployments that could serve it, fallbacks included) is held against every budget of
//! its key, project, team and user. The hold rides on the request's meter and is settled
//! to the real cost when the ledger row is recorded.

use serde_json::Value;

use crate::auth::Principal;
use crate::config::Unpriced;
use crate::error::ApiError;
use crate::meter::{MeterGuard, Usage};
use crate::state::AppState;

/// Tokens an image can cost at most on any provider (large, high-detail images).
const IMAGE_TOKENS: i64 = 6_500;

/// An upper bound of the tokens a JSON value's text can become: a token is at least one
/// byte of text, plus a few tokens of framing per element; images count a fixed maximum.
pub fn token_bound(v: &Value) -> i64 {
    match v {
        Value::String(s) if s.starts_with("data:") => IMAGE_TOKENS,
        Value::String(s) => i64::try_from(s.len()).unwrap_or(i64::MAX),
        Value::Array(a) => a.iter().map(token_bound).fold(4, i64::saturating_add),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                let image_url = (k == "image_url" || k == "url") && !matches!(v, Value::Object(_));
                if image_url {
                    IMAGE_TOKENS
                } else {
                    token_bound(v).saturating_add(i64::try_from(k.len()).unwrap_or(0))
                }
            })
            .fold(4, i64::saturating_add),
        _ => 2,
    }
}

/// The output bound the client set, if any.
pub fn requested_max_output(rest: &serde_json::Map<String, Value>) -> Option<i64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| rest.get(*k).and_then(Value::as_i64))
        .filter(|n| *n > 0)
}

/// Every group a request for `target` may end up on: the group and its fallbacks,
/// transitively.
fn reachable_groups(st: &AppState, target: &str) -> Vec<String> {
    let mut out = vec![target.to_owned()];
    let mut i = 0;
    while i < out.len() && out.len() < 32 {
        for f in st.models.fallback_targets(&out[i]) {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        i += 1;
    }
    out
}

/// The most this request can cost, in micro-dollars; refuses an unpriced model when the
/// configuration says so.
pub fn worst_case_micros(
    st: &AppState,
    target: &str,
    prompt_bound: i64,
    max_output: Option<i64>,
) -> Result<i64, ApiError> {
    let mut worst = 0i64;
    for group in reachable_groups(st, target) {
        for d in st.models.deployments(&group) {
            let Some(price) = st.prices.lookup(&d.model, &d.upstream_model) else {
                if st.config.spend.unpriced == Unpriced::Refuse {
                    return Err(ApiError::bad_param(
                        "model",
                        format!(
                            "model {:?} has no price and this gateway refuses unpriced models",
                            d.model
                        ),
                    ));
                }
                continue;
            };
            let out = max_output
                .or_else(|| st.prices.max_output_tokens(&d.model, &d.upstream_model))
                .unwrap_or(st.config.spend.default_max_output_tokens);
            let cost = price.cost_micros(&Usage {
                prompt_tokens: prompt_bound,
                completion_tokens: out,
                cached_tokens: 0,
            });
            worst = worst.max(cost);
        }
    }
    Ok(worst)
}

/// Counts the request in the rate limits of its key, project, team and owner, or refuses
/// it (429 with `Retry-After`); the permit goes on the meter.
pub async fn admit(
    st: &AppState,
    principal: &Principal,
    meter: &mut Option<MeterGuard>,
    estimated_tokens: i64,
) -> Result<(), ApiError> {
    let Some(key) = principal.key() else {
        return Ok(());
    };
    let scopes = [
        ("key", Some(key.id.as_str())),
        ("project", key.project_id.as_deref()),
        ("team", Some(key.team_id.as_str())),
        ("user", key.user_id.as_deref()),
    ];
    match st.rate_limits.admit(&scopes, estimated_tokens).await {
        Ok(permit) => {
            if let Some(m) = meter.as_mut() {
                m.permit = permit;
            }
            Ok(())
        }
        Err(l) => Err(ApiError::RateLimited {
            message: l.to_string(),
            retry_after: l.retry_after_s,
        }),
    }
}

/// `x-ratelimit-*` headers (OpenAI's names) for the key's own limits.
pub fn ratelimit_headers(
    resp: &mut axum::response::Response,
    h: Option<crate::meter::limits::Headroom>,
) {
    let Some(h) = h else { return };
    let headers = resp.headers_mut();
    let mut put = |name: &'static str, v: Option<i64>| {
        if let Some(v) = v
            && let Ok(v) = axum::http::HeaderValue::from_str(&v.to_string())
        {
            headers.insert(name, v);
        }
    };
    put("x-ratelimit-limit-requests", h.limit_requests);
    put("x-ratelimit-remaining-requests", h.remaining_requests);
    put("x-ratelimit-limit-tokens", h.limit_tokens);
    put("x-ratelimit-remaining-tokens", h.remaining_tokens);
    if (h.limit_requests.is_some() || h.limit_tokens.is_some())
        && let Ok(v) = axum::http::HeaderValue::from_str(&format!("{}s", h.reset_s))
    {
        headers.insert("x-ratelimit-reset-requests", v.clone());
        headers.insert("x-ratelimit-reset-tokens", v);
    }
}

/// Refuses an unpriced model when so configured, then holds the request's worst case
/// (computed only when a budget applies) against the budgets of its key, project, team
/// and owner; the hold goes on the meter.
pub async fn check_and_hold(
    st: &AppState,
    principal: &Principal,
    meter: &mut Option<MeterGuard>,
    target: &str,
    prompt_bound: impl FnOnce() -> i64,
    max_output: Option<i64>,
) -> Result<(), ApiError> {
    let budgets = match principal.key() {
        Some(key) => st.budgets.applicable(&[
            ("key", Some(key.id.as_str())),
            ("project", key.project_id.as_deref()),
            ("team", Some(key.team_id.as_str())),
            ("user", key.user_id.as_deref()),
        ]),
        // The master key is the operator's: no budget applies.
        None => Vec::new(),
    };
    if budgets.is_empty() {
        if st.config.spend.unpriced == Unpriced::Refuse {
            worst_case_micros(st, target, 0, Some(0))?;
        }
        return Ok(());
    }
    let worst = worst_case_micros(st, target, prompt_bound(), max_output)?;
    match st.budgets.hold(&budgets, worst).await {
        Ok(hold) => {
            if let Some(m) = meter.as_mut() {
                m.hold = Some(hold);
            }
            Ok(())
        }
        Err(e) => Err(ApiError::BudgetExceeded(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_prompt_bound_is_never_below_the_text() {
        let text = "word ".repeat(200);
        let msgs = json!([{"role": "user", "content": text}]);
        assert!(token_bound(&msgs) >= 1000);
        let image = json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(1_000_000))}}
        ]}]);
        let b = token_bound(&image);
        assert!((IMAGE_TOKENS..IMAGE_TOKENS + 100).contains(&b), "{b}");
    }

    #[test]
    fn max_output_comes_from_the_request() {
        let rest = json!({"max_tokens": 50, "temperature": 0})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(requested_max_output(&rest), Some(50));
        let none = json!({"temperature": 0}).as_object().unwrap().clone();
        assert_eq!(requested_max_output(&none), None);
    }
}
