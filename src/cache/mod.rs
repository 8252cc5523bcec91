//! The read cache: moka in memory (L1), Redis shared by all nodes (L2), then
//! the local SQLite (and, for ids unknown here, PostgreSQL).
//!
//! Never stale after a write: the writer hands every commit's changes to
//! [`Cache::committed`] before it replies, which puts the new versions into L1
//! (rows created here with ids made here are the exception: nothing older of
//! them can be cached, so they enter L1 on their first read instead, which
//! keeps rendering and cache upkeep off the writer's thread).
//! A reader that loaded an older copy concurrently cannot make it visible:
//! every L1 entry carries a stamp, either [`WRITTEN`] (put by a commit) or
//! the epoch of its key's stripe when the reader started loading; commits bump
//! the epoch, so a reader's copy that raced a commit no longer counts as a hit.
//! L2 and the other nodes are updated in the background (a slow Redis never
//! slows a write); until that is done, a key's pending version keeps older L2
//! copies from being served.
//!
//! Availability answers and list pages are cached in L1 only: each node
//! computes them from its own replica, and a shared answer computed elsewhere
//! could miss a booking this node has already acknowledged.
//!
//! L1 is bounded in bytes, not entries ([`CacheSettings::max_bytes`]): every
//! moka cache has a weigher that charges an entry its serialized size plus an
//! estimate of its in-memory copy and of moka's own bookkeeping, so the
//! resident memory of the process stays bounded whatever the rows hold.
//! Entities are kept with their JSON body and entity tag already rendered
//! ([`Cached`]): a cache hit is answered without serializing anything.

pub mod breaker;
pub mod remote;

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{body::Bytes, http::HeaderValue};
use futures::{StreamExt, future::join_all};
use moka::future::Cache as Moka;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use uuid::Uuid;

use crate::{
    domain::{
        reservation::{Reservation, SyncState},
        resource::Resource,
        version::etag,
    },
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
/// What one cached entry costs beyond its own data: moka's hash-table slot,
/// entry record, access-order and write-order nodes, and the key. An
/// estimate; it errs high.
const ENTRY_OVERHEAD: u32 = 256;
/// What the per-resource list of availability windows weighs (the answers'
/// bodies are weighed separately, in `answers`).
const WINDOWS_WEIGHT: u32 = ENTRY_OVERHEAD
    + (WINDOWS_PER_RESOURCE * (std::mem::size_of::<Window>() + MAX_WINDOW_QUERY)) as u32
    + std::mem::size_of::<Windows>() as u32;
/// Longest query string an availability answer is kept for (valid ones are
/// about 100 bytes), which bounds what a window list weighs.
const MAX_WINDOW_QUERY: usize = 256;
/// Changed rows waiting for L2 and pub/sub; beyond this they are dropped and
/// L2 is distrusted for its TTL. Counted in rows, not commits, so the memory
/// they hold stays bounded (a few MiB) however large the groups are.
const PUBLISH_QUEUE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Byte budget of the whole L1, shared out between the kinds (see
    /// [`Budget`]).
    pub max_bytes: u64,
    pub ttl: Duration,
    pub node_id: String,
}

/// How `max_bytes` is shared: reservations get most of it (they are read by
/// id far more often than anything else), resources an eighth (there are few
/// of them, and every create and availability request reads one), the rest
/// goes to availability answers and list pages, which are larger but fewer.
struct Budget {
    reservations: u64,
    resources: u64,
    windows: u64,
    answers: u64,
}

impl Budget {
    fn new(max_bytes: u64) -> Budget {
        let eighth = max_bytes / 8;
        Budget {
            reservations: eighth * 4,
            resources: eighth,
            windows: eighth / 4,
            answers: max_bytes - eighth * 5 - eighth / 4,
        }
    }
}

/// An entity with its JSON body and entity tag, rendered once when it enters
/// L1 so that every hit sends the same bytes without serializing again.
#[derive(Debug)]
pub struct Cached<T> {
    value: T,
    body: Bytes,
    etag: HeaderValue,
}

impl<T: Serialize + HasVersion> Cached<T> {
    pub fn new(value: T) -> Cached<T> {
        // Serializing these types cannot fail (string keys, no non-finite
        // floats); an empty body would only ever be a bug, never a panic.
        let body = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let etag = HeaderValue::from_str(&etag(value.version()))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Cached { value, body, etag }
    }
}

impl<T> Cached<T> {
    /// The entity as JSON, exactly as `serde_json::to_vec` renders it.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// `"<version>"`.
    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }

    /// The bytes this entry is charged in L1: the body, about as much again
    /// for the decoded value's strings and maps, and the fixed costs.
    fn weight(&self) -> u32 {
        let body = u32::try_from(self.body.len()).unwrap_or(u32::MAX / 4);
        ENTRY_OVERHEAD
            .saturating_add(std::mem::size_of::<Self>() as u32)
            .saturating_add(body.saturating_mul(2))
    }
}

impl<T> std::ops::Deref for Cached<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Cached<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

type Entry<T> = (Arc<Cached<T>>, u64);

/// A rendered answer kept in `answers`: an availability window's body (found
/// through its resource's [`Windows`]) or a list page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AnswerKey {
    /// `token` is unique per stored answer: a body can only be found through
    /// a live entry of its resource's windows.
    Window {
        resource: Uuid,
        token: u64,
    },
    List(ListKey),
}

/// Everything a list page depends on besides the rows themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListKey {
    pub resource_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub status: Option<&'static str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub after: Option<(i64, Uuid)>,
    pub limit: u32,
}

impl ListKey {
    /// The set of rows that can change the page: a resource's reservations
    /// when one is named (the page holds nothing else), else one user's, else
    /// all.
    fn scope(&self) -> Scope<'_> {
        match (&self.resource_id, &self.user_id) {
            (Some(resource), _) => Scope::Resource(*resource),
            (None, Some(user)) => Scope::User(user),
            (None, None) => Scope::All,
        }
    }
}

enum Scope<'a> {
    Resource(Uuid),
    User(&'a str),
    All,
}

/// The stamp to pass to [`Cache::store_list_page`], read before the query.
#[derive(Debug, Clone, Copy)]
pub struct ListStamp(u64);

#[derive(Debug, Default)]
pub struct L1Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

pub struct Cache {
    reservations: Moka<Uuid, Entry<Reservation>>,
    resources: Moka<Uuid, Entry<Resource>>,
    availability: Moka<Uuid, Arc<Mutex<Windows>>>,
    /// Bodies of availability answers and list pages, weighed in bytes.
    answers: Moka<AnswerKey, (Bytes, u64)>,
    epochs: Box<[AtomicU64]>,
    /// List-page stamps: bumped by every change to a reservation of the
    /// resource or user hashed to the stripe (`all` for any change). A page
    /// stored under an older stamp is no longer a hit.
    scopes: Box<[AtomicU64]>,
    all: AtomicU64,
    /// Source of [`AnswerKey::Window`] tokens.
    tokens: AtomicU64,
    counters: Counters,
    /// Versions committed here but not yet written to L2.
    pending: Mutex<HashMap<Uuid, i64>>,
    remote: Option<Arc<Remote>>,
    publish: Option<mpsc::Sender<Vec<Changed>>>,
    /// Rows sent to the publisher and not yet written to L2.
    queued: AtomicUsize,
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
    /// The request's raw query string, which names the window (`from`, `to`,
    /// `party_size`); lookups compare it without parsing it.
    query: Box<str>,
    /// The body's key in `answers`.
    token: u64,
}

/// Metric handles, registered once: looking a counter up by name and labels
/// on every request showed up in the profile of cache hits.
struct Counters {
    l1_hits: metrics::Counter,
    l2_hits: metrics::Counter,
    l1_misses: metrics::Counter,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            l1_hits: metrics::counter!("reservoir_cache_hits_total", "layer" => "l1"),
            l2_hits: metrics::counter!("reservoir_cache_hits_total", "layer" => "l2"),
            l1_misses: metrics::counter!("reservoir_cache_misses_total", "layer" => "l1"),
        }
    }
}

/// What one node tells the others about a commit.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    node: String,
    reservations: Vec<Reservation>,
    resources: Vec<Resource>,
    /// Reservations whose (id, version) PostgreSQL acknowledged: receivers
    /// mark a copy they cache at that version synced. Absent in messages
    /// from older nodes.
    #[serde(default)]
    synced: Vec<(Uuid, i64)>,
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
        let budget = Budget::new(settings.max_bytes);
        let cache = Arc::new(Cache {
            reservations: Moka::builder()
                .max_capacity(budget.reservations)
                .weigher(|_, (entry, _): &Entry<Reservation>| entry.weight())
                .time_to_live(settings.ttl)
                .build(),
            resources: Moka::builder()
                .max_capacity(budget.resources)
                .weigher(|_, (entry, _): &Entry<Resource>| entry.weight())
                .time_to_live(settings.ttl)
                .build(),
            availability: Moka::builder()
                .max_capacity(budget.windows)
                .weigher(|_, _| WINDOWS_WEIGHT)
                .time_to_live(settings.ttl)
                .build(),
            answers: Moka::builder()
                .max_capacity(budget.answers)
                .weigher(|key: &AnswerKey, (body, _): &(Bytes, u64)| {
                    let key = match key {
                        AnswerKey::Window { .. } => 0,
                        AnswerKey::List(list) => list.user_id.as_ref().map_or(0, String::len),
                    };
                    u32::try_from(body.len() + key)
                        .unwrap_or(u32::MAX / 2)
                        .saturating_add(ENTRY_OVERHEAD)
                })
                .time_to_live(settings.ttl)
                .build(),
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            scopes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            counters: Counters::new(),
            pending: Mutex::new(HashMap::new()),
            remote: remote.clone(),
            publish,
            queued: AtomicUsize::new(0),
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

    fn scope_stripe(&self, scope: &Scope<'_>) -> &AtomicU64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match scope {
            Scope::Resource(id) => (0u8, id).hash(&mut hasher),
            Scope::User(user) => (1u8, user).hash(&mut hasher),
            Scope::All => return &self.all,
        }
        &self.scopes[hasher.finish() as usize % STRIPES]
    }

    fn hit_l1(&self) {
        self.l1.hits.fetch_add(1, Ordering::Relaxed);
        self.counters.l1_hits.increment(1);
    }

    fn hit_l2(&self) {
        self.counters.l2_hits.increment(1);
    }

    fn miss(&self) {
        self.l1.misses.fetch_add(1, Ordering::Relaxed);
        self.counters.l1_misses.increment(1);
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
    ) -> AppResult<Option<Arc<Cached<Reservation>>>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<Reservation>>>,
    {
        self.read(&self.reservations, id, reservation_key, |r| r.version, load)
            .await
    }

    /// A resource by id through L1, L2 and `load`.
    pub async fn resource<F, Fut>(
        &self,
        id: Uuid,
        load: F,
    ) -> AppResult<Option<Arc<Cached<Resource>>>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<Resource>>>,
    {
        self.read(&self.resources, id, resource_key, |r| r.version, load)
            .await
    }

    async fn read<T, F, Fut>(
        &self,
        l1: &Moka<Uuid, Entry<T>>,
        id: Uuid,
        key: fn(Uuid) -> String,
        version: fn(&T) -> i64,
        load: F,
    ) -> AppResult<Option<Arc<Cached<T>>>>
    where
        T: Serialize + serde::de::DeserializeOwned + HasVersion + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<T>>>,
    {
        // The hit path first, on its own: the miss path's future (L2, the
        // loader, moka's initializer) is large, and keeping it out of this
        // one keeps every request's future small; copying it around showed
        // as the top symbol (memmove) in the profile of hits.
        if let Some((value, stamp)) = l1.get(&id).await
            && (stamp == WRITTEN || stamp == self.stripe(&id).load(Ordering::Acquire))
        {
            self.hit_l1();
            return Ok(Some(value));
        }
        Box::pin(self.read_through(l1, id, key, version, load)).await
    }

    /// [`Cache::read`] past a hit: reloads, retrying if commits race it.
    async fn read_through<T, F, Fut>(
        &self,
        l1: &Moka<Uuid, Entry<T>>,
        id: Uuid,
        key: fn(Uuid) -> String,
        version: fn(&T) -> i64,
        load: F,
    ) -> AppResult<Option<Arc<Cached<T>>>>
    where
        T: Serialize + serde::de::DeserializeOwned + HasVersion + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<T>>>,
    {
        // A bounded number of rounds: each retry means a commit raced the load.
        for _ in 0..4 {
            if let Some((value, stamp)) = l1.get(&id).await {
                if stamp == WRITTEN || stamp == self.stripe(&id).load(Ordering::Acquire) {
                    self.hit_l1();
                    return Ok(Some(value));
                }
                l1.invalidate(&id).await;
            }
            self.miss();
            let loaded = l1
                .try_get_with(id, async {
                    let epoch = self.stripe(&id).load(Ordering::Acquire);
                    let key = key(id);
                    if let Some(value) = self.read_l2::<T>(&key, id, version).await {
                        self.hit_l2();
                        return Ok((Arc::new(Cached::new(value)), epoch));
                    }
                    match load().await? {
                        Some(value) => {
                            self.fill_l2(&key, &value, version(&value));
                            Ok((Arc::new(Cached::new(value)), epoch))
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
        Ok(load().await?.map(|value| Arc::new(Cached::new(value))))
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

    /// A cached availability answer (serialized JSON) for this exact query
    /// string. Counts a hit when found; the caller counts a miss with
    /// [`Cache::availability_miss`] once the query proved valid, so that
    /// rejected requests count as neither.
    pub async fn availability(&self, resource: Uuid, query: &str) -> Option<Bytes> {
        let token = match self.availability.get(&resource).await {
            Some(windows) => windows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answers
                .iter()
                .find(|w| &*w.query == query)
                .map(|w| w.token),
            None => None,
        };
        // The body may have been evicted on its own (it is weighed apart
        // from the window list): that is a miss like any other.
        let found = match token {
            Some(token) => self
                .answers
                .get(&AnswerKey::Window { resource, token })
                .await
                .map(|(body, _)| body),
            None => None,
        };
        if found.is_some() {
            self.hit_l1();
        }
        found
    }

    /// Counts an availability request that found no cached answer.
    pub fn availability_miss(&self) {
        self.miss();
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
    ///
    /// The window goes into the resource's list first, under its lock and
    /// only if no change came in since `generation`; a change after that
    /// point finds the window in the list and drops it. The body is inserted
    /// afterwards: until then a lookup finds no body and computes the answer
    /// again, which is merely a miss.
    pub async fn store_availability(
        &self,
        resource: Uuid,
        windows: &Mutex<Windows>,
        generation: u64,
        (from, to, _party_size): (i64, i64, u32),
        query: &str,
        body: Bytes,
    ) {
        if query.len() > MAX_WINDOW_QUERY {
            return;
        }
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut windows = windows.lock().unwrap_or_else(|e| e.into_inner());
            if windows.generation != generation {
                return;
            }
            // Concurrent misses on one window each compute it; keep one.
            if windows.answers.iter().any(|w| &*w.query == query) {
                return;
            }
            let evicted = (windows.answers.len() >= WINDOWS_PER_RESOURCE)
                .then(|| windows.answers.remove(0).token);
            windows.answers.push(Window {
                from,
                to,
                query: query.into(),
                token,
            });
            evicted
        };
        if let Some(old) = evicted {
            self.answers
                .invalidate(&AnswerKey::Window {
                    resource,
                    token: old,
                })
                .await;
        }
        self.answers
            .insert(AnswerKey::Window { resource, token }, (body, 0))
            .await;
    }

    /// Drops the availability answers of `resource` that overlap `spans`
    /// (all of them when `spans` is `None`).
    async fn forget_availability(&self, resource: Uuid, spans: Option<&[(i64, i64)]>) {
        if let Some(windows) = self.availability.get(&resource).await {
            let dropped: Vec<u64> = {
                let mut windows = windows.lock().unwrap_or_else(|e| e.into_inner());
                windows.generation += 1;
                let (keep, drop): (Vec<Window>, Vec<Window>) = std::mem::take(&mut windows.answers)
                    .into_iter()
                    .partition(|w| match spans {
                        None => false,
                        Some(spans) => !spans
                            .iter()
                            .any(|(start, end)| *start < w.to && *end > w.from),
                    });
                windows.answers = keep;
                drop.into_iter().map(|w| w.token).collect()
            };
            // Only memory: the windows are out of the list, so their bodies
            // can no longer be found.
            for token in dropped {
                self.answers
                    .invalidate(&AnswerKey::Window { resource, token })
                    .await;
            }
        }
    }

    /// The stamp of a list page's scope; read it before running the query.
    pub fn list_stamp(&self, key: &ListKey) -> ListStamp {
        ListStamp(self.scope_stripe(&key.scope()).load(Ordering::Acquire))
    }

    /// A cached list page, unless a reservation in its scope changed since
    /// it was stored.
    pub async fn list_page(&self, key: &ListKey) -> Option<Bytes> {
        let found = match self.answers.get(&AnswerKey::List(key.clone())).await {
            Some((body, stamp)) if stamp == self.list_stamp(key).0 => Some(body),
            _ => None,
        };
        match &found {
            Some(_) => self.hit_l1(),
            None => self.miss(),
        }
        found
    }

    /// Stores a list page computed after `stamp` was read. A change in its
    /// scope since then makes the stored page a miss at once, so there is no
    /// window in which a reader could be served rows older than an
    /// acknowledged write.
    pub async fn store_list_page(&self, key: ListKey, stamp: ListStamp, body: Bytes) {
        if self.list_stamp(&key).0 != stamp.0 {
            return;
        }
        self.answers
            .insert(AnswerKey::List(key), (body, stamp.0))
            .await;
    }

    /// Makes every cached list page that may hold `reservation` a miss.
    fn forget_lists(&self, resource_id: Uuid, user_id: &str) {
        self.scope_stripe(&Scope::Resource(resource_id))
            .fetch_add(1, Ordering::AcqRel);
        self.scope_stripe(&Scope::User(user_id))
            .fetch_add(1, Ordering::AcqRel);
        self.all.fetch_add(1, Ordering::AcqRel);
    }

    /// Called by the writer after each commit, before it replies.
    pub async fn committed(&self, changes: &[Changed]) {
        // Pending first: a reader that sees the epoch bump below must also
        // see that L2 is behind, or it could take L2's older copy as current.
        if self.publish.is_some() {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (id, version) in changes.iter().filter_map(written_to_l2) {
                let entry = pending.entry(id).or_insert(version);
                *entry = (*entry).max(version);
            }
        }
        self.apply(changes).await;
        if let Some(publish) = &self.publish
            && !self.enqueue(publish, changes)
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

    /// Hands a commit's changes to the publisher, unless [`PUBLISH_QUEUE`]
    /// rows are already waiting.
    fn enqueue(&self, publish: &mpsc::Sender<Vec<Changed>>, changes: &[Changed]) -> bool {
        let rows = changes.len();
        let waiting = self.queued.fetch_add(rows, Ordering::AcqRel);
        if waiting + rows <= PUBLISH_QUEUE && publish.try_send(changes.to_vec()).is_ok() {
            return true;
        }
        self.queued.fetch_sub(rows, Ordering::AcqRel);
        false
    }

    /// Puts changed rows into L1 and drops the availability they affect.
    async fn apply(&self, changes: &[Changed]) {
        for change in changes {
            match change {
                Changed::Reservation {
                    reservation,
                    spans,
                    fresh,
                } => {
                    self.forget_lists(reservation.resource_id, &reservation.user_id);
                    // A fresh row has no older copy to replace (misses are
                    // not cached), so the writer does not spend its time
                    // rendering and inserting it: a create's row is cached
                    // by its first read, like any row read from SQLite.
                    if !fresh {
                        self.stripe(&reservation.id).fetch_add(1, Ordering::AcqRel);
                        self.put_newer(
                            &self.reservations,
                            reservation.id,
                            reservation,
                            reservation.version,
                        )
                        .await;
                    }
                    self.forget_availability(reservation.resource_id, Some(spans))
                        .await;
                }
                Changed::Resource(resource) => {
                    self.stripe(&resource.id).fetch_add(1, Ordering::AcqRel);
                    self.put_newer(&self.resources, resource.id, resource, resource.version)
                        .await;
                    self.forget_availability(resource.id, None).await;
                }
                Changed::Synced {
                    id,
                    version,
                    resource_id,
                    user_id,
                } => {
                    // List pages show the sync state; availability does not.
                    self.forget_lists(*resource_id, user_id);
                    // A read that loaded the pending row before this commit
                    // must not cache it afterwards as current.
                    self.stripe(id).fetch_add(1, Ordering::AcqRel);
                    self.mark_synced(*id, *version).await;
                }
            }
        }
    }

    /// Marks a cached copy of `id` at exactly `version` synced; caches
    /// nothing when no such copy is held.
    async fn mark_synced(&self, id: Uuid, version: i64) {
        if let Some((cached, _)) = self.reservations.get(&id).await
            && cached.version == version
            && cached.sync_state == SyncState::Pending
        {
            let mut reservation = cached.value.clone();
            reservation.sync_state = SyncState::Synced;
            self.reservations
                .insert(id, (Arc::new(Cached::new(reservation)), WRITTEN))
                .await;
        }
    }

    async fn put_newer<T>(&self, l1: &Moka<Uuid, Entry<T>>, id: Uuid, value: &T, version: i64)
    where
        T: HasVersion + Serialize + Clone + Send + Sync + 'static,
    {
        let newer = match l1.get(&id).await {
            Some((cached, _)) => cached.version() <= version,
            None => true,
        };
        if newer {
            l1.insert(id, (Arc::new(Cached::new(value.clone())), WRITTEN))
                .await;
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
        for (id, version) in &message.synced {
            self.mark_synced(*id, *version).await;
        }
    }
}

pub trait HasVersion {
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

/// The (id, version) a change writes to L2; `None` for a sync acknowledgement,
/// which L2 does not store (an equal version is never overwritten there).
fn written_to_l2(change: &Changed) -> Option<(Uuid, i64)> {
    match change {
        Changed::Reservation { reservation, .. } => Some((reservation.id, reservation.version)),
        Changed::Resource(resource) => Some((resource.id, resource.version)),
        Changed::Synced { .. } => None,
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
        let mut message = Message {
            node: cache.node_id.clone(),
            reservations: Vec::new(),
            resources: Vec::new(),
            synced: Vec::new(),
        };
        for change in &changes {
            match change {
                Changed::Reservation { reservation, .. } => {
                    message.reservations.push(reservation.clone())
                }
                Changed::Resource(resource) => message.resources.push(resource.clone()),
                Changed::Synced { id, version, .. } => message.synced.push((*id, *version)),
            }
        }
        // The commit's rows go out together on the multiplexed connection,
        // one round trip for the lot rather than one per row: one after
        // another, this task fell behind a busy writer and its queue held
        // the backlog in memory.
        let written = join_all(changes.iter().map(|change| async {
            match change {
                Changed::Reservation { reservation, .. } => {
                    remote
                        .set_if_newer(
                            &reservation_key(reservation.id),
                            reservation,
                            reservation.version,
                        )
                        .await
                }
                Changed::Resource(resource) => {
                    remote
                        .set_if_newer(&resource_key(resource.id), resource, resource.version)
                        .await
                }
                // Nothing to store: L2 keeps an equal version as it is.
                Changed::Synced { .. } => true,
            }
        }))
        .await;
        let mut ok = written.into_iter().all(|written| written);
        if let Ok(payload) = serde_json::to_string(&message) {
            ok &= remote.publish(&payload).await;
        }
        if !ok {
            remote.distrust();
        }
        let mut pending = cache.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (id, version) in changes.iter().filter_map(written_to_l2) {
            if pending.get(&id).is_some_and(|v| *v <= version) {
                pending.remove(&id);
            }
        }
        drop(pending);
        cache.queued.fetch_sub(changes.len(), Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes of an older build publish messages without `synced`; they must
    /// still be read, and the field must round-trip between newer nodes.
    #[test]
    fn messages_without_synced_versions_are_still_read() {
        let old: Message =
            serde_json::from_str(r#"{"node":"n1","reservations":[],"resources":[]}"#).unwrap();
        assert_eq!(old.node, "n1");
        assert!(old.synced.is_empty());

        let id = Uuid::now_v7();
        let new = Message {
            node: "n2".into(),
            reservations: Vec::new(),
            resources: Vec::new(),
            synced: vec![(id, 3)],
        };
        let read: Message = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(read.synced, [(id, 3)]);
    }
}
