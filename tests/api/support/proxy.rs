//! A TCP forwarder for partition tests: a node talks to a server through it,
//! and the test cuts the line ([`TcpProxy::cut`]: every open connection is
//! closed and new ones are dropped as soon as they are accepted) and mends it
//! ([`TcpProxy::restore`]).
//!
//! Connections accepted while cut are closed at once rather than left
//! unanswered, so a client sees the outage immediately (an EOF during its
//! handshake) instead of waiting for its own connect timeout.

// Shared by several suites; not every suite uses every item.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How long a forwarded connection may take to reach the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A forwarder on `127.0.0.1:<free port>` to one upstream `host:port`.
/// Dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    /// Whether the line is cut, and the tasks forwarding each open
    /// connection. One lock for both, so a connection is either forwarded
    /// before a cut (and closed by it) or dropped after it, never missed.
    state: Mutex<State>,
    accepted: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    cut: bool,
    links: Vec<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy's listener");
        let address = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream: upstream.into(),
            state: Mutex::new(State::default()),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        TcpProxy {
            address,
            shared,
            accept,
        }
    }

    /// A proxy to the host and port of `url` (e.g. a `postgres://` URL).
    pub async fn to_url(url: &str) -> TcpProxy {
        let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("not a URL: {url:?}: {e}"));
        let host = parsed
            .host_str()
            .unwrap_or_else(|| panic!("a URL without a host: {url:?}"));
        let port = parsed
            .port_or_known_default()
            .or_else(|| (parsed.scheme() == "postgres").then_some(5432))
            .unwrap_or_else(|| panic!("a URL without a port: {url:?}"));
        TcpProxy::start(format!("{host}:{port}")).await
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `url` with its host and port replaced by the proxy's: the same
    /// server, database and credentials, through the proxy.
    pub fn url_for(&self, url: &str) -> String {
        let mut parsed =
            reqwest::Url::parse(url).unwrap_or_else(|e| panic!("not a URL: {url:?}: {e}"));
        parsed
            .set_host(Some(&self.address.ip().to_string()))
            .expect("set the proxy's host");
        parsed
            .set_port(Some(self.address.port()))
            .expect("set the proxy's port");
        parsed.to_string()
    }

    /// Closes every open connection and drops every new one until
    /// [`TcpProxy::restore`].
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.lock().cut = false;
    }

    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// Connections accepted so far, forwarded or not.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed on arrival because the line was cut.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.shared.lock().links.drain(..) {
            link.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let mut state = shared.lock();
        if state.cut {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            drop(inbound);
        } else {
            state.links.retain(|link| !link.is_finished());
            let upstream = shared.upstream.clone();
            state.links.push(tokio::spawn(forward(inbound, upstream)));
        }
    }
}

/// Copies both ways until either side closes; aborting the task closes both.
async fn forward(mut inbound: TcpStream, upstream: String) {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&upstream)).await;
    let Ok(Ok(mut outbound)) = connect else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
}
