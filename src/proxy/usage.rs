//! What the pod uses, learned from the frames the sidecar relays: the topics its producers
//! send to (and with which producer groups), and its consumer groups with their
//! subscriptions. Bounded: past [`MAX_ENTRIES`] topics or groups nothing more is recorded
//! and the overflow is counted. `GET /preflight` checks these against a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::state;

/// Most topics (and, separately, consumer groups) remembered.
pub const MAX_ENTRIES: usize = 1024;
/// Most groups remembered per topic, or topics per group.
const MAX_PER_ENTRY: usize = 64;

/// The pod's topics and groups as recorded so far.
#[derive(Debug, Default)]
pub struct Usage {
    /// topic -> producer groups that sent to it
    produced: RwLock<BTreeMap<String, BTreeSet<String>>>,
    /// consumer group -> subscribed topics
    consumed: Mutex<BTreeMap<String, BTreeSet<String>>>,
    overflow: AtomicU64,
    /// Bumped by every change (the persister writes when it moved).
    changes: AtomicU64,
}

/// A copy of what was recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageSnapshot {
    /// Topic -> producer groups that sent to it.
    pub produced: BTreeMap<String, BTreeSet<String>>,
    /// Consumer group -> subscribed topics (retry topics included).
    pub consumed: BTreeMap<String, BTreeSet<String>>,
    /// Topics or groups not recorded because the bound was reached.
    pub overflow: u64,
}

// === impl Usage ===

impl Usage {
    /// Records a send of `group` to `topic`.
    pub fn record_send(&self, topic: &str, group: &str) {
        // Every send passes here: a pair already recorded costs a shared read lock only.
        let known = self
            .produced
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .is_some_and(|groups| groups.contains(group));
        if known {
            return;
        }
        let mut produced = self.produced.write().unwrap_or_else(|p| p.into_inner());
        if let Some(groups) = produced.get_mut(topic) {
            if !groups.contains(group) && groups.len() < MAX_PER_ENTRY {
                groups.insert(group.to_owned());
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if produced.len() >= MAX_ENTRIES {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        produced.insert(topic.to_owned(), BTreeSet::from([group.to_owned()]));
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the subscriptions a heartbeat carried.
    pub fn record_subscriptions(&self, subscriptions: &[(String, Vec<String>)]) {
        let mut consumed = lock(&self.consumed);
        for (group, topics) in subscriptions {
            if !consumed.contains_key(group) && consumed.len() >= MAX_ENTRIES {
                self.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let entry = consumed.entry(group.clone()).or_default();
            for t in topics {
                if entry.len() < MAX_PER_ENTRY && entry.insert(t.clone()) {
                    self.changes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// What was recorded so far.
    pub fn snapshot(&self) -> UsageSnapshot {
        UsageSnapshot {
            produced: self
                .produced
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            consumed: lock(&self.consumed).clone(),
            overflow: self.overflow.load(Ordering::Relaxed),
        }
    }
}

// === persistence ===

impl Usage {
    /// Adds what a previous run of the sidecar recorded in `path` (a restart mid-migration
    /// keeps the gates' view of the pod). A missing file is nothing; an unreadable one is
    /// logged and skipped.
    pub fn restore_from(&self, path: &std::path::Path) {
        let bytes = match state::read_optional(path) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), reason = %e, "recorded usage unreadable; starting without it");
                return;
            }
        };
        match serde_json::from_slice::<UsageSnapshot>(&bytes) {
            Ok(snapshot) => {
                for (topic, groups) in &snapshot.produced {
                    for g in groups {
                        self.record_send(topic, g);
                    }
                }
                let subs: Vec<(String, Vec<String>)> = snapshot
                    .consumed
                    .into_iter()
                    .map(|(g, t)| (g, t.into_iter().collect()))
                    .collect();
                self.record_subscriptions(&subs);
                tracing::info!(path = %path.display(), topics = snapshot.produced.len(), groups = subs.len(), "recorded usage restored");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), reason = %e, "recorded usage unreadable; starting without it")
            }
        }
    }

    /// Writes what was recorded to `path` whenever it changed, every `every`, forever.
    pub async fn persist_every(
        self: std::sync::Arc<Self>,
        path: std::path::PathBuf,
        every: std::time::Duration,
    ) {
        let mut written = self.changes.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(every).await;
            let now = self.changes.load(Ordering::Relaxed);
            if now == written {
                continue;
            }
            let bytes = serde_json::to_vec(&self.snapshot()).unwrap_or_default();
            match state::write_atomic(&path, &bytes) {
                Ok(()) => written = now,
                Err(e) => {
                    tracing::warn!(path = %path.display(), reason = %e, "recorded usage could not be persisted")
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_and_subscriptions_are_recorded_and_bounded() {
        let u = Usage::default();
        u.record_send("A", "PG");
        u.record_send("A", "PG");
        u.record_send("A", "PG2");
        u.record_subscriptions(&[("GA".into(), vec!["B".into(), "%RETRY%GA".into()])]);
        let s = u.snapshot();
        assert_eq!(s.produced["A"].len(), 2);
        assert_eq!(s.consumed["GA"].len(), 2);
        for i in 0..MAX_ENTRIES + 5 {
            u.record_send(&format!("T{i}"), "PG");
        }
        let s = u.snapshot();
        assert_eq!(s.produced.len(), MAX_ENTRIES);
        assert_eq!(s.overflow, 6);
    }
}
