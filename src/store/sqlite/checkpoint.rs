//! WAL checkpoints on a thread of their own, so the writer never waits on them.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the
//! threshold: it copies pages back into the database file and fsyncs it, on the
//! writer's thread, while every request of that group (and all queued behind
//! it) waits. Profiles of the create path put it at a sixth of the writer's time
//! and at the top of its latency tail. This thread runs PASSIVE checkpoints on
//! a short interval instead, which never block the writer or readers. The
//! writer keeps an automatic checkpoint at a much higher threshold as a
//! backstop.
//!
//! A PASSIVE checkpoint never lets the log start over while the writer keeps
//! appending (the log restarts only once every frame is copied), and the
//! writer's backstop is skipped whenever it finds this thread mid-checkpoint.
//! Under sustained writes the WAL then grew without bound (340 MB while
//! seeding 5 M rows). A RESTART checkpoint from this thread does not help: it
//! must take the write lock, and the writer takes it back within microseconds
//! of each commit. So this thread publishes the log size it last saw, and the
//! writer, which holds the lock between groups anyway, runs the RESTART itself
//! ([`Checkpointer::after_commit`]) once the log is past [`RESTART_PAGES`].
//! Most frames are already copied by then, so that pause is short.

use std::{
    path::Path,
    sync::mpsc::{self, RecvTimeoutError},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How often the checkpointer copies the WAL back.
///
/// Short, for the latency tail of writes: each time the log starts over,
/// SQLite syncs it (its header) inside the writer's next commit, and that
/// sync also flushes every frame written since this thread last synced the
/// log. The more often this thread runs, the less that sync has to flush.
/// At a fixed 8,000 creates/s the create p99 was 8–14 ms with 100 ms, 6.3
/// ms with 40 ms and 5.2–5.3 ms with 20 ms; at 1 s it was 31 ms (see
/// BENCHMARKS.md, "Create", the tail).
const INTERVAL: Duration = Duration::from_millis(20);
/// The writer's own automatic checkpoint threshold while this thread runs,
/// in pages (SQLite's default is 1000).
pub const WRITER_BACKSTOP_PAGES: u32 = 8192;
/// Log size (pages) past which a pass ends with a RESTART checkpoint.
pub const RESTART_PAGES: i64 = WRITER_BACKSTOP_PAGES as i64;

/// A running checkpointer; stopping it (or dropping it) ends the thread.
pub struct Checkpointer {
    /// The log's size in pages after the last pass.
    log_pages: Arc<AtomicI64>,
    restart_pages: i64,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens its own connection to the database at `path` and starts.
    pub fn start(path: &Path) -> anyhow::Result<Checkpointer> {
        Checkpointer::start_with(path, RESTART_PAGES)
    }

    /// [`Checkpointer::start`] with another restart threshold (tests).
    pub fn start_with(path: &Path, restart_pages: i64) -> anyhow::Result<Checkpointer> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let log_pages = Arc::new(AtomicI64::new(0));
        let seen = log_pages.clone();
        let thread = std::thread::Builder::new()
            .name("reservoir-checkpoint".into())
            .spawn(move || {
                // Ends when the writer drops its sender (or sends).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    match checkpoint(&conn, "PASSIVE") {
                        Ok(Outcome { log, copied, .. }) => {
                            seen.store(log, Ordering::Relaxed);
                            metrics::gauge!("reservoir_sqlite_wal_pages").set(log as f64);
                            tracing::trace!(log, copied, "checkpoint");
                        }
                        Err(error) => tracing::debug!(%error, "background checkpoint failed"),
                    }
                }
            })?;
        Ok(Checkpointer {
            log_pages,
            restart_pages,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Checkpointer {
    /// Called by the writer between transactions, on its own connection:
    /// starts the log over once it has grown past the threshold.
    pub fn after_commit(&self, writer: &rusqlite::Connection) {
        if self.log_pages.load(Ordering::Relaxed) <= self.restart_pages {
            return;
        }
        // Waits (busy timeout) for a pass of the checkpoint thread to end.
        // Every write queued meanwhile waits too, hence the histogram.
        let started = Instant::now();
        let restarted = checkpoint(writer, "RESTART");
        metrics::histogram!("reservoir_sqlite_wal_restart_seconds")
            .record(started.elapsed().as_secs_f64());
        match restarted {
            Ok(Outcome { busy: false, .. }) => {
                tracing::debug!("WAL started over");
                self.log_pages.store(0, Ordering::Relaxed);
            }
            // Readers still on old snapshots: try again after the next group.
            Ok(Outcome { busy: true, .. }) => {}
            Err(error) => tracing::warn!(%error, "RESTART checkpoint failed"),
        }
    }
}

/// What `PRAGMA wal_checkpoint` answers.
struct Outcome {
    /// It could not finish (another checkpoint, or readers in the way).
    busy: bool,
    /// Frames in the log.
    log: i64,
    /// Frames copied back into the database file.
    copied: i64,
}

fn checkpoint(conn: &rusqlite::Connection, mode: &str) -> rusqlite::Result<Outcome> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok(Outcome {
            busy: row.get::<_, i64>(0)? != 0,
            log: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes one-page rows for `for_how_long` without a pause, as the writer
    /// does under sustained load; returns the rows written and the largest
    /// log (in frames) the checkpointer saw.
    fn sustained_writes(restart_pages: i64, for_how_long: Duration) -> (i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .unwrap();
        // As the service runs it; only the checkpointer checkpoints.
        writer.busy_timeout(Duration::from_secs(10)).unwrap();
        writer.pragma_update(None, "synchronous", "NORMAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let checkpointer = Checkpointer::start_with(&path, restart_pages).unwrap();
        let mut insert = writer
            .prepare("INSERT INTO t VALUES (zeroblob(3000))")
            .unwrap();
        let started = Instant::now();
        let (mut rows, mut largest) = (0, 0);
        while started.elapsed() < for_how_long {
            insert.execute([]).unwrap();
            checkpointer.after_commit(&writer);
            largest = largest.max(checkpointer.log_pages.load(Ordering::Relaxed));
            rows += 1;
        }
        (rows, largest)
    }

    // Sustained writes: a log past the threshold is started over, not left
    // to grow (with a threshold of i64::MAX this fails: the log holds nearly
    // every row).
    #[test]
    fn the_log_is_started_over_under_sustained_writes() {
        let (rows, largest) = sustained_writes(200, Duration::from_millis(1500));
        assert!(rows > 4000, "too few rows to tell ({rows})");
        assert!(
            largest < rows / 2,
            "the log reached {largest} frames for {rows} one-page rows"
        );
    }
}
