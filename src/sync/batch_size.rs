//! How many outbox rows one sync call carries.
//!
//! Larger calls drain a backlog faster: PostgreSQL's cost per call (locks,
//! reference checks, the commit) and the pipeline's wait between lock-step
//! batches are paid less often (a 1,000,000-row drain ran at 46-47 k rows/s
//! with 1,000 rows per call and 58-61 k with 4,000; BENCHMARKS.md). But
//! requests pay for them: the writer records each batch's outcome in one
//! job, which writes queue behind, and the batch is read in one piece. During a drain, creates at 2,000/s had a p99 of 18-20 ms with
//! 1,000-row batches and 65-68 ms with 4,000, and gets at 10,000/s 14-15
//! against 21-24 ms. So the large size is used only once no client request
//! has come for [`QUIET_AFTER`]: a node catching up after an outage with
//! nobody calling it, or between bursts. The first request after a quiet
//! spell can wait behind one large batch; the next batch is small.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How long without a client request before batches grow.
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

/// Rows for the next batch: `busy` if a client called within
/// [`QUIET_AFTER`] (`since_request`: how long ago the last one did, if
/// any), else `quiet`, but never fewer than `busy`.
pub fn batch_size(busy: u32, quiet: u32, since_request: Option<Duration>) -> u32 {
    match since_request {
        Some(since) if since < QUIET_AFTER => busy,
        _ => quiet.max(busy),
    }
}

/// When a client last called the API (reservations and resources; not
/// health checks, metrics or the sync status, which monitoring polls).
/// Noted by the HTTP layer, read by the sync task.
#[derive(Debug, Default)]
pub struct ClientActivity {
    /// On [`clock_micros`]'s clock, within [`NOTE_EVERY_MICROS`]; 0: never.
    last: AtomicU64,
}

/// How stale the noted time may get: only the second matters, and a store
/// on every request would bounce the cache line between the worker threads.
const NOTE_EVERY_MICROS: u64 = 10_000;

impl ClientActivity {
    pub fn note(&self) {
        let now = clock_micros();
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= NOTE_EVERY_MICROS {
            self.last.store(now, Ordering::Relaxed);
        }
    }

    /// How long ago a client last called; `None` if none has.
    pub fn since(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_micros(clock_micros().saturating_sub(at))),
        }
    }
}

/// Microseconds on a monotonic clock, from 1 at the first call.
fn clock_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX - 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_large_only_after_a_second_without_requests() {
        let ms = |ms: u64| Some(Duration::from_millis(ms));
        assert_eq!(batch_size(1000, 4000, None), 4000, "no client called yet");
        assert_eq!(batch_size(1000, 4000, ms(0)), 1000, "a request just now");
        assert_eq!(batch_size(1000, 4000, ms(999)), 1000, "within the second");
        assert_eq!(batch_size(1000, 4000, ms(1000)), 4000, "a quiet second");
        assert_eq!(batch_size(1000, 4000, ms(60_000)), 4000);
    }

    #[test]
    fn the_quiet_size_is_never_below_the_busy_one() {
        assert_eq!(batch_size(5000, 4000, None), 5000);
        assert_eq!(batch_size(5000, 4000, Some(Duration::ZERO)), 5000);
    }

    #[test]
    fn activity_tells_how_long_ago_the_last_request_came() {
        let activity = ClientActivity::default();
        assert_eq!(activity.since(), None);
        activity.note();
        let since = activity.since().expect("a request was noted");
        assert!(since < Duration::from_secs(60), "{since:?}");
    }
}
