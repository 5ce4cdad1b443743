//! Readiness and upstream health. Readiness is a latch: 503 until the name servers of
//! every cluster the pod uses (its producers' and its consumers') have answered once (and
//! persisted listeners are re-opened), then 200 for good, so a name-server outage shows in
//! `/route` (and metrics) without taking a whole fleet of pods out of service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use rmq_common::clock::now_ms;
use rmq_common::{Role, RoleTargets, Target};

/// The last name-server answer the sidecar relayed or probed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Answer {
    /// Cluster that answered.
    pub cluster: Target,
    /// Name server that answered.
    pub namesrv: String,
    /// Request code that was answered.
    pub code: i32,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// The last failure to get an answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// Cluster that did not answer.
    pub cluster: Target,
    /// What went wrong.
    pub error: String,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// A composed answer that had to do without one cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartialAnswer {
    /// The cluster left out.
    pub cluster: Target,
    /// The role the pod plays there.
    pub role: Role,
    /// What was asked (`route of <topic>`, `cluster info`).
    pub what: String,
    /// What that cluster answered, or why it did not.
    pub reason: String,
    /// When it was last seen (Unix milliseconds).
    pub at_ms: u64,
}

/// Most partial answers remembered (one per cluster and question).
pub const MAX_PARTIALS: usize = 256;

/// Readiness latch and upstream health.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    answered_once: [AtomicBool; 2],
    last_answer: Mutex<Option<Answer>>,
    last_route_answer: Mutex<Option<Answer>>,
    last_failure: Mutex<Option<Failure>>,
    partials: Mutex<Vec<PartialAnswer>>,
}

// === impl Health ===

impl Health {
    /// True once the latch was released.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Releases the latch.
    pub fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            tracing::info!("ready");
        }
    }

    /// Releases the latch once every cluster in `targets` has answered once.
    pub fn check_ready(&self, targets: &RoleTargets) {
        let all = [targets.producer, targets.consumer]
            .iter()
            .all(|t| self.answered_once[t.index()].load(Ordering::SeqCst));
        if all {
            self.set_ready();
        }
    }

    /// Records that a composed answer did without `cluster`; true when this (cluster,
    /// question, reason) is new (worth a log line). At most [`MAX_PARTIALS`] are kept.
    pub fn partial_answer(&self, cluster: Target, role: Role, what: &str, reason: &str) -> bool {
        let mut list = lock(&self.partials);
        let now = now_ms();
        if let Some(p) = list
            .iter_mut()
            .find(|p| p.cluster == cluster && p.what == what)
        {
            let new = p.reason != reason;
            p.reason = reason.to_owned();
            p.role = role;
            p.at_ms = now;
            return new;
        }
        if list.len() >= MAX_PARTIALS {
            list.sort_by_key(|p| p.at_ms);
            list.remove(0);
        }
        list.push(PartialAnswer {
            cluster,
            role,
            what: what.to_owned(),
            reason: reason.to_owned(),
            at_ms: now,
        });
        true
    }

    /// The composed answers that did without a cluster still in use by that role, newest
    /// first.
    pub fn partials(&self, targets: &RoleTargets) -> Vec<PartialAnswer> {
        let mut list: Vec<_> = lock(&self.partials)
            .iter()
            .filter(|p| targets.get(p.role) == p.cluster && targets.whole().is_none())
            .cloned()
            .collect();
        list.sort_by_key(|p| std::cmp::Reverse(p.at_ms));
        list
    }

    /// Records an answer from `cluster`.
    pub fn answered(&self, cluster: Target, namesrv: &str, code: i32) {
        self.answered_once[cluster.index()].store(true, Ordering::SeqCst);
        let a = Answer {
            cluster,
            namesrv: namesrv.to_owned(),
            code,
            at_ms: now_ms(),
        };
        if code == crate::protocol::code::request::GET_ROUTEINFO_BY_TOPIC {
            *lock(&self.last_route_answer) = Some(a.clone());
        }
        *lock(&self.last_answer) = Some(a);
    }

    /// Records a failure to get an answer from `cluster`.
    pub fn failed(&self, cluster: Target, error: String) {
        *lock(&self.last_failure) = Some(Failure {
            cluster,
            error,
            at_ms: now_ms(),
        });
    }

    /// The last answer of any kind.
    pub fn last_answer(&self) -> Option<Answer> {
        lock(&self.last_answer).clone()
    }

    /// The last route (GET_ROUTEINFO_BY_TOPIC) answer.
    pub fn last_route_answer(&self) -> Option<Answer> {
        lock(&self.last_route_answer).clone()
    }

    /// The last failure.
    pub fn last_failure(&self) -> Option<Failure> {
        lock(&self.last_failure).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
