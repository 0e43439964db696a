//! Rate limits of keys, projects, teams and users: requests per minute, tokens per minute
//! and requests in flight, over a sliding minute (the previous minute's count weighted by
//! how much of it still overlaps, plus the current minute's). With `[server] redis_url`
//! the counters live in Redis, checked and counted by one Lua script per request, so every
//! instance shares them; without it (or while Redis is unreachable) each instance counts
//! alone in memory, and N instances admit up to N times a limit between them. Tokens are
//! counted at admission from the prompt's estimate and corrected to the upstream's usage
//! when the request ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::store::Store;

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
    /// Scope type → scope id → limits (looked up by `&str`, no allocation per request).
    defs: RwLock<HashMap<String, HashMap<String, Limits>>>,
    counters: Mutex<HashMap<Scope, Counter>>,
    redis: Option<Shared>,
}

/// Counters in Redis, shared by every instance.
struct Shared {
    conn: redis::aio::ConnectionManager,
    admit: redis::Script,
    settle: redis::Script,
}

/// Checks every scope, then counts in all of them, atomically. KEYS: per scope the current
/// minute's hash, the previous minute's hash and the in-flight counter. ARGV: ms into the
/// minute, the minute's length, the estimated tokens, then per scope rpm, tpm and the
/// in-flight limit (0: none). Returns {0, 0}, or {scope number, 1 requests | 2 tokens |
/// 3 in flight} for the first limit hit.
const ADMIT_LUA: &str = r"
local n = #KEYS / 3
local into = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local est = tonumber(ARGV[3])
local w = (win - into) / win
for i = 0, n - 1 do
  local cur, prev, par = KEYS[i*3+1], KEYS[i*3+2], KEYS[i*3+3]
  local rpm, tpm, mp = tonumber(ARGV[4+i*3]), tonumber(ARGV[5+i*3]), tonumber(ARGV[6+i*3])
  local req = math.ceil(tonumber(redis.call('HGET', prev, 'r') or '0') * w) + tonumber(redis.call('HGET', cur, 'r') or '0')
  local tok = math.ceil(tonumber(redis.call('HGET', prev, 't') or '0') * w) + tonumber(redis.call('HGET', cur, 't') or '0')
  local p = tonumber(redis.call('GET', par) or '0')
  if mp > 0 and p >= mp then return {i + 1, 3} end
  if rpm > 0 and req + 1 > rpm then return {i + 1, 1} end
  if tpm > 0 and tok >= tpm then return {i + 1, 2} end
end
for i = 0, n - 1 do
  local cur, par = KEYS[i*3+1], KEYS[i*3+3]
  redis.call('HINCRBY', cur, 'r', 1)
  redis.call('HINCRBY', cur, 't', est)
  redis.call('PEXPIRE', cur, win * 3)
  redis.call('INCR', par)
  redis.call('PEXPIRE', par, 600000)
end
return {0, 0}
";

/// A request ended: its tokens corrected (ARGV[1], may be negative) in the minute it was
/// counted in, its in-flight place freed. KEYS: per scope that minute's hash and the
/// in-flight counter.
const SETTLE_LUA: &str = r"
local delta = tonumber(ARGV[1])
for i = 0, #KEYS / 2 - 1 do
  local cur, par = KEYS[i*2+1], KEYS[i*2+2]
  if delta ~= 0 and redis.call('EXISTS', cur) == 1 then
    local t = tonumber(redis.call('HINCRBY', cur, 't', delta))
    if t < 0 then redis.call('HSET', cur, 't', 0) end
  end
  if tonumber(redis.call('GET', par) or '0') > 0 then redis.call('DECR', par) end
end
return 0
";

fn redis_keys(scope: &Scope, window: i64) -> [String; 3] {
    let base = format!("gw:rl:{}:{}", scope.0, scope.1);
    [
        format!("{base}:{window}"),
        format!("{base}:{}", window - 1),
        format!("{base}:inflight"),
    ]
}

/// An admitted request's place in its scopes' counters: released (in-flight) and
/// corrected (tokens) exactly once, when the request's ledger row is recorded.
pub struct Permit {
    limits: Arc<RateLimits>,
    scopes: Vec<Scope>,
    estimated_tokens: i64,
    window: i64,
    /// Counted in Redis (settled there) rather than in this instance's memory.
    shared: bool,
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
        if self.shared {
            let delta = actual.map_or(0, |a| a - self.estimated_tokens);
            let (limits, window) = (self.limits.clone(), self.window);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { limits.settle_shared(&scopes, window, delta).await });
            }
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
    pub async fn start(store: Store, redis_url: Option<&str>) -> anyhow::Result<Arc<RateLimits>> {
        let redis = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url)
                    .map_err(|e| anyhow::anyhow!("invalid redis_url: {e}"))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_millis(500)));
                let conn = redis::aio::ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reach Redis: {e}"))?;
                Some(Shared {
                    conn,
                    admit: redis::Script::new(ADMIT_LUA),
                    settle: redis::Script::new(SETTLE_LUA),
                })
            }
            None => None,
        };
        let r = Arc::new(RateLimits {
            store,
            defs: RwLock::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            redis,
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
                let mut map: HashMap<String, HashMap<String, Limits>> = HashMap::new();
                for r in rows {
                    map.entry(r.scope_type).or_default().insert(
                        r.scope_id,
                        Limits {
                            rpm: r.rpm,
                            tpm: r.tpm,
                            max_parallel: r.max_parallel,
                        },
                    );
                }
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
    /// counted), or says which limit it hit and when to retry. Shared counters when Redis
    /// is configured and answers; this instance's otherwise.
    pub async fn admit(
        self: &Arc<Self>,
        scopes: &[(&str, Option<&str>)],
        estimated_tokens: i64,
    ) -> Result<Option<Permit>, Limited> {
        if self.redis.is_some() {
            let limited = self.limited(scopes);
            if limited.is_empty() {
                return Ok(None);
            }
            match self.admit_shared(&limited, estimated_tokens).await {
                Ok(r) => return r.map(Some),
                Err(e) => {
                    tracing::warn!(error = %e, "rate limits: Redis unavailable; counting on this instance");
                }
            }
        }
        self.admit_local(scopes, estimated_tokens)
    }

    fn limited(&self, scopes: &[(&str, Option<&str>)]) -> Vec<(Scope, Limits)> {
        let Ok(defs) = self.defs.read() else {
            return Vec::new();
        };
        scopes
            .iter()
            .filter_map(|(t, id)| {
                let l = *defs.get(*t)?.get((*id)?)?;
                Some((((*t).to_owned(), (*id)?.to_owned()), l))
            })
            .collect()
    }

    async fn admit_shared(
        self: &Arc<Self>,
        limited: &[(Scope, Limits)],
        estimated_tokens: i64,
    ) -> Result<Result<Permit, Limited>, redis::RedisError> {
        let Some(shared) = &self.redis else {
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "no redis")));
        };
        let now = now_ms();
        let window = now.div_euclid(WINDOW_MS);
        let into = now.rem_euclid(WINDOW_MS);
        let reset_s = (WINDOW_MS - into + 999) / 1000;
        let mut inv = shared.admit.prepare_invoke();
        inv.arg(into).arg(WINDOW_MS).arg(estimated_tokens.max(0));
        for (scope, l) in limited {
            for k in redis_keys(scope, window) {
                inv.key(k);
            }
            inv.arg(l.rpm.unwrap_or(0))
                .arg(l.tpm.unwrap_or(0))
                .arg(l.max_parallel.unwrap_or(0));
        }
        let mut conn = shared.conn.clone();
        let (hit, what): (i64, i64) = inv.invoke_async(&mut conn).await?;
        if hit > 0 {
            let (scope, l) = &limited[usize::try_from(hit - 1).unwrap_or(0).min(limited.len() - 1)];
            let (what, limit, retry) = match what {
                1 => ("requests", l.rpm.unwrap_or(0), reset_s),
                2 => ("tokens", l.tpm.unwrap_or(0), reset_s),
                _ => ("parallel", l.max_parallel.unwrap_or(0), 1),
            };
            return Ok(Err(Limited {
                scope_type: scope.0.clone(),
                scope_id: scope.1.clone(),
                what,
                limit,
                retry_after_s: u64::try_from(retry.max(1)).unwrap_or(1),
            }));
        }
        let mut headroom = Headroom {
            reset_s,
            ..Headroom::default()
        };
        if let Some((_, l)) = limited.iter().find(|(s, _)| s.0 == "key") {
            headroom.limit_requests = l.rpm;
            headroom.limit_tokens = l.tpm;
        }
        Ok(Ok(Permit {
            limits: self.clone(),
            scopes: limited.iter().map(|(s, _)| s.clone()).collect(),
            estimated_tokens: estimated_tokens.max(0),
            window,
            shared: true,
            headroom,
        }))
    }

    async fn settle_shared(&self, scopes: &[Scope], window: i64, delta: i64) {
        let Some(shared) = &self.redis else { return };
        let mut inv = shared.settle.prepare_invoke();
        inv.arg(delta);
        for s in scopes {
            let [cur, _, par] = redis_keys(s, window);
            inv.key(cur).key(par);
        }
        let mut conn = shared.conn.clone();
        if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
            tracing::warn!(error = %e, "rate limits: could not settle in Redis");
        }
    }

    fn admit_local(
        self: &Arc<Self>,
        scopes: &[(&str, Option<&str>)],
        estimated_tokens: i64,
    ) -> Result<Option<Permit>, Limited> {
        let limited = self.limited(scopes);
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
            shared: false,
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
