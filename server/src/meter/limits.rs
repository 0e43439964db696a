//! Rate limits of keys, projects, teams and users: requests per minute, tokens per minute
//! and requests in flight. Counted per instance in memory (a sliding minute: the previous
//! minute's count weighted by how much of it still overlaps, plus the current minute's),
//! so N instances behind a load balancer admit up to N times a per-minute limit between
//! them; requests in flight are exact per instance. Tokens are counted at admission from
//! the prompt's estimate and corrected to the upstream's usage when the request ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::store::Store;
use crate::store::budgets::RateLimitRow;

const WINDOW_MS: i64 = 60_000;
const REFRESH_EVERY: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_parallel: Option<i64>,
}

/// Counters of one scope.
#[derive(Debug, Default)]
struct Counter {
    window: i64,
    prev_requests: i64,
    cur_requests: i64,
    prev_tokens: i64,
    cur_tokens: i64,
    in_flight: i64,
}

impl Counter {
    fn roll(&mut self, now: i64) {
        let w = now.div_euclid(WINDOW_MS);
        if w == self.window {
            return;
        }
        if w == self.window + 1 {
            self.prev_requests = self.cur_requests;
            self.prev_tokens = self.cur_tokens;
        } else {
            self.prev_requests = 0;
            self.prev_tokens = 0;
        }
        self.cur_requests = 0;
        self.cur_tokens = 0;
        self.window = w;
    }

    /// (requests, tokens) in the sliding minute ending now.
    fn used(&self, now: i64) -> (i64, i64) {
        let into = now.rem_euclid(WINDOW_MS);
        let overlap = |prev: i64| {
            let p = i128::from(prev) * i128::from(WINDOW_MS - into);
            i64::try_from((p + i128::from(WINDOW_MS) - 1) / i128::from(WINDOW_MS))
                .unwrap_or(i64::MAX)
        };
        (
            overlap(self.prev_requests) + self.cur_requests,
            overlap(self.prev_tokens) + self.cur_tokens,
        )
    }
}

/// What the response headers say about the key's own limits after admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headroom {
    pub limit_requests: Option<i64>,
    pub remaining_requests: Option<i64>,
    pub limit_tokens: Option<i64>,
    pub remaining_tokens: Option<i64>,
    /// Seconds until the current minute ends.
    pub reset_s: i64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub scope_type: String,
    pub scope_id: String,
    /// `requests`, `tokens` or `parallel`.
    pub what: &'static str,
    pub limit: i64,
    pub retry_after_s: u64,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.what {
            "requests" => "requests per minute",
            "tokens" => "tokens per minute",
            _ => "requests in flight",
        };
        write!(
            f,
            "rate limit of the {} {} reached: {} {what}; retry after {} s",
            self.scope_type, self.scope_id, self.limit, self.retry_after_s
        )
    }
}

type Scope = (String, String);

pub struct RateLimits {
    store: Store,
    defs: RwLock<HashMap<Scope, Limits>>,
    counters: Mutex<HashMap<Scope, Counter>>,
}

/// An admitted request's place in its scopes' counters: released (in-flight) and
/// corrected (tokens) exactly once, when the request's ledger row is recorded.
pub struct Permit {
    limits: Arc<RateLimits>,
    scopes: Vec<Scope>,
    estimated_tokens: i64,
    window: i64,
    pub headroom: Headroom,
}

impl Permit {
    pub fn settle(mut self, actual_tokens: i64) {
        self.finish(Some(actual_tokens));
    }

    fn finish(&mut self, actual: Option<i64>) {
        let scopes = std::mem::take(&mut self.scopes);
        if scopes.is_empty() {
            return;
        }
        let Ok(mut counters) = self.limits.counters.lock() else {
            return;
        };
        for s in scopes {
            if let Some(c) = counters.get_mut(&s) {
                c.in_flight = (c.in_flight - 1).max(0);
                if let Some(actual) = actual
                    && c.window == self.window
                {
                    c.cur_tokens = (c.cur_tokens + actual - self.estimated_tokens).max(0);
                }
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.finish(None);
    }
}

fn now_ms() -> i64 {
    crate::access::now_ms()
}

impl RateLimits {
    pub async fn start(store: Store) -> anyhow::Result<Arc<RateLimits>> {
        let r = Arc::new(RateLimits {
            store,
            defs: RwLock::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
        });
        r.reload().await;
        let weak = Arc::downgrade(&r);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(r) = weak.upgrade() else { break };
                if r.store.is_closed() {
                    break;
                }
                r.reload().await;
            }
        });
        Ok(r)
    }

    /// Reads the limits again (also after a change made on this instance).
    pub async fn reload(&self) {
        match self.store.list_rate_limits().await {
            Ok(rows) => {
                let map = rows
                    .into_iter()
                    .map(|r: RateLimitRow| {
                        (
                            (r.scope_type, r.scope_id),
                            Limits {
                                rpm: r.rpm,
                                tpm: r.tpm,
                                max_parallel: r.max_parallel,
                            },
                        )
                    })
                    .collect();
                if let Ok(mut defs) = self.defs.write() {
                    *defs = map;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limit refresh failed; keeping the last known")
            }
        }
    }

    /// Admits a request against the limits of every scope given (all or none are
    /// counted), or says which limit it hit and when to retry.
    pub fn admit(
        self: &Arc<Self>,
        scopes: &[(&str, Option<&str>)],
        estimated_tokens: i64,
    ) -> Result<Option<Permit>, Limited> {
        let limited: Vec<(Scope, Limits)> = {
            let Ok(defs) = self.defs.read() else {
                return Ok(None);
            };
            if defs.is_empty() {
                return Ok(None);
            }
            scopes
                .iter()
                .filter_map(|(t, id)| {
                    let key = ((*t).to_owned(), (*id)?.to_owned());
                    defs.get(&key).map(|l| (key, *l))
                })
                .collect()
        };
        if limited.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        let reset_s = (WINDOW_MS - now.rem_euclid(WINDOW_MS) + 999) / 1000;
        let Ok(mut counters) = self.counters.lock() else {
            return Ok(None);
        };
        // Check every scope first, then count in all of them.
        for (scope, l) in &limited {
            let c = counters.entry(scope.clone()).or_default();
            c.roll(now);
            let (requests, tokens) = c.used(now);
            let refuse = |what, limit, retry: i64| Limited {
                scope_type: scope.0.clone(),
                scope_id: scope.1.clone(),
                what,
                limit,
                retry_after_s: u64::try_from(retry.max(1)).unwrap_or(1),
            };
            if let Some(max) = l.max_parallel
                && c.in_flight >= max
            {
                return Err(refuse("parallel", max, 1));
            }
            if let Some(rpm) = l.rpm
                && requests + 1 > rpm
            {
                return Err(refuse("requests", rpm, reset_s));
            }
            if let Some(tpm) = l.tpm
                && tokens >= tpm
            {
                return Err(refuse("tokens", tpm, reset_s));
            }
        }
        let mut headroom = Headroom {
            reset_s,
            ..Headroom::default()
        };
        for (scope, l) in &limited {
            let c = counters.entry(scope.clone()).or_default();
            c.cur_requests += 1;
            c.cur_tokens += estimated_tokens.max(0);
            c.in_flight += 1;
            if scope.0 == "key" {
                let (requests, tokens) = c.used(now);
                headroom.limit_requests = l.rpm;
                headroom.remaining_requests = l.rpm.map(|r| (r - requests).max(0));
                headroom.limit_tokens = l.tpm;
                headroom.remaining_tokens = l.tpm.map(|t| (t - tokens).max(0));
            }
        }
        Ok(Some(Permit {
            limits: self.clone(),
            scopes: limited.into_iter().map(|(s, _)| s).collect(),
            estimated_tokens: estimated_tokens.max(0),
            window: now.div_euclid(WINDOW_MS),
            headroom,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sliding_minute_weighs_the_previous_one() {
        let mut c = Counter::default();
        let t0 = 10 * WINDOW_MS;
        c.roll(t0);
        c.cur_requests = 60;
        // Half-way into the next minute, half of the last minute still counts.
        let t1 = t0 + WINDOW_MS + WINDOW_MS / 2;
        c.roll(t1);
        assert_eq!(c.used(t1).0, 30);
        // Two minutes on, nothing does.
        let t2 = t0 + 3 * WINDOW_MS;
        c.roll(t2);
        assert_eq!(c.used(t2).0, 0);
    }
}
