//! A deployment's live state: requests in flight, latency (EWMA), consecutive failures and
//! cooldown (the circuit breaker), and its rpm / tpm use in the current minute. Lock-free
//! atomics: the hot path never waits on another request.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Health {
    epoch: Instant,
    in_flight: Arc<AtomicU32>,
    latency_us: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the deployment rests; 0 when healthy.
    cooldown_until_ms: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    rpm: Option<u32>,
    tpm: Option<u64>,
    minute: AtomicU64,
    minute_requests: AtomicU64,
    minute_tokens: AtomicI64,
}

/// Marks a request in flight on a deployment until dropped.
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the Models page and `/admin/v1/deployments` show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthSnapshot {
    pub status: &'static str,
    pub cooldown_remaining_ms: u64,
    pub in_flight: u32,
    pub latency_ms_ewma: u64,
    pub requests: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
}

impl Health {
    pub fn new(rpm: Option<u32>, tpm: Option<u64>) -> Self {
        Health {
            epoch: Instant::now(),
            in_flight: Arc::new(AtomicU32::new(0)),
            latency_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            cooldown_until_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rpm,
            tpm,
            minute: AtomicU64::new(0),
            minute_requests: AtomicU64::new(0),
            minute_tokens: AtomicI64::new(0),
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Rolls the per-minute counters when a new minute began.
    fn roll(&self, now: Instant) {
        let minute = self.now_ms(now) / 60_000;
        let seen = self.minute.load(Ordering::Relaxed);
        if seen != minute
            && self
                .minute
                .compare_exchange(seen, minute, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.minute_requests.store(0, Ordering::Relaxed);
            self.minute_tokens.store(0, Ordering::Relaxed);
        }
    }

    /// Neither cooling down nor over its caps for this minute.
    pub fn available(&self, now: Instant) -> bool {
        if self.cooldown_remaining(now) > Duration::ZERO {
            return false;
        }
        self.roll(now);
        let under_rpm = self
            .rpm
            .is_none_or(|cap| self.minute_requests.load(Ordering::Relaxed) < u64::from(cap));
        let under_tpm = self.tpm.is_none_or(|cap| {
            self.minute_tokens.load(Ordering::Relaxed) < i64::try_from(cap).unwrap_or(i64::MAX)
        });
        under_rpm && under_tpm
    }

    pub fn cooldown_remaining(&self, now: Instant) -> Duration {
        let until = self.cooldown_until_ms.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(self.now_ms(now)))
    }

    pub fn begin(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.roll(Instant::now());
        self.minute_requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn latency_us(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }

    /// A success closes the breaker and feeds the latency average (time to headers).
    pub fn succeeded(&self, latency: Duration) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.cooldown_until_ms.store(0, Ordering::Relaxed);
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 4 + sample) / 5
        };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    /// Counts a failure; at `threshold` consecutive ones (and after each failed probe) the
    /// deployment rests for `cooldown`. Returns whether it just started resting.
    pub fn failed(&self, threshold: u32, cooldown: Duration) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= threshold {
            let until = self.now_ms(Instant::now())
                + u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX);
            self.cooldown_until_ms.store(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Tokens a finished request used, for the tpm cap.
    pub fn add_tokens(&self, tokens: i64) {
        self.roll(Instant::now());
        self.minute_tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let now = Instant::now();
        let rest = self.cooldown_remaining(now);
        let status = if rest > Duration::ZERO {
            "cooling_down"
        } else if !self.available(now) {
            "at_capacity"
        } else {
            "up"
        };
        HealthSnapshot {
            status,
            cooldown_remaining_ms: u64::try_from(rest.as_millis()).unwrap_or(u64::MAX),
            in_flight: self.in_flight(),
            latency_ms_ewma: self.latency_us() / 1000,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_and_a_success_closes_it() {
        let h = Health::new(None, None);
        assert!(!h.failed(2, Duration::from_secs(60)));
        assert!(h.available(Instant::now()));
        assert!(h.failed(2, Duration::from_secs(60)));
        assert!(!h.available(Instant::now()));
        assert_eq!(h.snapshot().status, "cooling_down");
        h.succeeded(Duration::from_millis(5));
        assert!(h.available(Instant::now()));
        assert_eq!(h.snapshot().status, "up");
    }

    #[test]
    fn expired_cooldown_lets_a_probe_through_and_a_failed_probe_rests_again() {
        let h = Health::new(None, None);
        assert!(h.failed(1, Duration::ZERO));
        assert!(h.available(Instant::now()), "cooldown over: probe allowed");
        assert!(
            h.failed(1, Duration::from_secs(60)),
            "failed probe rests at once"
        );
        assert!(!h.available(Instant::now()));
    }

    #[test]
    fn caps_per_minute() {
        let h = Health::new(Some(2), Some(100));
        let _a = h.begin();
        assert!(h.available(Instant::now()));
        let _b = h.begin();
        assert!(!h.available(Instant::now()), "rpm reached");
        let t = Health::new(None, Some(100));
        t.add_tokens(150);
        assert!(!t.available(Instant::now()), "tpm reached");
        assert_eq!(t.snapshot().status, "at_capacity");
    }

    #[test]
    fn in_flight_is_released_on_drop() {
        let h = Health::new(None, None);
        let g = h.begin();
        assert_eq!(h.in_flight(), 1);
        drop(g);
        assert_eq!(h.in_flight(), 0);
    }
}
