//! Switching the Kubernetes way: the sidecar follows a pod annotation (default
//! `rocketmq-sidecar/route`) read from a downward API volume, which the kubelet updates in
//! place (an atomic `..data` symlink swap). `kubectl annotate pod P rocketmq-sidecar/route=new`
//! then switches the pod without an exec into it.
//!
//! Precedence: while the annotation is present and valid it owns the route, and
//! `PUT /route` to another target is refused with a reason (409); without it (or while its
//! value is invalid) the admin endpoint switches as usual. `GET /route` says which.
//! Values: `old`, `new` (both roles) or `producer=new,consumer=old`; anything else is
//! ignored with a log line and a metric, and the running route stays as it was.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use rmq_common::clock::now_ms;
use rmq_common::contract::{find_annotation, parse_route_value};

use crate::metrics::Metrics;
use crate::routing::{RouteRequest, RouteSwitch};
use rmq_common::RoleTargets;

/// Default annotation key.
pub const DEFAULT_KEY: &str = rmq_common::contract::ROUTE_ANNOTATION;

/// How often the annotations file is read.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What the annotation says now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnotationStatus {
    /// The downward API file.
    pub file: String,
    /// The annotation key.
    pub key: String,
    /// Its raw value (None when absent).
    pub value: Option<String>,
    /// The route it asks for, when valid (`new`, or `producer=new,consumer=old`).
    #[serde(serialize_with = "as_text")]
    pub target: Option<RoleTargets>,
    /// Why the value (or the file) is not usable.
    pub error: Option<String>,
    /// When the file was last read (Unix ms).
    pub at_ms: u64,
}

/// Follows one annotation in one file.
#[derive(Debug)]
pub struct AnnotationWatch {
    file: PathBuf,
    key: String,
    status: Mutex<AnnotationStatus>,
}

fn as_text<S: serde::Serializer>(t: &Option<RoleTargets>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_string()),
        None => s.serialize_none(),
    }
}

// === impl AnnotationWatch ===

impl AnnotationWatch {
    /// Follows `key` in `file`.
    pub fn new(file: PathBuf, key: String) -> Self {
        let status = AnnotationStatus {
            file: file.display().to_string(),
            key: key.clone(),
            value: None,
            target: None,
            error: None,
            at_ms: 0,
        };
        Self {
            file,
            key,
            status: Mutex::new(status),
        }
    }

    /// The route the annotation holds, when present and valid.
    pub fn controlling_target(&self) -> Option<RoleTargets> {
        self.lock().target
    }

    /// What the annotation says now.
    pub fn status(&self) -> AnnotationStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AnnotationStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the file once and applies a changed, valid value to `route`.
    pub fn poll_once(&self, route: &RouteSwitch, metrics: &Metrics) {
        let read = std::fs::read_to_string(&self.file);
        let (value, result) = match &read {
            // No file yet (or the volume is not mounted): the admin endpoint decides.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Ok(None)),
            Err(e) => (
                None,
                Err(format!("cannot read {}: {e}", self.file.display())),
            ),
            Ok(text) => match find_annotation(text, &self.key) {
                None => (None, Ok(None)),
                Some(v) => {
                    let parsed = parse_route_value(&v).map(Some);
                    (Some(v), parsed)
                }
            },
        };
        let previous = self.status();
        let mut next = AnnotationStatus {
            value: value.clone(),
            target: None,
            error: None,
            at_ms: now_ms(),
            ..previous.clone()
        };
        match result {
            Ok(target) => next.target = target,
            Err(reason) => {
                if previous.error.as_deref() != Some(reason.as_str()) || previous.value != value {
                    tracing::warn!(key = %self.key, file = %self.file.display(), %reason, "route annotation ignored; the route stays as it is");
                    metrics
                        .annotation_updates
                        .with_label_values(&["invalid"])
                        .inc();
                }
                next.error = Some(reason);
            }
        }
        if let Some(target) = next.target {
            match route.switch(RouteRequest::to(target)) {
                Ok((now, moved)) if !moved.is_empty() => {
                    tracing::info!(key = %self.key, %target, generation = now.generation, "route switched by the pod annotation");
                    metrics.record_switch(now.targets(), now.generation, &moved);
                    metrics
                        .annotation_updates
                        .with_label_values(&["applied"])
                        .inc();
                }
                Ok(_) => {}
                Err(e) => {
                    if previous.error.as_deref() != Some(e.to_string().as_str()) {
                        tracing::warn!(key = %self.key, %target, reason = %e, "route annotation could not be applied");
                        metrics
                            .annotation_updates
                            .with_label_values(&["failed"])
                            .inc();
                    }
                    next.error = Some(e.to_string());
                    next.target = None;
                }
            }
        }
        *self.lock() = next;
    }

    /// Reads the file every second, forever.
    pub async fn run(
        self: std::sync::Arc<Self>,
        route: std::sync::Arc<RouteSwitch>,
        metrics: Metrics,
    ) {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            self.poll_once(&route, &metrics);
        }
    }
}
