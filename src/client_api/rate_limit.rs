//! Token-bucket rate limiting of the endpoints ruma marks as rate limited, per user (or IP).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::{config::RateLimitConfig, error::MatrixError};

#[derive(Clone)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config, buckets: Arc::default() }
    }

    /// Takes one token from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), MatrixError> {
        if !self.config.enabled || self.config.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let burst = f64::from(self.config.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > 100_000 {
            // Forget full buckets so the map cannot grow without bound.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * self.config.per_second < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: burst, updated: now });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.config.per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.config.per_second;
            Err(MatrixError::limit_exceeded((wait * 1000.0).ceil() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_with_retry_hint() {
        let limiter = RateLimiter::new(RateLimitConfig { enabled: true, per_second: 1.0, burst: 3 });
        for _ in 0..3 {
            limiter.check("@a:x").unwrap();
        }
        let error = limiter.check("@a:x").unwrap_err();
        assert_eq!(error.errcode, "M_LIMIT_EXCEEDED");
        assert!(error.extra["retry_after_ms"].as_u64().unwrap() > 0);
        // Other users have their own bucket.
        limiter.check("@b:x").unwrap();
    }
}
