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
//! Most frames are already copied by then, so that pause is short, and this
//! thread flushes the database file after every pass that copied pages, so
//! the sync that ends the writer's checkpoint has little left to write.
//!
//! Once a pass finds every frame of the log copied, the thread sleeps until
//! the writer's next commit wakes it ([`Checkpointer::after_commit`]) rather
//! than polling every [`INTERVAL`]: polling was all an idle node did (50
//! wake-ups and about 4 ms of CPU a second).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    thread::{JoinHandle, Thread},
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
///
/// Under sustained writes each time the log starts over costs the writer a
/// pause with three syncs in it (the log, the database file, the new log
/// header), and on a busy disk each sync can take tens of milliseconds. At
/// 8,192 pages that came every half second at 8,000 creates/s; at 32,768,
/// every two seconds. Under a neighbour writing to the same disk, commits
/// over 10 ms in two runs of 80 s were 421 before, 311 with the flushes
/// below alone and 130 with both (BENCHMARKS.md, 2026-12-01 from 18:28
/// UTC). The price is a log file of 135 MB and more (158 MB during a seed
/// in batches of 500 rows) and a longer recovery after a crash (79 ms with
/// 12,000 frames).
pub const WRITER_BACKSTOP_PAGES: u32 = 32_768;
/// Log size (pages) past which a pass ends with a RESTART checkpoint.
pub const RESTART_PAGES: i64 = WRITER_BACKSTOP_PAGES as i64;
/// What SQLite trims the log file back to when the log starts over: above
/// what [`RESTART_PAGES`] lets it reach (frames of a 4 KiB page and a 24-byte
/// header), so steady writes do not shrink and regrow it every time, while
/// the space a burst took (a large batch in one transaction) is given back.
pub const WAL_SIZE_LIMIT_BYTES: i64 = 160 * 1024 * 1024;
const _: () =
    assert!(RESTART_PAGES * (4096 + super::wal_vfs::FRAME_HEADER as i64) < WAL_SIZE_LIMIT_BYTES);

/// A running checkpointer; stopping it (or dropping it) ends the thread.
pub struct Checkpointer {
    /// The log's size in pages after the last pass.
    log_pages: Arc<AtomicI64>,
    /// Flushes of the database file by this thread so far.
    flushes: Arc<AtomicU64>,
    /// Checkpoint passes so far.
    passes: Arc<AtomicU64>,
    restart_pages: i64,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The thread, to wake it.
    waker: Thread,
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
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let log_pages = Arc::new(AtomicI64::new(0));
        let seen = log_pages.clone();
        let flushes = Arc::new(AtomicU64::new(0));
        let flushed_so_far = flushes.clone();
        let passes = Arc::new(AtomicU64::new(0));
        let passes_so_far = passes.clone();
        let thread = std::thread::Builder::new()
            .name("reservoir-checkpoint".into())
            .spawn(move || {
                let (mut flushed, mut warned, mut caught_up) = (0, false, false);
                let mut last_pass = Instant::now();
                loop {
                    if caught_up {
                        // Nothing left to copy: sleep until a commit (or
                        // the stop) unparks this thread. A commit between
                        // the pass and here leaves the token set, so this
                        // returns at once and no commit is missed.
                        std::thread::park();
                    }
                    // At most one pass per INTERVAL, however often commits
                    // wake the thread.
                    let since = last_pass.elapsed();
                    if since < INTERVAL {
                        std::thread::sleep(INTERVAL - since);
                    }
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    last_pass = Instant::now();
                    passes_so_far.fetch_add(1, Ordering::Relaxed);
                    match checkpoint(&conn, "PASSIVE") {
                        Ok(Outcome { busy, log, copied }) => {
                            seen.store(log, Ordering::Relaxed);
                            metrics::gauge!("reservoir_sqlite_wal_pages").set(log as f64);
                            tracing::trace!(log, copied, "checkpoint");
                            caught_up = !busy && copied == log;
                            if copied != flushed {
                                flushed = copied;
                                match flush(&conn) {
                                    Ok(()) => {
                                        flushed_so_far.fetch_add(1, Ordering::Relaxed);
                                    }
                                    // SQLite syncs the file itself at the
                                    // end of every full checkpoint anyway.
                                    Err(code) if !warned => {
                                        warned = true;
                                        tracing::warn!(code, "flushing the database file failed");
                                    }
                                    Err(code) => tracing::debug!(code, "flush failed again"),
                                }
                            }
                        }
                        Err(error) => {
                            caught_up = false;
                            tracing::debug!(%error, "background checkpoint failed");
                        }
                    }
                }
            })?;
        Ok(Checkpointer {
            log_pages,
            flushes,
            passes,
            restart_pages,
            stopping,
            waker: thread.thread().clone(),
            thread: Some(thread),
        })
    }
}

impl Checkpointer {
    /// Called by the writer after each commit, on its own connection: wakes
    /// this thread if it sleeps (an atomic swap when it does not), and starts
    /// the log over once it has grown past the threshold.
    ///
    /// Every commit of the service goes through the writer and so through
    /// here; a commit that did not would only wait for the next one to be
    /// checkpointed.
    pub fn after_commit(&self, writer: &rusqlite::Connection) {
        self.waker.unpark();
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

/// Flushes the pages a pass copied into the database file, here rather than
/// on the writer's thread.
///
/// SQLite syncs the database file only in a checkpoint that copies the whole
/// log. Under a steady stream of writes that is the writer's checkpoint (the
/// restart or its automatic backstop), never this thread's, so the writer's
/// sync had to flush every page this thread had copied since the last log
/// restart, inside a commit every queued write waits for. On a busy disk
/// that sync took tens of milliseconds (BENCHMARKS.md, 2026-12-01 from 18:28
/// UTC). Flushed here after each pass, it is left only the pages of the last
/// pass.
///
/// The sync goes through the connection's own file object, as SQLite's own
/// syncs do, not through a second handle on the file: closing any handle on
/// a file drops every POSIX lock the process holds on it, the locks of the
/// writer's and readers' connections included (SQLite's "how to corrupt"
/// page, 2.2). Returns SQLite's error code on failure.
fn flush(conn: &rusqlite::Connection) -> Result<(), std::ffi::c_int> {
    use rusqlite::ffi;
    let started = Instant::now();
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the connection is open and used by this thread only; the file
    // pointer SQLite hands back stays valid while the connection is open and
    // is not used after this call.
    let code = unsafe {
        match ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        ) {
            ffi::SQLITE_OK if !file.is_null() && !(*file).pMethods.is_null() => {
                match (*(*file).pMethods).xSync {
                    Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
                    None => ffi::SQLITE_NOTFOUND,
                }
            }
            ffi::SQLITE_OK => ffi::SQLITE_NOTFOUND,
            code => code,
        }
    };
    if code != ffi::SQLITE_OK {
        return Err(code);
    }
    metrics::histogram!("reservoir_sqlite_checkpoint_flush_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(())
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
        self.stopping.store(true, Ordering::Release);
        self.waker.unpark();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            let flushes = self.flushes.load(Ordering::Relaxed);
            let passes = self.passes.load(Ordering::Relaxed);
            tracing::debug!(passes, flushes, "checkpointer stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`sustained_writes`] saw.
    struct Seen {
        rows: i64,
        /// The largest log (in frames) the checkpointer saw.
        largest: i64,
        /// Times the checkpointer flushed the database file.
        flushes: u64,
    }

    /// A WAL database at `dir`/db with a table `t`, and its write
    /// connection set up as the service's writer is (only the checkpointer
    /// checkpoints).
    fn wal_database(dir: &Path) -> (rusqlite::Connection, std::path::PathBuf) {
        let path = dir.join("db");
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .unwrap();
        writer.busy_timeout(Duration::from_secs(10)).unwrap();
        writer.pragma_update(None, "synchronous", "NORMAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        (writer, path)
    }

    const ONE_PAGE_ROW: &str = "INSERT INTO t VALUES (zeroblob(3000))";

    /// Writes one-page rows for `for_how_long` without a pause, as the writer
    /// does under sustained load.
    fn sustained_writes(restart_pages: i64, for_how_long: Duration) -> Seen {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = wal_database(dir.path());
        let checkpointer = Checkpointer::start_with(&path, restart_pages).unwrap();
        let mut insert = writer.prepare(ONE_PAGE_ROW).unwrap();
        let started = Instant::now();
        let (mut rows, mut largest) = (0, 0);
        while started.elapsed() < for_how_long {
            insert.execute([]).unwrap();
            checkpointer.after_commit(&writer);
            largest = largest.max(checkpointer.log_pages.load(Ordering::Relaxed));
            rows += 1;
        }
        Seen {
            rows,
            largest,
            flushes: checkpointer.flushes.load(Ordering::Relaxed),
        }
    }

    // Sustained writes: a log past the threshold is started over, not left
    // to grow (with a threshold of i64::MAX this fails: the log holds nearly
    // every row).
    #[test]
    fn the_log_is_started_over_under_sustained_writes() {
        let Seen { rows, largest, .. } = sustained_writes(200, Duration::from_millis(1500));
        assert!(rows > 4000, "too few rows to tell ({rows})");
        assert!(
            largest < rows / 2,
            "the log reached {largest} frames for {rows} one-page rows"
        );
    }

    // SQLite itself syncs the database file only in a checkpoint that copies
    // the whole log, which under sustained writes is the writer's; this
    // thread flushes what its own passes copied. With a threshold no log
    // reaches, every copy here is this thread's, so without its flushes
    // the count stays at 0.
    #[test]
    fn the_checkpointer_flushes_what_it_copied() {
        let Seen { rows, flushes, .. } = sustained_writes(i64::MAX, Duration::from_millis(500));
        assert!(rows > 1000, "too few rows to tell ({rows})");
        assert!(flushes > 0, "no flush in {rows} one-page rows");
    }

    // An idle node's checkpointer sleeps: once a pass finds every frame
    // copied, it waits for the writer's next commit instead of running a
    // pass every INTERVAL (without the park, about 15 passes in the 300 ms
    // below), and that commit wakes it.
    #[test]
    fn an_idle_checkpointer_sleeps_until_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = wal_database(dir.path());
        let checkpointer = Checkpointer::start(&path).unwrap();
        let flushes = || checkpointer.flushes.load(Ordering::Relaxed);
        let passes = || checkpointer.passes.load(Ordering::Relaxed);
        let commit = || {
            writer.execute(ONE_PAGE_ROW, []).unwrap();
            checkpointer.after_commit(&writer);
        };
        let copied_within = |flushed: u64, what: &str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while flushes() < flushed {
                assert!(Instant::now() < deadline, "{what} was never copied back");
                std::thread::sleep(Duration::from_millis(5));
            }
        };

        commit();
        copied_within(1, "the first commit");
        let before = passes();
        std::thread::sleep(Duration::from_millis(300));
        let idle = passes() - before;
        // One pass may still come: the one that finds nothing left to copy.
        assert!(idle <= 1, "{idle} passes over an idle log in 300 ms");

        commit();
        copied_within(2, "a commit after the pause");
    }
}
