//! Redis for tests, two ways:
//!
//! - [`shared_redis`]: the shared server (the plain cases). Tests never stop
//!   or flush it; their keys never collide because every id is a UUID;
//! - [`ThrowawayRedis`]: a private `redis-server` on a free port, which a test
//!   may kill, start again, pause (`SIGSTOP`: accepts, never answers) and
//!   resume (the failure cases).
//!
//! A test that needs Redis and cannot reach it fails, saying what to start;
//! it never skips.

// Shared by several suites; not every suite uses every item.
#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use redis::{FromRedisValue, aio::MultiplexedConnection};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The shared server's URL when `RESERVOIR_TEST_REDIS_URL` is unset.
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// The Redis server binary for [`ThrowawayRedis`].
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How to start the shared server, for failure messages.
const START_HINT: &str = "start it with `redis-server --daemonize yes --port 6379 --save '' \
     --appendonly no` (or set RESERVOIR_TEST_REDIS_URL)";

/// The shared server's URL: `RESERVOIR_TEST_REDIS_URL` or
/// [`DEFAULT_TEST_REDIS_URL`].
pub fn shared_url() -> String {
    std::env::var("RESERVOIR_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_REDIS_URL.to_owned())
}

/// The shared server's URL, after checking that it answers; panics, saying
/// what to start, when it does not.
pub async fn shared_redis() -> String {
    let url = shared_url();
    if let Err(error) = ping(&address_of(&url)).await {
        panic!("Redis is not reachable at {url}: {START_HINT}; the error was: {error}");
    }
    url
}

/// `host:port` of a `redis://` URL (port 6379 when absent).
pub fn address_of(url: &str) -> String {
    let parsed =
        reqwest::Url::parse(url).unwrap_or_else(|e| panic!("not a Redis URL: {url:?}: {e}"));
    let host = parsed
        .host_str()
        .unwrap_or_else(|| panic!("a Redis URL without a host: {url:?}"));
    format!("{host}:{}", parsed.port().unwrap_or(6379))
}

/// A plain TCP connect and `PING`: `Ok` when the server answers anything in
/// RESP (`+PONG`, or an error such as `-NOAUTH`, which still proves it is up).
pub async fn ping(address: &str) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"PING\r\n")
            .await
            .map_err(|e| format!("send PING: {e}"))?;
        let mut answer = [0u8; 64];
        let n = stream
            .read(&mut answer)
            .await
            .map_err(|e| format!("read the answer to PING: {e}"))?;
        match answer[..n].first() {
            Some(b'+' | b'-') => Ok(()),
            _ => Err(format!(
                "unexpected answer to PING: {:?}",
                String::from_utf8_lossy(&answer[..n])
            )),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err("no answer to PING within 2 s".to_owned()),
    }
}

/// A connection for the test's own commands.
pub async fn connect(url: &str) -> MultiplexedConnection {
    let client =
        redis::Client::open(url).unwrap_or_else(|e| panic!("not a Redis URL: {url:?}: {e}"));
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => panic!("Redis is not reachable at {url}: {START_HINT}; {error}"),
        Err(_) => panic!("Redis is not reachable at {url} (no answer in 5 s): {START_HINT}"),
    }
}

/// Runs one command (e.g. `&["PTTL", key]`) on a fresh connection to `url`,
/// panicking on any error.
pub async fn query<T: FromRedisValue>(url: &str, args: &[&str]) -> T {
    let (name, rest) = args.split_first().expect("a command name");
    let mut command = redis::cmd(name);
    for arg in rest {
        command.arg(*arg);
    }
    let mut connection = connect(url).await;
    match tokio::time::timeout(
        Duration::from_secs(5),
        command.query_async::<T>(&mut connection),
    )
    .await
    {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("Redis command {args:?} at {url} failed: {error}"),
        Err(_) => panic!("Redis command {args:?} at {url} got no answer in 5 s"),
    }
}

/// A private `redis-server` (no persistence) on 127.0.0.1 and a free port.
/// Dropping it kills it (resuming it first when paused).
#[derive(Debug)]
pub struct ThrowawayRedis {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    paused: bool,
}

impl ThrowawayRedis {
    /// Starts a server and waits until it answers `PING`. Panics with its log
    /// when it cannot be started.
    pub async fn start() -> ThrowawayRedis {
        let dir = tempfile::Builder::new()
            .prefix("reservoir-redis-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory for Redis");
        let mut redis = ThrowawayRedis {
            dir,
            port: 0,
            child: None,
            paused: false,
        };
        // A port picked as free can be taken before the server binds it:
        // try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            redis.port = free_port();
            match redis.spawn().await {
                Ok(()) => return redis,
                Err(error) => last_error = error,
            }
        }
        panic!("cannot start a throwaway Redis: {last_error}");
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills the server (`SIGKILL`): connections are cut, the data is lost.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the stopped server again on the same port (empty).
    pub async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "the throwaway Redis is already running"
        );
        // The port was just released; give a racing bind a few chances.
        let mut last_error = String::new();
        for _ in 0..5 {
            match self.spawn().await {
                Ok(()) => return,
                Err(error) => {
                    last_error = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        panic!(
            "cannot start the throwaway Redis again on port {}: {last_error}",
            self.port
        );
    }

    /// `SIGSTOP`: the kernel still accepts connections and buffers requests,
    /// the server never answers.
    pub fn pause(&mut self) {
        assert!(!self.paused, "the throwaway Redis is already paused");
        self.signal("-STOP");
        self.paused = true;
    }

    /// `SIGCONT`: the server answers again (the buffered requests first).
    pub fn resume(&mut self) {
        if self.paused {
            self.signal("-CONT");
            self.paused = false;
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("the throwaway Redis is not running")
            .id()
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill {signal} {pid}`: {e}"));
        assert!(status.success(), "`kill {signal} {pid}` failed: {status}");
    }

    /// Starts `redis-server` on `self.port` and waits for `PING`.
    async fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new(REDIS_SERVER)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {REDIS_SERVER}: {e}"))?;
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited with {status}; log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            match ping(&address).await {
                Ok(()) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(error) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "redis-server on port {} did not answer PING in 10 s ({error}); log:\n{}",
                        self.port,
                        self.log()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too, but resume first so nothing
            // is ever left stopped should the kill fail.
            if self.paused {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .stdin(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
        // `self.dir` (a TempDir) then removes the directory.
    }
}

/// A port nobody listens on, below the kernel's ephemeral range when
/// possible: an ephemeral port could be handed to an outgoing connection
/// while the server is stopped.
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
