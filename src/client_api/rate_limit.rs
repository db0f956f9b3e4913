//! Token-bucket rate limiting of the endpoints ruma marks as rate limited, per user (or IP).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::{
    config::{RateLimit, RateLimitConfig},
    error::MatrixError,
};

#[derive(Clone)]
pub struct RateLimiter {
    /// Shared: the limiter is cloned into every request.
    config: Arc<RateLimitConfig>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config: Arc::new(config), buckets: Arc::default() }
    }

    /// Whether `action` has a limit of its own.
    pub fn limits(&self, action: &str) -> bool {
        self.config.actions.contains_key(action)
    }

    /// Takes one token from the bucket of (`action`, `key`), or says how long to wait.
    pub fn check(&self, action: &str, key: &str) -> Result<(), MatrixError> {
        let limit = self
            .config
            .actions
            .get(action)
            .copied()
            .unwrap_or(RateLimit { per_second: self.config.per_second, burst: self.config.burst });
        if !self.config.enabled || limit.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let burst = f64::from(limit.burst.max(1));
        let per_second = limit.per_second;
        let key = format!("{action}\0{key}");
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > 100_000 {
            // Forget full buckets so the map cannot grow without bound.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < burst);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: burst, updated: now });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(MatrixError::limit_exceeded((wait * 1000.0).ceil() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_with_retry_hint() {
        let mut config = RateLimitConfig { enabled: true, per_second: 1.0, burst: 3, ..Default::default() };
        config.actions.insert("login".into(), RateLimit { per_second: 1.0, burst: 1 });
        let limiter = RateLimiter::new(config);
        for _ in 0..3 {
            limiter.check("whoami", "@a:x").unwrap();
        }
        let error = limiter.check("whoami", "@a:x").unwrap_err();
        assert_eq!(error.errcode, "M_LIMIT_EXCEEDED");
        assert!(error.extra["retry_after_ms"].as_u64().unwrap() > 0);
        // Other users, and other actions, have their own buckets.
        limiter.check("whoami", "@b:x").unwrap();
        limiter.check("login", "@a:x").unwrap();
        assert!(limiter.check("login", "@a:x").is_err(), "login has its own, smaller limit");
    }
}
