//! A small in-memory limiter for sign-in attempts: `max` failures per key within `window`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Self {
        Throttle {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, key: &str) -> bool {
        let Ok(mut map) = self.failures.lock() else {
            return false;
        };
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        map.get(key).is_none_or(|(n, _)| *n < self.max)
    }

    pub fn fail(&self, key: &str) {
        if let Ok(mut map) = self.failures.lock() {
            let e = map.entry(key.to_owned()).or_insert((0, Instant::now()));
            e.0 += 1;
        }
    }

    pub fn clear(&self, key: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures() {
        let t = Throttle::new(2, Duration::from_secs(60));
        assert!(t.allow("a"));
        t.fail("a");
        t.fail("a");
        assert!(!t.allow("a"));
        assert!(t.allow("b"));
        t.clear("a");
        assert!(t.allow("a"));
    }
}
