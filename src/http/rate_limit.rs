//! Requests per second per API key, with `governor` (GCRA: a steady rate plus
//! a burst, checked in well under a microsecond, no background timers).

use std::num::NonZeroU32;

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};

use crate::{domain::auth::KeyHash, error::AppError};

pub struct KeyRateLimit {
    limiter: RateLimiter<KeyHash, DefaultKeyedStateStore<KeyHash>, DefaultClock>,
    clock: DefaultClock,
}

impl KeyRateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<KeyRateLimit> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(KeyRateLimit {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    pub fn check(&self, key: &KeyHash) -> Result<(), AppError> {
        self.limiter.check_key(key).map_err(|not_until| {
            metrics::counter!("reservoir_rate_limited_total", "limit" => "requests per key")
                .increment(1);
            let wait = not_until.wait_time_from(self.clock.now());
            AppError::RateLimited {
                detail: "too many requests for this API key".into(),
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Drops the state of keys that are back to a full bucket, so memory
    /// follows the keys active right now.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_a_retry_time() {
        let limit = KeyRateLimit::new(1, 3).unwrap();
        let key = [1u8; 32];
        for _ in 0..3 {
            limit.check(&key).unwrap();
        }
        match limit.check(&key) {
            Err(AppError::RateLimited {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(
            limit.check(&[2u8; 32]).is_ok(),
            "keys are limited separately"
        );
        assert!(KeyRateLimit::new(0, 10).is_none());
    }
}
