//! Per-principal rate limit: one token bucket per principal, in memory, per node.
//!
//! A bucket holds up to `per_minute` requests and refills at `per_minute / 60` per second, so
//! a client may burst up to a minute's allowance and then sustain the configured rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before idle (full) ones are swept.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by principal.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32) -> Option<RateLimiter> {
        (per_minute > 0).then(|| RateLimiter {
            capacity: f64::from(per_minute),
            per_sec: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request from `key`'s bucket, or says in how many whole seconds one is free.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            let full_after = Duration::from_secs_f64(self.capacity / self.per_sec);
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) * 60.0 / self.capacity;
            // The epsilon keeps float noise (10.000000001) from adding a second.
            Err(((wait - 1e-6).ceil() as u64).max(1))
        }
    }

    /// Principals currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_no_limit() {
        assert!(RateLimiter::new(0).is_none());
    }

    #[test]
    fn bursts_up_to_the_minute_allowance_then_refills() {
        let rl = RateLimiter::new(60).unwrap(); // one per second
        let t0 = Instant::now();
        for _ in 0..60 {
            rl.check_at("a", t0).unwrap();
        }
        assert_eq!(rl.check_at("a", t0), Err(1));
        // Other principals have their own bucket.
        rl.check_at("b", t0).unwrap();
        // Half a second later: still not a whole token; retry in 1 s.
        assert_eq!(rl.check_at("a", t0 + Duration::from_millis(500)), Err(1));
        // After a second one request passes, the next does not.
        rl.check_at("a", t0 + Duration::from_millis(1000)).unwrap();
        assert!(rl.check_at("a", t0 + Duration::from_millis(1000)).is_err());
        // Never more than capacity, however long the wait.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..60 {
            rl.check_at("a", later).unwrap();
        }
        assert!(rl.check_at("a", later).is_err());
    }

    #[test]
    fn retry_after_reflects_the_refill_rate() {
        let rl = RateLimiter::new(2).unwrap(); // one every 30 s
        let t0 = Instant::now();
        rl.check_at("a", t0).unwrap();
        rl.check_at("a", t0).unwrap();
        assert_eq!(rl.check_at("a", t0), Err(30));
        assert_eq!(rl.check_at("a", t0 + Duration::from_secs(20)), Err(10));
    }

    #[test]
    fn idle_buckets_are_swept() {
        let rl = RateLimiter::new(600).unwrap();
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            rl.check_at(&format!("p{i}"), t0).unwrap();
        }
        assert_eq!(rl.tracked(), SWEEP_ABOVE + 1);
        rl.check_at("late", t0 + Duration::from_secs(120)).unwrap();
        assert_eq!(rl.tracked(), 1);
    }
}
