//! A circuit breaker for Redis: after a few consecutive failures, calls are
//! skipped outright (no timeout to pay) for a cool-down; then one probe is let
//! through, and its outcome closes or re-opens the circuit. A Redis that is
//! down, refusing, or accepting but never answering costs requests nothing
//! once the breaker is open.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Consecutive failures that open the circuit.
const FAILURES_TO_OPEN: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    min_cooldown: Duration,
    max_cooldown: Duration,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    /// While set and in the future, the circuit is open.
    open_until: Option<Instant>,
    cooldown: Duration,
    /// A probe is in flight (half-open): others keep skipping.
    probing: bool,
}

/// Whether a call may go ahead, and if so whether it is the half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Call,
    Probe,
    Skip,
}

impl Breaker {
    pub fn new(min_cooldown: Duration, max_cooldown: Duration) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                cooldown: min_cooldown,
                probing: false,
            }),
            min_cooldown,
            max_cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn permit(&self) -> Permit {
        self.permit_at(Instant::now())
    }

    pub fn permit_at(&self, now: Instant) -> Permit {
        let mut inner = self.lock();
        match inner.open_until {
            None => Permit::Call,
            Some(until) if now < until => Permit::Skip,
            Some(_) if inner.probing => Permit::Skip,
            Some(_) => {
                inner.probing = true;
                Permit::Probe
            }
        }
    }

    /// Records a success; returns true when this closed an open circuit.
    pub fn success(&self) -> bool {
        let mut inner = self.lock();
        let was_open = inner.open_until.is_some();
        inner.failures = 0;
        inner.open_until = None;
        inner.probing = false;
        inner.cooldown = self.min_cooldown;
        was_open
    }

    /// Records a failure; returns true when this opened the circuit.
    pub fn failure(&self) -> bool {
        self.failure_at(Instant::now())
    }

    pub fn failure_at(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        inner.failures += 1;
        if inner.probing {
            // The probe failed: open again, for longer.
            inner.probing = false;
            inner.cooldown = (inner.cooldown * 2).min(self.max_cooldown);
            inner.open_until = Some(now + inner.cooldown);
            return false;
        }
        if inner.open_until.is_none() && inner.failures >= FAILURES_TO_OPEN {
            inner.open_until = Some(now + inner.cooldown);
            return true;
        }
        false
    }

    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(_) if inner.probing => BreakerState::HalfOpen,
            Some(until) if Instant::now() >= until => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_skips_calls() {
        let breaker = Breaker::new(Duration::from_secs(1), Duration::from_secs(8));
        let t0 = Instant::now();
        assert!(!breaker.failure_at(t0));
        assert!(!breaker.failure_at(t0));
        assert_eq!(breaker.permit_at(t0), Permit::Call);
        assert!(breaker.failure_at(t0), "the third failure opens it");
        assert_eq!(breaker.permit_at(t0), Permit::Skip);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn one_probe_after_the_cooldown_then_close_or_reopen_longer() {
        let breaker = Breaker::new(Duration::from_secs(1), Duration::from_secs(8));
        let t0 = Instant::now();
        for _ in 0..3 {
            breaker.failure_at(t0);
        }
        let later = t0 + Duration::from_millis(1001);
        assert_eq!(breaker.permit_at(later), Permit::Probe);
        assert_eq!(
            breaker.permit_at(later),
            Permit::Skip,
            "only one probe at a time"
        );
        breaker.failure_at(later);
        // Re-opened for twice the cool-down.
        assert_eq!(
            breaker.permit_at(later + Duration::from_millis(1500)),
            Permit::Skip
        );
        assert_eq!(
            breaker.permit_at(later + Duration::from_millis(2001)),
            Permit::Probe
        );
        assert!(breaker.success(), "the successful probe closes it");
        assert_eq!(breaker.permit(), Permit::Call);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let breaker = Breaker::new(Duration::from_secs(1), Duration::from_secs(8));
        breaker.failure();
        breaker.failure();
        assert!(!breaker.success());
        breaker.failure();
        breaker.failure();
        assert_eq!(breaker.permit(), Permit::Call);
    }
}
