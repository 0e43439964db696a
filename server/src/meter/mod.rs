//! Metering: token usage, prices in integer micro-dollars, and the ledger row every
//! request leaves behind (written off the request path by [`ledger::LedgerWriter`]).

pub mod alerts;
pub mod budget;
pub mod catalog;
pub mod ledger;
pub mod limits;

use std::collections::HashMap;

use serde::Deserialize;

pub use ledger::{LedgerWriter, MeterGuard};

use crate::config::PriceConfig;

/// Tokens an upstream reported for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: i64,
}

impl Usage {
    /// From providers that report cache reads and writes apart from the other input
    /// tokens (Anthropic, Bedrock): OpenAI counts them all in `prompt_tokens`, with the
    /// cache reads as `cached_tokens`.
    pub fn with_cache_split(input: i64, output: i64, cache_read: i64, cache_write: i64) -> Usage {
        let cached = cache_read.max(0);
        Usage {
            prompt_tokens: input.max(0) + cached + cache_write.max(0),
            completion_tokens: output.max(0),
            cached_tokens: cached,
        }
    }
}

/// OpenAI's `usage` object, as far as metering reads it.
#[derive(Debug, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
    #[serde(default)]
    pub prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Debug, Deserialize)]
pub struct WirePromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<i64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Self {
        let clamp = |v: i64| v.max(0);
        Usage {
            prompt_tokens: clamp(w.prompt_tokens),
            completion_tokens: clamp(w.completion_tokens),
            cached_tokens: clamp(
                w.prompt_tokens_details
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0),
            ),
        }
    }
}

/// A model's prices in micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub output: i64,
    pub cached_input: i64,
}

impl Price {
    /// Cost in micro-dollars, rounded up: a request is never metered below what it cost.
    pub fn cost_micros(&self, u: &Usage) -> i64 {
        let cached = u.cached_tokens.min(u.prompt_tokens);
        let uncached = u.prompt_tokens - cached;
        let per_mtok = i128::from(uncached) * i128::from(self.input)
            + i128::from(cached) * i128::from(self.cached_input)
            + i128::from(u.completion_tokens) * i128::from(self.output);
        let micros = (per_mtok + 999_999) / 1_000_000;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }
}

fn usd_to_micros(usd: f64) -> i64 {
    // Validated finite and within 0..=1e6 by the config loader.
    (usd * 1_000_000.0).round() as i64
}

/// Prices by model name (public or upstream).
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    by_model: HashMap<String, Price>,
    /// Whether the shipped catalog prices what the configuration does not.
    use_catalog: bool,
}

impl PriceBook {
    pub fn from_config(prices: &[PriceConfig]) -> Self {
        let by_model = prices
            .iter()
            .map(|p| {
                let input = usd_to_micros(p.input_per_mtok);
                let price = Price {
                    input,
                    output: usd_to_micros(p.output_per_mtok),
                    cached_input: p.cached_input_per_mtok.map_or(input, usd_to_micros),
                };
                (p.model.clone(), price)
            })
            .collect();
        PriceBook {
            by_model,
            use_catalog: true,
        }
    }

    /// Only the configured prices (tests of the configuration's own behaviour).
    pub fn without_catalog(mut self) -> Self {
        self.use_catalog = false;
        self
    }

    /// The price for a request: the configuration's for the public model, else for the
    /// upstream model, else the shipped catalog's for either.
    pub fn lookup(&self, model: &str, upstream_model: &str) -> Option<Price> {
        self.by_model
            .get(model)
            .or_else(|| self.by_model.get(upstream_model))
            .copied()
            .or_else(|| self.catalog_entry(model, upstream_model).map(|c| c.price))
    }

    fn catalog_entry(&self, model: &str, upstream_model: &str) -> Option<catalog::CatalogModel> {
        if !self.use_catalog {
            return None;
        }
        let c = catalog::Catalog::shipped();
        c.get(model).or_else(|| c.get(upstream_model))
    }

    /// The most a model can write in one answer, when the catalog knows it.
    pub fn max_output_tokens(&self, model: &str, upstream_model: &str) -> Option<i64> {
        self.catalog_entry(model, upstream_model)
            .and_then(|c| c.max_output_tokens)
    }
}

/// Formats micro-dollars as a USD decimal for headers and the API edge.
pub fn micros_to_usd_string(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// One ledger row: who spent what on which deployment, and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub request_id: String,
    pub ts_ms: i64,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub endpoint: &'static str,
    pub model: String,
    pub provider: Option<&'static str>,
    pub deployment: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub error_type: Option<&'static str>,
    pub usage: Usage,
    pub usage_estimated: bool,
    pub cost_micros: i64,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub tags: String,
}

/// A rough token count for text whose usage the upstream never reported (about four
/// characters a token for English); rows using it are flagged `usage_estimated`.
pub fn estimate_tokens(chars: usize) -> i64 {
    i64::try_from(chars.div_ceil(4)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_and_prices_cached_tokens() {
        let p = Price {
            input: 150_000,
            output: 600_000,
            cached_input: 75_000,
        };
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
            cached_tokens: 400,
        };
        // 600*0.15 + 400*0.075 + 500*0.6 = 90 + 30 + 300 = 420 micro-dollars
        assert_eq!(p.cost_micros(&u), 420);
        let tiny = Usage {
            prompt_tokens: 1,
            completion_tokens: 0,
            cached_tokens: 0,
        };
        assert_eq!(p.cost_micros(&tiny), 1);
        assert_eq!(p.cost_micros(&Usage::default()), 0);
    }

    #[test]
    fn usd_strings() {
        assert_eq!(micros_to_usd_string(420), "0.000420");
        assert_eq!(micros_to_usd_string(12_345_678), "12.345678");
    }

    #[test]
    fn price_book_prefers_public_name() {
        let book = PriceBook::from_config(&[
            PriceConfig {
                model: "pub".into(),
                input_per_mtok: 1.0,
                output_per_mtok: 2.0,
                cached_input_per_mtok: None,
            },
            PriceConfig {
                model: "up".into(),
                input_per_mtok: 3.0,
                output_per_mtok: 4.0,
                cached_input_per_mtok: Some(0.5),
            },
        ]);
        assert_eq!(book.lookup("pub", "up").unwrap().input, 1_000_000);
        assert_eq!(book.lookup("pub", "up").unwrap().cached_input, 1_000_000);
        assert_eq!(book.lookup("x", "up").unwrap().cached_input, 500_000);
        assert!(book.lookup("x", "y").is_none());
        // The catalog prices what the configuration does not; the configuration wins.
        assert_eq!(book.lookup("gpt-4o-mini", "x").unwrap().input, 150_000);
        assert_eq!(book.max_output_tokens("gpt-4o-mini", "x"), Some(16_384));
        assert!(
            book.clone()
                .without_catalog()
                .lookup("gpt-4o-mini", "x")
                .is_none()
        );
    }
}
