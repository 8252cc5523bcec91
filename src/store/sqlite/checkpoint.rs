//! WAL checkpoints on a thread of their own, so the writer never waits on them.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the
//! threshold: it copies pages back into the database file and fsyncs it, on the
//! writer's thread, while every request of that group (and all queued behind
//! it) waits. Profiles of the create path put it at a sixth of the writer's time
//! and at the top of its latency tail. This thread runs PASSIVE checkpoints on
//! a short interval instead, which never block the writer or readers. The
//! writer keeps an automatic checkpoint at a much higher threshold as a
//! backstop: a PASSIVE checkpoint cannot reset the WAL while the writer keeps
//! appending, and the writer's own checkpoint (with nothing new left to copy)
//! is what lets the log start over.

use std::{
    path::Path,
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::Duration,
};

/// How often the checkpointer copies the WAL back.
const INTERVAL: Duration = Duration::from_millis(100);
/// The writer's own automatic checkpoint threshold while this thread runs,
/// in pages (SQLite's default is 1000).
pub const WRITER_BACKSTOP_PAGES: u32 = 8192;

/// A running checkpointer; stopping it (or dropping it) ends the thread.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens its own connection to the database at `path` and starts.
    pub fn start(path: &Path) -> anyhow::Result<Checkpointer> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("reservoir-checkpoint".into())
            .spawn(move || {
                // Ends when the writer drops its sender (or sends).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok((log, copied)) => {
                            metrics::gauge!("reservoir_sqlite_wal_pages").set(log as f64);
                            tracing::trace!(log, copied, "checkpoint");
                        }
                        Err(error) => tracing::debug!(%error, "background checkpoint failed"),
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
