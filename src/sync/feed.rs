//! The change feed: pulls what other nodes wrote from PostgreSQL into this
//! node's SQLite, so reads, lists, availability and the local capacity check
//! see the whole cluster.
//!
//! Woken at once by `LISTEN reservoir_changes` (every sync batch notifies at
//! commit) and by a timer as a fallback. Rows are applied version-ordered
//! through the writer (an older version never overwrites a newer one, and this
//! node's own rows coming back change nothing), together with the persisted
//! cursor in the same SQLite transaction, so a crash never skips or re-applies
//! a page. The cursor cannot miss late-committing transactions: see the change
//! feed notes in migrations/postgres.

use std::{sync::Arc, time::Duration};

use sqlx::{postgres::PgListener, query_scalar};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::MissedTickBehavior,
};

use super::backoff::Backoff;
use crate::{
    shutdown,
    store::{
        postgres::{FeedCursor, Postgres},
        sqlite::{
            Reads, Writer,
            writer::{FEED_CURSOR, Op},
        },
    },
};

/// Rows per table per page.
const PAGE: u32 = 1000;
pub const CHANNEL: &str = "reservoir_changes";

pub struct FeedSettings {
    pub node_id: String,
    pub interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

pub fn spawn(
    postgres: Postgres,
    reads: Reads,
    writer: Writer,
    settings: FeedSettings,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(
        postgres.clone(),
        settings.node_id.clone(),
        wake.clone(),
        stop.clone(),
    ));
    let feed = tokio::spawn(run(postgres, reads, writer, settings, wake, stop));
    vec![listener, feed]
}

async fn run(
    postgres: Postgres,
    reads: Reads,
    writer: Writer,
    settings: FeedSettings,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut cursor = match load_cursor(&reads).await {
        Ok(cursor) => cursor,
        Err(error) => {
            tracing::error!(%error, "cannot read the change-feed cursor; the feed is off");
            return;
        }
    };
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut backoff: Option<Backoff> = None;
    let mut migrated = false;
    loop {
        tokio::select! {
            _ = shutdown::requested(&mut stop) => return,
            _ = wake.notified() => {}
            _ = tick.tick() => {}
        }
        loop {
            if *stop.borrow() {
                return;
            }
            // The sync task migrates too; sqlx serialises the two with an
            // advisory lock, and the feed must not read an older schema.
            let page = match async {
                if !migrated {
                    postgres.migrate().await?;
                    migrated = true;
                }
                postgres.feed(&settings.node_id, cursor, PAGE).await
            }
            .await
            {
                Ok(page) => page,
                Err(error) => {
                    if backoff.is_none() {
                        tracing::warn!(%error, "change feed: cannot read PostgreSQL; retrying with backoff");
                    }
                    let delay = backoff
                        .get_or_insert_with(|| {
                            Backoff::new(settings.backoff_min, settings.backoff_max)
                        })
                        .next_delay();
                    tokio::select! {
                        _ = shutdown::requested(&mut stop) => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    break;
                }
            };
            if backoff.take().is_some() {
                tracing::info!("change feed recovered");
            }
            if page.cursor == cursor {
                break;
            }
            let applied = (page.resources.len() + page.reservations.len()) as u64;
            let full = page.read >= PAGE as usize;
            let op = Op::ApplyRemote {
                resources: page.resources,
                reservations: page.reservations,
                cursor: Some(page.cursor),
            };
            if let Err(error) = writer.submit(op, None).await {
                tracing::warn!(%error, "change feed: cannot apply a page locally; retrying");
                break;
            }
            metrics::counter!("reservoir_feed_rows_total").increment(applied);
            cursor = page.cursor;
            if !full {
                break;
            }
        }
    }
}

async fn load_cursor(reads: &Reads) -> anyhow::Result<FeedCursor> {
    let stored: Option<String> = query_scalar("SELECT value FROM meta WHERE key = ?1")
        .bind(FEED_CURSOR)
        .fetch_optional(reads.pool())
        .await?;
    Ok(match stored {
        Some(text) => serde_json::from_str(&text)?,
        None => FeedCursor::default(),
    })
}

/// Keeps a `LISTEN` connection open and wakes the feed on each notification;
/// reconnects after any interruption (the timer covers what is missed).
///
/// A notification's payload is the node whose batch committed. This node's
/// own batches are not woken for: the feed leaves its own rows out anyway, so
/// a draining node would poll once per batch for nothing. The timer still
/// moves the cursor past them.
async fn listen(
    postgres: Postgres,
    node: String,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Ok(mut listener) = PgListener::connect_with(postgres.pool()).await
            && listener.listen(CHANNEL).await.is_ok()
        {
            // Catch up on anything committed before the subscription.
            wake.notify_one();
            loop {
                tokio::select! {
                    _ = shutdown::requested(&mut stop) => return,
                    notification = listener.recv() => match notification {
                        Ok(notification) if notification.payload() == node => {}
                        Ok(_) => wake.notify_one(),
                        Err(_) => break,
                    },
                }
            }
        }
        tokio::select! {
            _ = shutdown::requested(&mut stop) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
