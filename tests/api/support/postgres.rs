//! PostgreSQL for tests, two ways:
//!
//! - [`test_database`]: a fresh database on the shared server (the plain
//!   cases), dropped again afterwards;
//! - [`ThrowawayPostgres`]: a private cluster (`initdb` + `pg_ctl`) on a free
//!   port, which a test may stop and start again (the outage cases).
//!
//! A test that needs PostgreSQL and cannot reach it fails, saying what to
//! start; it never skips.

// Shared by several suites; not every suite uses every item.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use sqlx::{
    Connection, Executor, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tempfile::TempDir;

/// The shared server's URL when `RESERVOIR_TEST_POSTGRES_URL` is unset.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How to start the shared server, for failure messages.
const START_HINT: &str = "start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` \
     (or set RESERVOIR_TEST_POSTGRES_URL)";

/// The shared server's maintenance URL: `RESERVOIR_TEST_POSTGRES_URL` or
/// [`DEFAULT_TEST_POSTGRES_URL`].
pub fn shared_url() -> String {
    std::env::var("RESERVOIR_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_POSTGRES_URL.to_owned())
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let mut parsed =
        reqwest::Url::parse(url).unwrap_or_else(|e| panic!("not a PostgreSQL URL: {url:?}: {e}"));
    parsed.set_path(&format!("/{database}"));
    parsed.to_string()
}

/// Opens one connection to `url`, or panics saying what to start.
pub async fn connect_or_fail(url: &str) -> PgConnection {
    let options: PgConnectOptions = url
        .parse()
        .unwrap_or_else(|e| panic!("not a PostgreSQL URL: {url:?}: {e}"));
    match tokio::time::timeout(
        Duration::from_secs(15),
        PgConnection::connect_with(&options),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            panic!("PostgreSQL is not reachable at {url}: {START_HINT}; the error was: {error}")
        }
        Err(_) => panic!("PostgreSQL is not reachable at {url} (no answer in 15 s): {START_HINT}"),
    }
}

/// A pool of a few connections to `url`.
pub async fn pool_to(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a pool to {url}: {e}"))
}

/// A fresh, empty database on the shared server; dropped (with `FORCE`) when
/// this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of the new database, for the service under test.
    pub url: String,
    /// A pool to the new database, for the test's own queries.
    pub pool: PgPool,
    /// The database's name.
    pub name: String,
    /// The maintenance URL it was created through.
    admin_url: String,
}

/// Creates `reservoir_test_<uuid>` on the shared server (see [`shared_url`]).
/// Panics, saying what to start, when the server is not reachable.
pub async fn test_database() -> TestDatabase {
    test_database_at(&shared_url()).await
}

/// Creates a fresh database through the maintenance URL `admin_url`.
pub async fn test_database_at(admin_url: &str) -> TestDatabase {
    let mut admin = connect_or_fail(admin_url).await;
    let name = format!("reservoir_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} at {admin_url}: {e}"));
    let _ = admin.close().await;
    let url = with_database(admin_url, &name);
    let pool = pool_to(&url).await;
    TestDatabase {
        url,
        pool,
        name,
        admin_url: admin_url.to_owned(),
    }
}

impl TestDatabase {
    /// Drops the database now; dropping the value does the same, best effort.
    pub async fn cleanup(self) {
        self.pool.close().await;
        drop_database(&self.admin_url, &self.name).await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.pool.is_closed() {
            return; // `cleanup` ran.
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // The test's runtime may be shutting down (or panicking); use a
        // runtime of our own on a thread of our own.
        let dropper = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_database(&admin_url, &name));
            }
        });
        let _ = dropper.join();
    }
}

/// `DROP DATABASE ... WITH (FORCE)`, ignoring every error.
async fn drop_database(admin_url: &str, name: &str) {
    let Ok(options) = admin_url.parse::<PgConnectOptions>() else {
        return;
    };
    let connect = PgConnection::connect_with(&options);
    if let Ok(Ok(mut admin)) = tokio::time::timeout(Duration::from_secs(10), connect).await {
        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = tokio::time::timeout(Duration::from_secs(30), admin.execute(drop.as_str())).await;
        let _ = admin.close().await;
    }
}

/// A private PostgreSQL cluster in a temporary directory under /tmp, listening
/// on 127.0.0.1 on a free port, with trust authentication for the `postgres`
/// role. Stop it and start it again to simulate an outage; dropping it stops
/// it (`-m immediate`) and removes the directory.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    running: bool,
}

impl ThrowawayPostgres {
    /// Creates and starts a cluster. Panics with the tool's output when
    /// anything fails.
    pub async fn start() -> ThrowawayPostgres {
        let bin = postgres_bin_dir();
        let as_postgres_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("reservoir-pg-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory for PostgreSQL");
        std::fs::create_dir(dir.path().join("sock")).expect("create the socket directory");
        if as_postgres_user {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(dir.path());
            run_checked(chown, "chown the PostgreSQL directory").await;
        }
        let mut cluster = ThrowawayPostgres {
            dir,
            bin,
            port: 0,
            as_postgres_user,
            running: false,
        };
        let mut initdb = cluster.tool("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"]);
        run_checked(initdb, "initdb").await;
        // A port picked as free can be taken before the server binds it:
        // try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            match cluster.pg_ctl_start().await {
                Ok(()) => {
                    cluster.running = true;
                    return cluster;
                }
                Err(error) => last_error = error,
            }
        }
        panic!("cannot start a throwaway PostgreSQL: {last_error}");
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of another database of this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (`pg_ctl stop -m fast`): client connections are cut,
    /// the data stays.
    pub async fn stop(&mut self) {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "fast", "-w", "-t", "60"]);
        run_checked(stop, "pg_ctl stop").await;
        self.running = false;
    }

    /// Starts the stopped server again, on the same port and data.
    pub async fn start_again(&mut self) {
        assert!(!self.running, "the throwaway PostgreSQL is already running");
        if let Err(error) = self.pg_ctl_start().await {
            panic!("cannot start the throwaway PostgreSQL again: {error}");
        }
        self.running = true;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `pg_ctl start` on the current port; the error is the tool's output
    /// plus the server log.
    async fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB",
            self.port,
            self.dir.path().join("sock").display()
        );
        let mut start = self.tool("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"]);
        let output = run(start).await;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start on port {} failed: {}\nserver log:\n{}",
                self.port,
                describe(&output),
                self.log()
            ))
        }
    }

    /// A command for one of the PostgreSQL tools, as the `postgres` user when
    /// we are root.
    fn tool(&self, name: &str) -> Command {
        tool_command(&self.bin, name, self.as_postgres_user)
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if self.running || self.data_dir().join("postmaster.pid").exists() {
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["stop", "-m", "immediate", "-w", "-t", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // `self.dir` (a TempDir) then removes the directory.
    }
}

fn tool_command(bin: &Path, name: &str, as_postgres_user: bool) -> Command {
    let program = bin.join(name);
    let mut command = if as_postgres_user {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.current_dir("/tmp");
    command
}

/// The PostgreSQL server binaries: `RESERVOIR_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RESERVOIR_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl) under {}: install them with \
             `apt-get install postgresql` (or set RESERVOIR_TEST_PG_BIN)",
            root.display()
        ),
    }
}

/// Whether the effective user id is 0 (initdb and postgres refuse to run as
/// root).
fn running_as_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
    {
        // Uid: real effective saved filesystem
        return line.split_whitespace().nth(2) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A port nobody listens on. Ports below the kernel's ephemeral range are
/// preferred: an ephemeral port could be handed to an outgoing connection
/// while the cluster is stopped.
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 20_000 {
        let span = u32::from(low - 20_000);
        for _ in 0..50 {
            let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port")
}

async fn run(mut command: Command) -> Output {
    command.stdin(Stdio::null());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    command
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

async fn run_checked(command: Command, what: &str) -> Output {
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{what} failed: {}",
        describe(&output)
    );
    output
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
