//! Counting open client connections, so a draining sidecar knows when the app is gone (and
//! closed ones, so the heap is trimmed after a burst: [`crate::heap`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Counter of open client connections with a change notification.
#[derive(Debug, Clone)]
pub struct ConnTracker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    open: AtomicUsize,
    closed: AtomicU64,
    changed: watch::Sender<usize>,
}

/// Decrements the count when dropped.
#[derive(Debug)]
pub struct ConnGuard {
    inner: Arc<Inner>,
}

// === impl ConnTracker ===

impl Default for ConnTracker {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                open: AtomicUsize::new(0),
                closed: AtomicU64::new(0),
                changed: watch::channel(0).0,
            }),
        }
    }
}

impl ConnTracker {
    /// Registers an open connection until the guard drops.
    pub fn open(&self) -> ConnGuard {
        let n = self.inner.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.changed.send_replace(n);
        ConnGuard {
            inner: self.inner.clone(),
        }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Connections closed since the start.
    pub fn closed_total(&self) -> u64 {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Resolves once no connection is open.
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.changed.subscribe();
        // `wait_for` checks the current value first, then every change.
        let _ = rx.wait_for(|_| self.count() == 0).await;
    }
}

// === impl ConnGuard ===

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.inner.closed.fetch_add(1, Ordering::Relaxed);
        let n = self.inner.open.fetch_sub(1, Ordering::SeqCst) - 1;
        self.inner.changed.send_replace(n);
    }
}
