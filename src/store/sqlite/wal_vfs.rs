//! A thin layer over SQLite's default VFS that writes each WAL frame with one
//! system call instead of two.
//!
//! Why: SQLite appends a frame to the write-ahead log as two `pwrite`s, the
//! 24-byte frame header and then the page right after it. In the create
//! scenario the writer appends about two frames per create, so four of its
//! system calls per create were these writes, and a `pwrite` of 24 bytes
//! costs the kernel nearly as much as one of 4 KiB (BENCHMARKS.md).
//!
//! How: only files SQLite opens as a WAL get the wrapper; every other file
//! (the database, journals) is the default VFS's own object, untouched. The
//! wrapper holds back a 24-byte write and, when the next write starts right
//! where it ends, sends both as one. Any other call on the file first writes
//! what is held back. That keeps the file exactly as SQLite wrote it at every
//! point SQLite can observe: SQLite publishes a frame to readers (in the WAL
//! index, shared memory) only after the calls that wrote it have returned,
//! and the page write that follows a header is the call that writes both.
//! A crash with a header held back loses nothing that was committed: the
//! frame it belongs to was not written yet either, and a log that ends
//! before a frame's commit record is what SQLite's recovery expects.

use std::{
    cell::RefCell,
    ffi::{CStr, c_char, c_int, c_void},
    mem::{align_of, size_of},
    ptr,
    sync::OnceLock,
};

use rusqlite::ffi;

/// The name to open a connection with ([`rusqlite::Connection::open_with_flags_and_vfs`]).
pub const VFS_NAME: &str = "reservoir-wal";
const VFS_NAME_C: &CStr = c"reservoir-wal";

/// The size of a WAL frame header (`WAL_FRAME_HDRSIZE` in SQLite).
pub(super) const FRAME_HEADER: usize = 24;

/// Frame writes sent as one system call so far, in this process: the tests'
/// evidence that merging happens (not counted outside tests).
#[cfg(test)]
static MERGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A WAL file: this header, then the default VFS's own file object.
#[repr(C)]
struct WalFile {
    /// Must come first: SQLite sees a `sqlite3_file` whose methods are ours.
    base: ffi::sqlite3_file,
    /// The default VFS's file, further on in the same allocation.
    real: *mut ffi::sqlite3_file,
    /// Where the held-back header goes, if one is held.
    held_at: Option<i64>,
    header: [u8; FRAME_HEADER],
}

/// Where the real file object starts inside a [`WalFile`]'s allocation.
const REAL_OFFSET: usize = size_of::<WalFile>().next_multiple_of(align_of::<u64>() * 2);

/// The default VFS, found once by [`register`].
static REAL_VFS: OnceLock<RealVfs> = OnceLock::new();

struct RealVfs(*mut ffi::sqlite3_vfs);
// SQLite's VFS objects are immutable once registered and used from any thread.
unsafe impl Send for RealVfs {}
unsafe impl Sync for RealVfs {}

/// Registers the VFS under [`VFS_NAME`] (once per process; later calls only
/// report the first outcome). It is not made the default: only connections
/// that name it use it.
pub fn register() -> rusqlite::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| unsafe {
        // Initializes the library if needed; null: the default VFS.
        let real = ffi::sqlite3_vfs_find(ptr::null());
        if real.is_null() {
            return Err("SQLite has no default VFS".to_owned());
        }
        if (*real).xOpen.is_none() {
            return Err("the default VFS cannot open files".to_owned());
        }
        let Ok(real_size) = usize::try_from((*real).szOsFile) else {
            return Err("the default VFS reports a negative file size".to_owned());
        };
        let _ = REAL_VFS.set(RealVfs(real));
        // Everything but the name, the file size and `xOpen` is the
        // default VFS's own: those methods never see a file, and the
        // unix VFS's read nothing from the VFS object but `mxPathname`
        // and `pAppData`, which are copied.
        let mut vfs = *real;
        vfs.pNext = ptr::null_mut();
        vfs.zName = VFS_NAME_C.as_ptr();
        vfs.szOsFile = c_int::try_from(REAL_OFFSET + real_size)
            .map_err(|_| "the default VFS's file object is too large".to_owned())?;
        vfs.xOpen = Some(open_file);
        // Registered VFS objects must live as long as the process.
        let vfs = Box::leak(Box::new(vfs));
        match ffi::sqlite3_vfs_register(vfs, 0) {
            ffi::SQLITE_OK => Ok(()),
            code => Err(format!(
                "registering the WAL VFS failed (SQLite code {code})"
            )),
        }
    });
    outcome.clone().map_err(|message| {
        rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_ERROR), Some(message))
    })
}

fn real_vfs() -> *mut ffi::sqlite3_vfs {
    REAL_VFS.get().expect("registered before use").0
}

unsafe extern "C" fn open_file(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = real_vfs();
    unsafe {
        let open = (*real_vfs).xOpen.expect("checked by register");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not a log: the default VFS's object, at the start of the space
            // SQLite allocated, so SQLite calls the default methods directly.
            return open(real_vfs, name, file, flags, out_flags);
        }
        let wal = file.cast::<WalFile>();
        let real = file
            .cast::<u8>()
            .add(REAL_OFFSET)
            .cast::<ffi::sqlite3_file>();
        ptr::write(
            wal,
            WalFile {
                base: ffi::sqlite3_file {
                    pMethods: ptr::null(),
                },
                real,
                held_at: None,
                header: [0; FRAME_HEADER],
            },
        );
        let rc = open(real_vfs, name, real, flags, out_flags);
        // On failure `pMethods` stays null, and SQLite does not close it.
        if rc == ffi::SQLITE_OK && !(*real).pMethods.is_null() {
            (*wal).base.pMethods = &WAL_METHODS;
        }
        rc
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The wrapper and the default VFS's file and methods behind it.
///
/// # Safety
/// `file` must be a file opened by [`open_file`] with the WAL flag.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    &'a mut WalFile,
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
) {
    unsafe {
        let wal = &mut *file.cast::<WalFile>();
        let real = wal.real;
        (wal, real, &*(*real).pMethods)
    }
}

thread_local! {
    /// A header and its page, side by side (the writer's thread reuses it).
    static FRAME: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes what is held back, if anything. On failure it stays held, and the
/// next call tries again (and reports the error again).
///
/// # Safety
/// The three must come from one [`parts`] call.
unsafe fn flush(
    wal: &mut WalFile,
    real: *mut ffi::sqlite3_file,
    methods: &ffi::sqlite3_io_methods,
) -> c_int {
    let Some(at) = wal.held_at else {
        return ffi::SQLITE_OK;
    };
    let write = methods.xWrite.expect("every VFS writes");
    let rc = unsafe {
        write(
            real,
            wal.header.as_ptr().cast::<c_void>(),
            FRAME_HEADER as c_int,
            at,
        )
    };
    if rc == ffi::SQLITE_OK {
        wal.held_at = None;
    }
    rc
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let (wal, real, methods) = parts(file);
        let xwrite = methods.xWrite.expect("every VFS writes");
        // The page right after a held header: both in one call.
        if let Some(at) = wal.held_at
            && offset == at + FRAME_HEADER as i64
            && let Ok(len) = usize::try_from(amount)
            && let Ok(total) = c_int::try_from(FRAME_HEADER + len)
        {
            let rc = FRAME.with_borrow_mut(|frame| {
                frame.clear();
                frame.extend_from_slice(&wal.header);
                frame.extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len));
                xwrite(real, frame.as_ptr().cast::<c_void>(), total, at)
            });
            if rc == ffi::SQLITE_OK {
                wal.held_at = None;
                #[cfg(test)]
                MERGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return rc;
        }
        let rc = flush(wal, real, methods);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if amount == FRAME_HEADER as c_int {
            wal.header
                .copy_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), FRAME_HEADER));
            wal.held_at = Some(offset);
            return ffi::SQLITE_OK;
        }
        xwrite(real, data, amount, offset)
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (wal, real, methods) = parts(file);
        let flushed = flush(wal, real, methods);
        let closed = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(real));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// A method that writes what is held back, then calls the default VFS's.
macro_rules! after_flush {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            unsafe {
                let (wal, real, methods) = parts(file);
                let rc = flush(wal, real, methods);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match methods.$field {
                    Some(method) => method(real $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

after_flush!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64), ffi::SQLITE_IOERR_READ);
after_flush!(truncate, xTruncate, (size: i64), ffi::SQLITE_IOERR_TRUNCATE);
after_flush!(sync, xSync, (flags: c_int), ffi::SQLITE_IOERR_FSYNC);
after_flush!(file_size, xFileSize, (size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
after_flush!(lock, xLock, (level: c_int), ffi::SQLITE_IOERR_LOCK);
after_flush!(unlock, xUnlock, (level: c_int), ffi::SQLITE_IOERR_UNLOCK);
after_flush!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
after_flush!(file_control, xFileControl, (op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
after_flush!(shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
after_flush!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR_SHMLOCK);
after_flush!(shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
after_flush!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void), {
    // No memory map: SQLite reads the page instead.
    *out = ptr::null_mut();
    ffi::SQLITE_OK
});

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    unsafe {
        let (_, real, methods) = parts(file);
        methods
            .xUnfetch
            .map_or(ffi::SQLITE_OK, |unfetch| unfetch(real, offset, page))
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    unsafe {
        // No way to report an error here; the next call reports it again.
        let (wal, real, methods) = parts(file);
        let _ = flush(wal, real, methods);
        if let Some(barrier) = methods.xShmBarrier {
            barrier(real);
        }
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (_, real, methods) = parts(file);
        methods.xSectorSize.map_or(4096, |size| size(real))
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (_, real, methods) = parts(file);
        methods.xDeviceCharacteristics.map_or(0, |dc| dc(real))
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    /// A database written through the VFS, in WAL mode, never checkpointed,
    /// so every row read back comes from frames this VFS wrote.
    fn write_rows(path: &std::path::Path, transactions: usize, rows: usize) -> Connection {
        register().unwrap();
        let conn =
            Connection::open_with_flags_and_vfs(path, OpenFlags::default(), VFS_NAME).unwrap();
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL); CREATE INDEX t_body ON t (body);",
        )
        .unwrap();
        for t in 0..transactions {
            let tx = conn.unchecked_transaction().unwrap();
            for r in 0..rows {
                tx.execute(
                    "INSERT INTO t (body) VALUES (?1)",
                    [format!("{t}-{r}-{}", "x".repeat(100))],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        conn
    }

    fn count_and_check(path: &std::path::Path) -> (i64, String) {
        // The default VFS: it reads the files as they are on disk.
        let conn = Connection::open(path).unwrap();
        let count = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        let check = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        (count, check)
    }

    #[test]
    fn frames_are_merged_and_read_back_by_the_default_vfs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let merged = || MERGED.load(std::sync::atomic::Ordering::Relaxed);
        let before = merged();
        let writer = write_rows(&path, 40, 50);
        assert!(
            merged() >= before + 40,
            "each commit writes at least one frame as one call"
        );
        // Read while the writer is open: the rows live only in the log.
        assert_eq!(count_and_check(&path), (2000, "ok".to_owned()));
        let wal = std::fs::metadata(dir.path().join("db-wal")).unwrap().len();
        assert!(wal > 0, "nothing was checkpointed");
        // Writes after a reader joined, then a checkpoint through the VFS.
        writer
            .execute("INSERT INTO t (body) VALUES ('last')", [])
            .unwrap();
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(writer);
        assert_eq!(count_and_check(&path), (2001, "ok".to_owned()));
    }

    #[test]
    fn the_log_on_disk_recovers_every_committed_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = write_rows(&path, 25, 40);
        // What a crash would leave: the database and the log as they are on
        // disk now, with no shared-memory index, for recovery to rebuild.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&path, copy.path().join("db")).unwrap();
        std::fs::copy(dir.path().join("db-wal"), copy.path().join("db-wal")).unwrap();
        drop(writer);
        assert_eq!(
            count_and_check(&copy.path().join("db")),
            (1000, "ok".to_owned())
        );
    }

    #[test]
    fn other_files_use_the_default_vfs_objects_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        register().unwrap();
        // A rollback journal, not a log: nothing goes through the wrapper.
        let conn =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), VFS_NAME).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        for i in 0..20 {
            conn.execute("INSERT INTO t (body) VALUES (?1)", [i.to_string()])
                .unwrap();
        }
        drop(conn);
        let conn = Connection::open(&path).unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 20);
    }
}
