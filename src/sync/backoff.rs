//! Retry delays for the sync task: backon's capped exponential schedule with
//! *full* jitter on top (a uniformly random delay up to the schedule's
//! ceiling), so many nodes coming back together do not retry in lockstep.
//! backon's own jitter only adds up to one extra delay, which keeps retries
//! clustered.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

pub struct Backoff {
    schedule: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Ceilings start at `min`, double after each failure and stop at `max`;
    /// retries never run out.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let schedule = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max.max(min))
            .with_factor(2.0)
            .without_max_times()
            .build();
        Backoff {
            schedule,
            max: max.max(min),
        }
    }

    /// The ceiling for the next retry.
    pub fn next_ceiling(&mut self) -> Duration {
        self.schedule.next().unwrap_or(self.max)
    }

    /// The next delay: uniform in [0, ceiling].
    pub fn next_delay(&mut self) -> Duration {
        self.next_ceiling().mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_never_run_out() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..8).map(|_| backoff.next_ceiling().as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
    }

    #[test]
    fn delays_are_spread_below_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..200).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1000)));
        // Full jitter: both halves of the range are used.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(500)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(500)));
    }
}
