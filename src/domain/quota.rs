//! Booking quotas: at most N bookings per user per hour, per user per day,
//! and per user on one resource per day.
//!
//! These are exact sliding windows rather than a token bucket because two
//! rules must hold that `governor` cannot express: a booking that fails (no
//! capacity) must not count, and all three quotas are checked together, so a
//! booking refused by the daily quota must not have used up hourly allowance.
//! The writer checks after the capacity check has passed and records on
//! success; being single-threaded, it needs no locks.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

const HOUR_MICROS: i64 = 3600 * 1_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;
/// Forget idle users every so many recordings, so memory follows the
/// number of users active in the last day, not all users ever seen.
const PRUNE_EVERY: u32 = 10_000;

/// Limits; 0 turns one off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub per_hour: u32,
    pub per_day: u32,
    pub per_resource_day: u32,
}

/// A refused booking: which quota, and when it frees up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    pub quota: &'static str,
    pub limit: u32,
    pub retry_after_secs: u64,
}

#[derive(Debug, Default)]
pub struct BookingQuotas {
    limits: QuotaLimits,
    /// Booking instants of each user over the last day, oldest first.
    users: HashMap<String, VecDeque<i64>>,
    user_resources: HashMap<(String, Uuid), VecDeque<i64>>,
    since_prune: u32,
}

impl BookingQuotas {
    pub fn new(limits: QuotaLimits) -> Self {
        BookingQuotas {
            limits,
            ..Default::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.limits != QuotaLimits::default()
    }

    /// Whether one more booking by `user` on `resource` at `now` (micros)
    /// fits every quota. Records nothing.
    pub fn check(&mut self, user: &str, resource: Uuid, now: i64) -> Result<(), OverQuota> {
        if !self.enabled() {
            return Ok(());
        }
        let limits = self.limits;
        if let Some(times) = self.users.get_mut(user) {
            forget_before(times, now - DAY_MICROS);
            window_check(
                times,
                now,
                HOUR_MICROS,
                limits.per_hour,
                "bookings per user per hour",
            )?;
            window_check(
                times,
                now,
                DAY_MICROS,
                limits.per_day,
                "bookings per user per day",
            )?;
        }
        if let Some(times) = self.user_resources.get_mut(&(user.to_owned(), resource)) {
            forget_before(times, now - DAY_MICROS);
            window_check(
                times,
                now,
                DAY_MICROS,
                limits.per_resource_day,
                "bookings per user per resource per day",
            )?;
        }
        Ok(())
    }

    /// Counts a booking that was made.
    pub fn record(&mut self, user: &str, resource: Uuid, now: i64) {
        if !self.enabled() {
            return;
        }
        self.users
            .entry(user.to_owned())
            .or_default()
            .push_back(now);
        if self.limits.per_resource_day > 0 {
            self.user_resources
                .entry((user.to_owned(), resource))
                .or_default()
                .push_back(now);
        }
        self.since_prune += 1;
        if self.since_prune >= PRUNE_EVERY {
            self.since_prune = 0;
            self.users
                .retain(|_, times| times.back().is_some_and(|t| *t > now - DAY_MICROS));
            self.user_resources
                .retain(|_, times| times.back().is_some_and(|t| *t > now - DAY_MICROS));
        }
    }
}

fn forget_before(times: &mut VecDeque<i64>, cutoff: i64) {
    while times.front().is_some_and(|t| *t <= cutoff) {
        times.pop_front();
    }
}

/// `times` holds the last day, oldest first; refuse if `limit` of them fall
/// in the last `window`.
fn window_check(
    times: &VecDeque<i64>,
    now: i64,
    window: i64,
    limit: u32,
    quota: &'static str,
) -> Result<(), OverQuota> {
    if limit == 0 {
        return Ok(());
    }
    let in_window: Vec<i64> = times
        .iter()
        .copied()
        .filter(|t| *t > now - window)
        .collect();
    if in_window.len() < limit as usize {
        return Ok(());
    }
    // The booking that must age out before one more fits.
    let freeing = in_window[in_window.len() - limit as usize];
    let wait = (freeing + window - now).max(0);
    Err(OverQuota {
        quota,
        limit,
        retry_after_secs: (wait as u64).div_ceil(1_000_000).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1_000_000;

    fn quotas(per_hour: u32, per_day: u32, per_resource_day: u32) -> BookingQuotas {
        BookingQuotas::new(QuotaLimits {
            per_hour,
            per_day,
            per_resource_day,
        })
    }

    #[test]
    fn hourly_quota_slides() {
        let mut q = quotas(2, 0, 0);
        let r = Uuid::nil();
        for t in [0, 10 * MIN] {
            q.check("u", r, t).unwrap();
            q.record("u", r, t);
        }
        let refused = q.check("u", r, 20 * MIN).unwrap_err();
        assert_eq!(refused.limit, 2);
        // The first booking ages out at minute 60: 40 minutes from now.
        assert_eq!(refused.retry_after_secs, 40 * 60);
        assert!(q.check("u", r, 60 * MIN + 1).is_ok());
        assert!(q.check("other", r, 20 * MIN).is_ok());
    }

    #[test]
    fn checking_does_not_count() {
        let mut q = quotas(1, 0, 0);
        for _ in 0..5 {
            q.check("u", Uuid::nil(), 0).unwrap();
        }
        q.record("u", Uuid::nil(), 0);
        assert!(q.check("u", Uuid::nil(), 1).is_err());
    }

    #[test]
    fn per_resource_quota_is_separate_per_resource() {
        let mut q = quotas(0, 0, 1);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        q.record("u", a, 0);
        assert_eq!(
            q.check("u", a, MIN).unwrap_err().quota,
            "bookings per user per resource per day"
        );
        assert!(q.check("u", b, MIN).is_ok());
    }

    #[test]
    fn daily_quota_and_disabled_limits() {
        let mut q = quotas(100, 3, 0);
        for i in 0..3 {
            q.record("u", Uuid::nil(), i * 2 * 60 * MIN);
        }
        assert_eq!(
            q.check("u", Uuid::nil(), 7 * 60 * MIN).unwrap_err().quota,
            "bookings per user per day"
        );
        assert!(q.check("u", Uuid::nil(), 24 * 60 * MIN + 1).is_ok());
        let mut off = quotas(0, 0, 0);
        for t in 0..100 {
            off.record("u", Uuid::nil(), t);
        }
        assert!(off.check("u", Uuid::nil(), 100).is_ok());
    }
}
