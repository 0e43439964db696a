//! The routing state as people see it: one view serves the console's Models page and
//! `GET /admin/v1/deployments`.

use app::dto::{DeploymentDto, ModelGroupDto};

use super::ModelGroups;
use crate::config::Strategy;
use crate::meter::PriceBook;

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Weighted => "weighted",
        Strategy::LeastBusy => "least-busy",
        Strategy::LowestLatency => "lowest-latency",
        Strategy::LowestCost => "lowest-cost",
    }
}

fn usd(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

pub fn group_views(models: &ModelGroups, prices: &PriceBook) -> Vec<ModelGroupDto> {
    models
        .groups()
        .map(|(name, deps)| ModelGroupDto {
            model: name.clone(),
            strategy: models
                .strategy(name)
                .map_or("weighted", strategy_name)
                .to_owned(),
            fallbacks: models.fallback_targets(name),
            deployments: deps
                .iter()
                .map(|d| {
                    let h = d.health.snapshot();
                    let price = prices.lookup(&d.model, &d.upstream_model);
                    DeploymentDto {
                        id: d.id.clone(),
                        provider: d.kind.as_str().to_owned(),
                        upstream_model: d.upstream_model.clone(),
                        weight: d.weight,
                        status: h.status.to_owned(),
                        cooldown_remaining_ms: h.cooldown_remaining_ms,
                        in_flight: h.in_flight,
                        latency_ms: h.latency_ms_ewma,
                        requests: h.requests,
                        failures: h.failures,
                        error_rate: if h.requests == 0 {
                            0.0
                        } else {
                            h.failures as f64 / h.requests as f64
                        },
                        input_per_mtok: price.map(|p| usd(p.input)),
                        output_per_mtok: price.map(|p| usd(p.output)),
                        cached_input_per_mtok: price.map(|p| usd(p.cached_input)),
                    }
                })
                .collect(),
        })
        .collect()
}
