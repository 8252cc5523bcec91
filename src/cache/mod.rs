//! The read cache: moka in memory (L1), Redis shared by all nodes (L2), then
//! the local SQLite (and, for ids unknown here, PostgreSQL).
//!
//! Never stale after a write: the writer hands every commit's changes to
//! [`Cache::committed`] before it replies, which puts the new versions into L1.
//! A reader that loaded an older copy concurrently cannot make it visible:
//! every L1 entry carries a stamp, either [`WRITTEN`] (put by a commit) or
//! the epoch of its key's stripe when the reader started loading; commits bump
//! the epoch, so a reader's copy that raced a commit no longer counts as a hit.
//! L2 and the other nodes are updated in the background (a slow Redis never
//! slows a write); until that is done, a key's pending version keeps older L2
//! copies from being served.
//!
//! Availability answers are cached in L1 only: each node computes them from
//! its own replica, and a shared answer computed elsewhere could miss a
//! booking this node has already acknowledged.

pub mod breaker;
pub mod remote;

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use moka::future::Cache as Moka;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use uuid::Uuid;

use crate::{
    domain::{reservation::Reservation, resource::Resource},
    error::{AppError, AppResult},
    shutdown,
    store::sqlite::writer::Changed,
};
use remote::{CHANNEL, Remote, reservation_key, resource_key};

/// Stamp of entries put by a commit (or by another node's change): always
/// current until replaced.
const WRITTEN: u64 = u64::MAX;
/// Epoch stripes: a commit makes readers' copies of the keys in its stripe
/// reload once; more stripes, fewer needless reloads.
const STRIPES: usize = 1 << 16;
/// Availability windows kept per resource.
const WINDOWS_PER_RESOURCE: usize = 32;
/// Changes waiting for L2 and pub/sub; beyond this they are dropped and L2 is
/// distrusted for its TTL.
const PUBLISH_QUEUE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub max_entries: u64,
    pub ttl: Duration,
    pub node_id: String,
}

type Entry<T> = (Arc<T>, u64);

#[derive(Debug, Default)]
pub struct L1Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

pub struct Cache {
    reservations: Moka<Uuid, Entry<Reservation>>,
    resources: Moka<Uuid, Entry<Resource>>,
    availability: Moka<Uuid, Arc<Mutex<Windows>>>,
    epochs: Box<[AtomicU64]>,
    /// Versions committed here but not yet written to L2.
    pending: Mutex<HashMap<Uuid, i64>>,
    remote: Option<Arc<Remote>>,
    publish: Option<mpsc::Sender<Vec<Changed>>>,
    node_id: String,
    pub l1: L1Stats,
}

/// The availability answers cached for one resource.
#[derive(Default)]
pub struct Windows {
    /// Bumped by every change to the resource: an answer computed across a
    /// bump is not stored.
    generation: u64,
    answers: Vec<Window>,
}

struct Window {
    from: i64,
    to: i64,
    party_size: u32,
    body: Arc<Vec<u8>>,
}

/// What one node tells the others about a commit.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    node: String,
    reservations: Vec<Reservation>,
    resources: Vec<Resource>,
}

impl Cache {
    /// Builds the cache; with `remote`, also the background tasks that write
    /// L2, publish changes and apply other nodes' changes.
    pub fn start(
        settings: CacheSettings,
        remote: Option<Remote>,
        stop: watch::Receiver<bool>,
    ) -> (Arc<Cache>, Vec<JoinHandle<()>>) {
        let remote = remote.map(Arc::new);
        let (publish, queue) = match remote {
            Some(_) => {
                let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let cache = Arc::new(Cache {
            reservations: Moka::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ttl)
                .build(),
            resources: Moka::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ttl)
                .build(),
            availability: Moka::builder()
                .max_capacity(settings.max_entries / WINDOWS_PER_RESOURCE as u64 + 1)
                .time_to_live(settings.ttl)
                .build(),
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            pending: Mutex::new(HashMap::new()),
            remote: remote.clone(),
            publish,
            node_id: settings.node_id,
            l1: L1Stats::default(),
        });
        let mut tasks = Vec::new();
        if let (Some(remote), Some(queue)) = (remote, queue) {
            tasks.push(tokio::spawn(publisher(
                cache.clone(),
                remote.clone(),
                queue,
                stop.clone(),
            )));
            tasks.push(tokio::spawn(subscriber(cache.clone(), remote, stop)));
        }
        (cache, tasks)
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_deref()
    }

    fn stripe(&self, id: &Uuid) -> &AtomicU64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        &self.epochs[hasher.finish() as usize % STRIPES]
    }

    fn hit(&self, layer: &'static str) {
        if layer == "l1" {
            self.l1.hits.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("reservoir_cache_hits_total", "layer" => layer).increment(1);
    }

    fn miss(&self) {
        self.l1.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("reservoir_cache_misses_total", "layer" => "l1").increment(1);
    }

    /// Reservations and resources held in L1 (moka counts lazily: settle
    /// its pending bookkeeping first).
    pub async fn entries(&self) -> u64 {
        self.reservations.run_pending_tasks().await;
        self.resources.run_pending_tasks().await;
        self.reservations.entry_count() + self.resources.entry_count()
    }

    /// A reservation by id through L1, L2 and `load` (SQLite, then Postgres).
    pub async fn reservation<F, Fut>(
        &self,
        id: Uuid,
        load: F,
    ) -> AppResult<Option<Arc<Reservation>>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<Reservation>>>,
    {
        self.read(
            &self.reservations,
            id,
            reservation_key(id),
            |r| r.version,
            load,
        )
        .await
    }

    /// A resource by id through L1, L2 and `load`.
    pub async fn resource<F, Fut>(&self, id: Uuid, load: F) -> AppResult<Option<Arc<Resource>>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<Resource>>>,
    {
        self.read(&self.resources, id, resource_key(id), |r| r.version, load)
            .await
    }

    async fn read<T, F, Fut>(
        &self,
        l1: &Moka<Uuid, Entry<T>>,
        id: Uuid,
        key: String,
        version: fn(&T) -> i64,
        load: F,
    ) -> AppResult<Option<Arc<T>>>
    where
        T: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<T>>>,
    {
        // A bounded number of rounds: each retry means a commit raced the load.
        for _ in 0..4 {
            if let Some((value, stamp)) = l1.get(&id).await {
                if stamp == WRITTEN || stamp == self.stripe(&id).load(Ordering::Acquire) {
                    self.hit("l1");
                    return Ok(Some(value));
                }
                l1.invalidate(&id).await;
            }
            self.miss();
            let loaded = l1
                .try_get_with(id, async {
                    let epoch = self.stripe(&id).load(Ordering::Acquire);
                    if let Some(value) = self.read_l2::<T>(&key, id, version).await {
                        self.hit("l2");
                        return Ok((Arc::new(value), epoch));
                    }
                    match load().await? {
                        Some(value) => {
                            self.fill_l2(&key, &value, version(&value));
                            Ok((Arc::new(value), epoch))
                        }
                        None => Err(AppError::NotFound(String::new())),
                    }
                })
                .await;
            match loaded {
                Ok((value, stamp))
                    if stamp == WRITTEN || stamp == self.stripe(&id).load(Ordering::Acquire) =>
                {
                    return Ok(Some(value));
                }
                Ok(_) => continue,
                Err(error) => match error.as_ref() {
                    AppError::NotFound(_) => return Ok(None),
                    other => return Err(other.clone()),
                },
            }
        }
        // Commits kept racing: answer from the source of truth, uncached.
        Ok(load().await?.map(Arc::new))
    }

    async fn read_l2<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        id: Uuid,
        version: fn(&T) -> i64,
    ) -> Option<T> {
        let remote = self.remote.as_ref()?;
        if !remote.trusted() {
            return None;
        }
        // The floor is read *before* the GET: the publisher clears a pending
        // version only after Redis acknowledged the SET, and Redis answers in
        // order, so a GET sent after the clearing sees the new copy. Checking
        // only after the GET would let an answer that left Redis just before
        // the SET pass once the entry was cleared.
        let floor = self.pending_version(id);
        let (value, recovered) = remote.get::<T>(key).await?;
        if recovered {
            self.forget_entities().await;
        }
        let value = value?;
        let newest_known = floor.max(self.pending_version(id));
        match newest_known {
            // L2 has not caught up with a write this node committed.
            Some(newer) if newer > version(&value) => None,
            _ => Some(value),
        }
    }

    fn pending_version(&self, id: Uuid) -> Option<i64> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    /// Stores a value read from SQLite in L2, in the background.
    fn fill_l2<T: Serialize + Send + Sync + 'static>(&self, key: &str, value: &T, version: i64) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let Ok(json) = serde_json::to_value(value) else {
            return;
        };
        let key = key.to_owned();
        tokio::spawn(async move {
            remote.set_if_newer(&key, &json, version).await;
        });
    }

    /// A cached availability answer (serialized JSON) for this exact window.
    pub async fn availability(
        &self,
        resource: Uuid,
        from: i64,
        to: i64,
        party_size: u32,
    ) -> Option<Arc<Vec<u8>>> {
        let found = match self.availability.get(&resource).await {
            Some(windows) => windows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answers
                .iter()
                .find(|w| w.from == from && w.to == to && w.party_size == party_size)
                .map(|w| w.body.clone()),
            None => None,
        };
        match &found {
            Some(_) => self.hit("l1"),
            None => self.miss(),
        }
        found
    }

    /// The generation to pass to [`Cache::store_availability`]: read it
    /// before computing the answer.
    pub async fn availability_generation(&self, resource: Uuid) -> (Arc<Mutex<Windows>>, u64) {
        let windows = self
            .availability
            .get_with(resource, async { Arc::new(Mutex::new(Windows::default())) })
            .await;
        let generation = windows.lock().unwrap_or_else(|e| e.into_inner()).generation;
        (windows, generation)
    }

    /// Stores an answer unless the resource changed since `generation`.
    pub fn store_availability(
        &self,
        windows: &Mutex<Windows>,
        generation: u64,
        (from, to, party_size): (i64, i64, u32),
        body: Arc<Vec<u8>>,
    ) {
        let mut windows = windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.generation != generation {
            return;
        }
        if windows.answers.len() >= WINDOWS_PER_RESOURCE {
            windows.answers.remove(0);
        }
        windows.answers.push(Window {
            from,
            to,
            party_size,
            body,
        });
    }

    /// Drops the availability answers of `resource` that overlap `spans`
    /// (all of them when `spans` is `None`).
    async fn forget_availability(&self, resource: Uuid, spans: Option<&[(i64, i64)]>) {
        if let Some(windows) = self.availability.get(&resource).await {
            let mut windows = windows.lock().unwrap_or_else(|e| e.into_inner());
            windows.generation += 1;
            match spans {
                None => windows.answers.clear(),
                Some(spans) => windows.answers.retain(|w| {
                    !spans
                        .iter()
                        .any(|(start, end)| *start < w.to && *end > w.from)
                }),
            }
        }
    }

    /// Called by the writer after each commit, before it replies.
    pub async fn committed(&self, changes: &[Changed]) {
        // Pending first: a reader that sees the epoch bump below must also
        // see that L2 is behind, or it could take L2's older copy as current.
        if self.publish.is_some() {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for change in changes {
                let (id, version) = identity(change);
                let entry = pending.entry(id).or_insert(version);
                *entry = (*entry).max(version);
            }
        }
        self.apply(changes).await;
        if let Some(publish) = &self.publish
            && publish.try_send(changes.to_vec()).is_err()
        {
            // Too far behind: L2 may now miss writes; stop trusting it.
            if let Some(remote) = &self.remote {
                remote.distrust();
            }
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
    }

    /// Puts changed rows into L1 and drops the availability they affect.
    async fn apply(&self, changes: &[Changed]) {
        for change in changes {
            match change {
                Changed::Reservation { reservation, spans } => {
                    self.stripe(&reservation.id).fetch_add(1, Ordering::AcqRel);
                    self.put_newer(
                        &self.reservations,
                        reservation.id,
                        reservation,
                        reservation.version,
                    )
                    .await;
                    self.forget_availability(reservation.resource_id, Some(spans))
                        .await;
                }
                Changed::Resource(resource) => {
                    self.stripe(&resource.id).fetch_add(1, Ordering::AcqRel);
                    self.put_newer(&self.resources, resource.id, resource, resource.version)
                        .await;
                    self.forget_availability(resource.id, None).await;
                }
            }
        }
    }

    async fn put_newer<T>(&self, l1: &Moka<Uuid, Entry<T>>, id: Uuid, value: &T, version: i64)
    where
        T: HasVersion + Clone + Send + Sync + 'static,
    {
        let newer = match l1.get(&id).await {
            Some((cached, _)) => cached.version() <= version,
            None => true,
        };
        if newer {
            l1.insert(id, (Arc::new(value.clone()), WRITTEN)).await;
        }
    }

    /// Forgets every cached row: after Redis was unreachable, changes from
    /// other nodes may have been missed.
    async fn forget_entities(&self) {
        self.reservations.invalidate_all();
        self.resources.invalidate_all();
        tracing::info!(
            "Redis is back; dropped in-memory entries that may have missed other nodes' changes"
        );
    }

    /// Applies another node's changes to L1.
    async fn apply_remote(&self, message: Message) {
        if message.node == self.node_id {
            return;
        }
        for reservation in &message.reservations {
            self.put_newer(
                &self.reservations,
                reservation.id,
                reservation,
                reservation.version,
            )
            .await;
        }
        for resource in &message.resources {
            self.put_newer(&self.resources, resource.id, resource, resource.version)
                .await;
        }
    }
}

trait HasVersion {
    fn version(&self) -> i64;
}

impl HasVersion for Reservation {
    fn version(&self) -> i64 {
        self.version
    }
}

impl HasVersion for Resource {
    fn version(&self) -> i64 {
        self.version
    }
}

fn identity(change: &Changed) -> (Uuid, i64) {
    match change {
        Changed::Reservation { reservation, .. } => (reservation.id, reservation.version),
        Changed::Resource(resource) => (resource.id, resource.version),
    }
}

/// Writes committed changes to L2 and publishes them to the other nodes.
async fn publisher(
    cache: Arc<Cache>,
    remote: Arc<Remote>,
    mut queue: mpsc::Receiver<Vec<Changed>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let changes = tokio::select! {
            changes = queue.recv() => match changes {
                Some(changes) => changes,
                None => return,
            },
            _ = shutdown::requested(&mut stop) => return,
        };
        let mut ok = true;
        let mut message = Message {
            node: cache.node_id.clone(),
            reservations: Vec::new(),
            resources: Vec::new(),
        };
        for change in &changes {
            match change {
                Changed::Reservation { reservation, .. } => {
                    ok &= remote
                        .set_if_newer(
                            &reservation_key(reservation.id),
                            reservation,
                            reservation.version,
                        )
                        .await;
                    message.reservations.push(reservation.clone());
                }
                Changed::Resource(resource) => {
                    ok &= remote
                        .set_if_newer(&resource_key(resource.id), resource, resource.version)
                        .await;
                    message.resources.push(resource.clone());
                }
            }
        }
        if let Ok(payload) = serde_json::to_string(&message) {
            ok &= remote.publish(&payload).await;
        }
        if !ok {
            remote.distrust();
        }
        let mut pending = cache.pending.lock().unwrap_or_else(|e| e.into_inner());
        for change in &changes {
            let (id, version) = identity(change);
            if pending.get(&id).is_some_and(|v| *v <= version) {
                pending.remove(&id);
            }
        }
    }
}

/// Applies other nodes' changes as they are published; resubscribes after
/// any interruption and then drops L1 entries that may have missed changes.
async fn subscriber(cache: Arc<Cache>, remote: Arc<Remote>, mut stop: watch::Receiver<bool>) {
    let mut subscribed_before = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = tokio::time::timeout(Duration::from_secs(1), async {
            let mut pubsub = remote.client().get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let mut pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            _ => {
                tokio::select! {
                    _ = shutdown::requested(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            }
        };
        // Whatever L1 holds may have missed changes published before this
        // subscription was live (at start-up too, if only for milliseconds).
        if subscribed_before || cache.entries().await > 0 {
            cache.forget_entities().await;
        }
        subscribed_before = true;
        let mut messages = pubsub.on_message();
        let mut check = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown::requested(&mut stop) => return,
                message = messages.next() => match message {
                    Some(message) => {
                        if let Ok(payload) = message.get_payload::<String>()
                            && let Ok(message) = serde_json::from_str::<Message>(&payload)
                        {
                            cache.apply_remote(message).await;
                        }
                    }
                    None => break,
                },
                _ = check.tick() => {
                    // A Redis that stopped answering leaves the subscription
                    // silently dead: follow the breaker and start over.
                    if remote.breaker_state() != breaker::BreakerState::Closed {
                        break;
                    }
                }
            }
        }
    }
}
