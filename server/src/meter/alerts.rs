//! Budget alerts: a Slack-compatible JSON message (`{"text": …}`) posted to a webhook when
//! a budget's period crosses one of its thresholds (each fires once per period; the
//! database decides which instance sends it). Sent off the request path, with a timeout.

use std::time::Duration;

use super::budget::{BudgetDef, rfc3339};

#[derive(Clone)]
pub struct Alerts {
    url: url::Url,
    http: reqwest::Client,
}

impl Alerts {
    pub fn new(url: url::Url) -> anyhow::Result<Alerts> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Alerts { url, http })
    }

    /// The message for a threshold crossed.
    pub fn message(
        def: &BudgetDef,
        threshold: u32,
        spent: i64,
        period_start: i64,
    ) -> serde_json::Value {
        let text = format!(
            ":warning: Budget alert: the {} budget of {} reached {}% (${} of ${}, {} period from {}).",
            def.scope_type,
            def.scope_id,
            threshold,
            super::micros_to_usd_string(spent),
            super::micros_to_usd_string(def.amount_micros),
            def.period.as_str(),
            rfc3339(period_start),
        );
        serde_json::json!({
            "text": text,
            "budget": {
                "id": def.id, "scope_type": def.scope_type, "scope_id": def.scope_id,
                "amount_usd": def.amount_micros as f64 / 1e6, "period": def.period.as_str(),
                "threshold_percent": threshold, "spent_usd": spent as f64 / 1e6,
                "period_start": rfc3339(period_start),
            }
        })
    }

    pub fn send(&self, def: &BudgetDef, threshold: u32, spent: i64, period_start: i64) {
        let body = Self::message(def, threshold, spent, period_start);
        let (http, url) = (self.http.clone(), self.url.clone());
        tokio::spawn(async move {
            match http.post(url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "budget alert webhook refused the message")
                }
                Err(e) => tracing::warn!(error = %e, "budget alert webhook unreachable"),
            }
        });
    }
}
