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
//!
//! A change passes the migration gates ([`crate::gates`]) like an admin switch. A refused
//! change is not applied: `GET /route` shows it under `annotation.pending` with the
//! reason, a warn line (`event="RouteRefused"`) and `annotation_updates_total{outcome=
//! "refused"}` record it, and it is tried again every `gates.retry_seconds` until it
//! passes or the pod is annotated `rocketmq-sidecar/route-force: "true"`. The value a
//! fresh pod starts with (no persisted route) is its placement, not a switch: applied
//! unchecked.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use rmq_common::clock::now_ms;
use rmq_common::contract::{find_annotation, parse_route_value, ROUTE_FORCE_ANNOTATION};

use crate::gates::{GateName, Gates, SwitchOptions, SOURCE_ANNOTATION, SOURCE_ANNOTATION_RETRY};
use crate::metrics::Metrics;
use crate::proxy::RelayContext;
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
    /// `rocketmq-sidecar/route-force: "true"`: the gates' refusals are overridden.
    pub force: bool,
    /// A change the gates refused, tried again until it passes.
    pub pending: Option<Pending>,
    /// When the file was last read (Unix ms).
    pub at_ms: u64,
}

/// An annotation change the migration gates refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// The route asked for.
    #[serde(serialize_with = "as_text_plain")]
    pub target: RoleTargets,
    /// The gates that refused it last.
    pub refused_by: Vec<GateName>,
    /// Their reasons.
    pub reason: String,
    /// When it was first refused (Unix ms).
    pub since_ms: u64,
    /// Evaluations so far.
    pub attempts: u32,
    /// When it is tried next (Unix ms).
    pub next_try_ms: u64,
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

fn as_text_plain<S: serde::Serializer>(t: &RoleTargets, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
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
            force: false,
            pending: None,
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

    /// Reads the file once; returns the route it asks for when valid.
    pub fn read_once(&self, metrics: &Metrics) -> Option<RoleTargets> {
        let read = std::fs::read_to_string(&self.file);
        let force = read
            .as_ref()
            .ok()
            .and_then(|text| find_annotation(text, ROUTE_FORCE_ANNOTATION))
            .is_some_and(|v| v.trim() == "true");
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
        let mut status = self.lock();
        let previous = status.clone();
        status.value = value.clone();
        status.target = None;
        status.error = None;
        status.force = force;
        status.at_ms = now_ms();
        match result {
            Ok(target) => status.target = target,
            Err(reason) => {
                if previous.error.as_deref() != Some(reason.as_str()) || previous.value != value {
                    tracing::warn!(key = %self.key, file = %self.file.display(), %reason, "route annotation ignored; the route stays as it is");
                    metrics
                        .annotation_updates
                        .with_label_values(&["invalid"])
                        .inc();
                }
                status.error = Some(reason);
            }
        }
        if let Some(p) = &status.pending {
            if Some(p.target) != status.target {
                // The annotation changed while a refused value waited: that one is dropped.
                status.pending = None;
            }
        }
        status.target
    }

    /// Applies `target` without the gates: the placement of a fresh pod.
    pub fn place(&self, target: RoleTargets, route: &RouteSwitch, metrics: &Metrics) {
        self.switch(target, route, metrics);
    }

    /// Applies `target` once the gates pass it (or it is forced); a refusal is kept as
    /// `pending` and tried again after `gates.retry_seconds`.
    pub async fn apply(
        &self,
        target: RoleTargets,
        route: &RouteSwitch,
        metrics: &Metrics,
        gates: &Gates,
        ctx: &Arc<RelayContext>,
    ) {
        let current = route.current().targets();
        if target == current {
            self.lock().pending = None;
            return;
        }
        if gates.enabled() {
            let (force, pending) = {
                let s = self.lock();
                (s.force, s.pending.clone())
            };
            let now = now_ms();
            if let Some(p) = &pending {
                if p.target == target && now < p.next_try_ms && !force {
                    return;
                }
            }
            let options = SwitchOptions {
                force,
                ..Default::default()
            };
            let source = if pending.as_ref().is_some_and(|p| p.target == target) {
                SOURCE_ANNOTATION_RETRY
            } else {
                SOURCE_ANNOTATION
            };
            let evaluation = gates.evaluate(ctx, current, target, options, source).await;
            if !evaluation.allowed {
                let first = pending.as_ref().map(|p| p.target) != Some(target);
                let reason = evaluation.refusal();
                if first {
                    tracing::warn!(event = "RouteRefused", key = %self.key, from = %current, to = %target, %reason, "route annotation not applied: the migration gates refuse it; retried every {} s, or annotate {ROUTE_FORCE_ANNOTATION}=true to override", gates.config().retry.as_secs());
                    metrics
                        .annotation_updates
                        .with_label_values(&["refused"])
                        .inc();
                }
                let retry = gates.config().retry.as_millis() as u64;
                let mut s = self.lock();
                if s.target == Some(target) {
                    s.pending = Some(Pending {
                        target,
                        refused_by: evaluation.refused_by.clone(),
                        reason,
                        since_ms: pending
                            .filter(|p| p.target == target)
                            .map_or(now, |p| p.since_ms),
                        attempts: s.pending.as_ref().map_or(0, |p| p.attempts) + 1,
                        next_try_ms: now_ms() + retry,
                    });
                }
                return;
            }
            if force && !evaluation.refused_by.is_empty() {
                tracing::warn!(event = "RouteForced", key = %self.key, from = %current, to = %target, "route annotation applied past the migration gates ({ROUTE_FORCE_ANNOTATION}=true)");
            }
        }
        self.switch(target, route, metrics);
    }

    fn switch(&self, target: RoleTargets, route: &RouteSwitch, metrics: &Metrics) {
        let previous_error = self.lock().error.clone();
        match route.switch(RouteRequest::to(target)) {
            Ok((now, moved)) => {
                if !moved.is_empty() {
                    tracing::info!(key = %self.key, %target, generation = now.generation, "route switched by the pod annotation");
                    metrics.record_switch(now.targets(), now.generation, &moved);
                    metrics
                        .annotation_updates
                        .with_label_values(&["applied"])
                        .inc();
                }
                self.lock().pending = None;
            }
            Err(e) => {
                if previous_error.as_deref() != Some(e.to_string().as_str()) {
                    tracing::warn!(key = %self.key, %target, reason = %e, "route annotation could not be applied");
                    metrics
                        .annotation_updates
                        .with_label_values(&["failed"])
                        .inc();
                }
                let mut s = self.lock();
                s.error = Some(e.to_string());
                s.target = None;
            }
        }
    }

    /// Reads the file every second and applies what it asks through the gates, forever.
    pub async fn run(
        self: Arc<Self>,
        route: Arc<RouteSwitch>,
        metrics: Metrics,
        gates: Arc<Gates>,
        ctx: Arc<RelayContext>,
    ) {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            if let Some(target) = self.read_once(&metrics) {
                self.apply(target, &route, &metrics, &gates, &ctx).await;
            }
        }
    }
}
