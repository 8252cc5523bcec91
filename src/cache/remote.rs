//! The shared L2 cache in Redis, and the pub/sub channel that carries every
//! node's writes to the others' L1.
//!
//! Redis is never in the way: every call has a short timeout, and a circuit
//! breaker skips Redis entirely after a few failures, so a Redis that is
//! down, refusing, or accepting connections but never answering costs a
//! request nothing once the breaker is open. The connection is re-made by the
//! breaker's probe when Redis returns.

use std::{
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{AsyncCommands, Client, RedisResult, Script, aio::MultiplexedConnection};
use serde::{Serialize, de::DeserializeOwned};

use super::breaker::{Breaker, BreakerState, Permit};

/// Keys are namespaced and versioned: a format change bumps `v1` and can
/// never read old entries.
pub const PREFIX: &str = "reservoir:v1";
pub const CHANNEL: &str = "reservoir:v1:changes";

/// `SET` unless the stored JSON's `version` is newer, so a node holding an
/// old copy can never overwrite a newer one written by another node. An
/// equal version is replaced: it carries a newer `sync_state`.
const SET_IF_NEWER: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and decoded['version'] and tonumber(decoded['version']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

#[derive(Debug, Default)]
pub struct RemoteStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
    pub skipped: AtomicU64,
}

pub struct Remote {
    client: Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    pub breaker: Breaker,
    timeout: Duration,
    ttl: Duration,
    set_if_newer: Script,
    /// After a failed write, L2 may hold an older copy than this node wrote:
    /// reads skip L2 until every such entry has expired.
    distrust_until: Mutex<Option<Instant>>,
    pub stats: RemoteStats,
}

impl Remote {
    pub fn new(url: &str, timeout: Duration, ttl: Duration) -> anyhow::Result<Remote> {
        let client = Client::open(url)
            .map_err(|e| anyhow::anyhow!("RESERVOIR_REDIS_URL is not a valid Redis URL: {e}"))?;
        Ok(Remote {
            client,
            connection: Mutex::new(None),
            breaker: Breaker::new(Duration::from_millis(500), Duration::from_secs(10)),
            timeout,
            ttl,
            set_if_newer: Script::new(SET_IF_NEWER),
            distrust_until: Mutex::new(None),
            stats: RemoteStats::default(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `host:port` without credentials, for health output.
    pub fn display(&self) -> String {
        let info = self.client.get_connection_info();
        format!("{}", info.addr).replace("redis://", "")
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs one Redis call under the breaker and the timeout. `None` when
    /// skipped or failed; `recovered` is set when this call closed an open
    /// circuit (the caller may have missed invalidations meanwhile).
    async fn call<T, F, Fut>(&self, op: F) -> Option<(T, bool)>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if self.breaker.permit() == Permit::Skip {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let outcome = tokio::time::timeout(self.timeout, async {
            let connection = match self.cached_connection() {
                Some(connection) => connection,
                None => {
                    let connection = self.client.get_multiplexed_async_connection().await?;
                    *self.connection.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(connection.clone());
                    connection
                }
            };
            op(connection).await
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Some((value, self.breaker.success())),
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    fn cached_connection(&self) -> Option<MultiplexedConnection> {
        self.connection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn failed(&self, error: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("reservoir_cache_errors_total", "layer" => "l2").increment(1);
        // A timed-out connection may be wedged: the next call reconnects.
        *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.breaker.failure() {
            tracing::warn!(
                error,
                "Redis is failing; skipping it until it answers again"
            );
        }
    }

    /// Whether L2 reads can be trusted right now.
    pub fn trusted(&self) -> bool {
        let mut until = self
            .distrust_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                *until = None;
                true
            }
            None => true,
        }
    }

    /// A write to L2 failed: L2 may be stale for up to its TTL.
    pub fn distrust(&self) {
        *self
            .distrust_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + self.ttl);
    }

    /// Reads one JSON value. `Some((None, _))` is a clean miss.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<(Option<T>, bool)> {
        let key = key.to_owned();
        let (raw, recovered) = self
            .call(|mut c| async move { c.get::<_, Option<String>>(key).await })
            .await?;
        let value = raw.and_then(|text| serde_json::from_str(&text).ok());
        let counter = if value.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            if value.is_some() { "reservoir_cache_hits_total" } else { "reservoir_cache_misses_total" },
            "layer" => "l2"
        )
        .increment(1);
        Some((value, recovered))
    }

    /// Stores `value` unless L2 already holds an equal or newer version.
    pub async fn set_if_newer<T: Serialize>(&self, key: &str, value: &T, version: i64) -> bool {
        let Ok(json) = serde_json::to_string(value) else {
            return false;
        };
        let key = key.to_owned();
        let ttl = self.ttl.as_millis() as u64;
        let script = &self.set_if_newer;
        self.call(|mut c| async move {
            script
                .key(key)
                .arg(json)
                .arg(version)
                .arg(ttl)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .is_some()
    }

    pub async fn publish(&self, payload: &str) -> bool {
        let payload = payload.to_owned();
        self.call(|mut c| async move { c.publish::<_, _, i64>(CHANNEL, payload).await })
            .await
            .is_some()
    }

    pub async fn ping(&self) -> Result<(), String> {
        match self
            .call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
        {
            Some(_) => Ok(()),
            None => Err(match self.breaker_state() {
                BreakerState::Closed => "Redis did not answer".to_owned(),
                state => format!("Redis circuit breaker is {}", state.as_str()),
            }),
        }
    }
}

pub fn reservation_key(id: uuid::Uuid) -> String {
    format!("{PREFIX}:reservation:{id}")
}

pub fn resource_key(id: uuid::Uuid) -> String {
    format!("{PREFIX}:resource:{id}")
}
