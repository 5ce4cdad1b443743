//! Readiness and upstream health. Readiness is a latch: 503 until the target cluster's
//! name server has answered once (and persisted listeners are re-opened), then 200 for
//! good, so a name-server outage shows in `/route` (and metrics) without taking a whole
//! fleet of pods out of service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use rmq_common::clock::now_ms;
use rmq_common::Target;

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

/// Readiness latch and upstream health.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    last_answer: Mutex<Option<Answer>>,
    last_route_answer: Mutex<Option<Answer>>,
    last_failure: Mutex<Option<Failure>>,
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

    /// Records an answer from `cluster`.
    pub fn answered(&self, cluster: Target, namesrv: &str, code: i32) {
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
