//! The shutdown signal every background task watches: a `watch` channel that
//! turns `true` once, when the service stops.

use tokio::sync::watch;

/// Resolves once shutdown is requested (or the sender is gone).
pub async fn requested(signal: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before the caller's next
    // await, which keeps callers' futures `Send`.
    let _ = signal.wait_for(|stop| *stop).await.map(|_| ());
}
