//! The migration gates: every switch of a role is checked against the rule that keeps a
//! migration from losing messages (protocol notes §8), and refused with the reason when
//! it would lose some.
//!
//! - [`producer`] (`consumers_on_target`): producers move to a cluster only once every
//!   consumer group of their topics is there (online, or with offsets on every queue;
//!   `seed_offsets` commits the missing ones at the queues' end).
//! - [`consumer`] (`backlog_drained`): the last members of a group leave a cluster only
//!   once its backlog there is zero and nothing was written there for `quiet`.
//! - `transactions`: producer groups with transactional half messages keep heartbeating
//!   the cluster their producers leave (per-role routing does that); reported, never
//!   refused.
//!
//! A gate that cannot read its figures refuses (fails closed) and names the read. A dry
//! run reads and reports, nothing changes; `force` applies a refused switch, logged at
//! warn and counted. The reads ([`reads`]) use the sidecar's own connections, signed
//! where the cluster has credentials, never the app's.
//!
//! The last evaluation is kept for `GET /route` and persisted in the state dir
//! (`gates.json`), so a restarted sidecar still shows what its gates last saw.

pub mod consumer;
pub mod producer;
pub mod reads;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmq_common::clock::now_ms;
use rmq_common::{Role, RoleTargets, Target};
use serde::{Deserialize, Serialize};

use crate::config::GatesConfig;
use crate::metrics::Metrics;
use crate::proxy::RelayContext;
use crate::state;
use reads::{BrokerReads, ClusterReads};

/// Longest a whole evaluation may take; past it the gate refuses (fails closed).
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Most of a role's topics whose brokers the reach check connects to.
pub const REACH_TOPICS: usize = 8;
/// Most consumer groups whose backlog is exported as metrics (the pod's own, name order).
pub const MAX_BACKLOG_GROUPS: usize = 16;

/// `source` of an evaluation asked by the admin API.
pub const SOURCE_ADMIN: &str = "admin";
/// `source` of the first evaluation of an annotation change.
pub const SOURCE_ANNOTATION: &str = "annotation";
/// `source` of the evaluations that retry a refused annotation change.
pub const SOURCE_ANNOTATION_RETRY: &str = "annotation_retry";

/// How a switch is to be checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct SwitchOptions {
    /// Check and report only; nothing changes.
    #[serde(default)]
    pub dry_run: bool,
    /// Apply the switch even where a gate refuses it.
    #[serde(default)]
    pub force: bool,
    /// Commit the offsets missing on the target at the queues' end instead of refusing.
    #[serde(default)]
    pub seed_offsets: bool,
}

/// A gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateName {
    /// Producers move only once their topics' consumer groups are on the target.
    ConsumersOnTarget,
    /// The last consumers of a group leave only once its backlog there is drained.
    BacklogDrained,
    /// Transactional producer groups keep heartbeating the cluster they leave.
    Transactions,
    /// The cluster a role moves to answers: a name server, and every master broker of the
    /// role's topics there. Checked before the others; while it refuses, the others are
    /// not read.
    TargetReachable,
}

impl GateName {
    /// Every gate.
    pub const ALL: [GateName; 4] = [
        GateName::ConsumersOnTarget,
        GateName::BacklogDrained,
        GateName::Transactions,
        GateName::TargetReachable,
    ];

    /// The name in answers, logs and the `gate` label.
    pub fn as_str(self) -> &'static str {
        match self {
            GateName::ConsumersOnTarget => "consumers_on_target",
            GateName::BacklogDrained => "backlog_drained",
            GateName::Transactions => "transactions",
            GateName::TargetReachable => "target_reachable",
        }
    }
}

/// One gate's verdict on one role's move.
#[derive(Debug, Clone, Serialize)]
pub struct GateCheck {
    /// The gate.
    pub gate: GateName,
    /// The role moving.
    pub role: Role,
    /// The cluster it leaves.
    pub from: Target,
    /// The cluster it moves to.
    pub to: Target,
    /// Whether the move loses nothing, as far as the gate can tell.
    pub passed: bool,
    /// One line: why it passed, or what to do.
    pub reason: String,
    /// The producer gate's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<producer::ProducerGate>,
    /// The consumer gate's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<consumer::ConsumerGate>,
    /// Transactional producer groups that keep heartbeating the cluster left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transactional_groups: Vec<String>,
}

/// The gates' verdict on one switch.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// When it ran (Unix ms).
    pub at_ms: u64,
    /// How long the reads took.
    pub took_ms: u64,
    /// Who asked: `admin` or `annotation`.
    pub source: &'static str,
    /// The route before.
    #[serde(serialize_with = "as_text")]
    pub from: RoleTargets,
    /// The route asked for.
    #[serde(serialize_with = "as_text")]
    pub to: RoleTargets,
    /// Nothing was (or will be) changed.
    pub dry_run: bool,
    /// Refusals were overridden.
    pub force: bool,
    /// Missing offsets were seeded (or would be, in a dry run).
    pub seed_offsets: bool,
    /// Whether the switch goes ahead (every gate passed, or it was forced).
    pub allowed: bool,
    /// The gates that refused.
    pub refused_by: Vec<GateName>,
    /// Each gate's verdict.
    pub checks: Vec<GateCheck>,
}

fn as_text<S: serde::Serializer>(t: &RoleTargets, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

impl Evaluation {
    /// The refusing gates' reasons, one line.
    pub fn refusal(&self) -> String {
        let reasons: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!(
                    "{} ({} {}->{}): {}",
                    c.gate.as_str(),
                    c.role,
                    c.from,
                    c.to,
                    c.reason
                )
            })
            .collect();
        reasons.join("; ")
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The gates of one sidecar: their settings, their last evaluation, their metrics.
#[derive(Debug)]
pub struct Gates {
    config: GatesConfig,
    file: Option<PathBuf>,
    last: Mutex<Option<serde_json::Value>>,
    metrics: Metrics,
}

// === impl Gates ===

impl Gates {
    /// Gates with `config`; the last evaluation is restored from `state_dir` when there.
    pub fn new(config: GatesConfig, state_dir: Option<&std::path::Path>, metrics: Metrics) -> Self {
        let file = state_dir.map(|d| d.join(rmq_common::contract::GATES_FILE));
        let last = file.as_ref().and_then(|path| {
            let bytes = state::read_optional(path).ok().flatten()?;
            match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(path = %path.display(), reason = %e, "the gates' last evaluation could not be read; starting without it");
                    None
                }
            }
        });
        Self {
            config,
            file,
            last: Mutex::new(last),
            metrics,
        }
    }

    /// The settings.
    pub fn config(&self) -> &GatesConfig {
        &self.config
    }

    /// Whether switches are checked.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The last evaluation (restored from the state dir after a restart).
    pub fn last(&self) -> Option<serde_json::Value> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks the move from `from` to `to`; seeds offsets when asked (and not a dry
    /// run). Logs, counts and keeps the verdict.
    pub async fn evaluate(
        &self,
        ctx: &Arc<RelayContext>,
        from: RoleTargets,
        to: RoleTargets,
        options: SwitchOptions,
        source: &'static str,
    ) -> Evaluation {
        let reads = BrokerReads::new(ctx.clone(), self.config.read_timeout);
        let usage = ctx.usage.snapshot();
        let own_ids = ctx
            .client_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let transactional: BTreeSet<String> = ctx
            .transactional
            .iter()
            .filter(|e| e.key().0 == from.producer)
            .map(|e| e.key().1.clone())
            .collect();
        let facts = Facts {
            produced: &usage.produced,
            consumed: &usage.consumed,
            own_ids: &own_ids,
            transactional: &transactional,
            now_ms: now_ms(),
            quiet: self.config.quiet,
        };
        let started = Instant::now();
        let checks =
            match tokio::time::timeout(DEADLINE, run(&reads, from, to, options, &facts)).await {
                Ok(checks) => checks,
                Err(_) => timed_out(from, to),
            };
        let evaluation = verdict(from, to, options, source, checks, started.elapsed());
        self.record(&evaluation);
        evaluation
    }

    fn record(&self, e: &Evaluation) {
        // A pending annotation is evaluated again every `retry_seconds`: its repeated
        // refusals are logged at debug and counted once (by its first evaluation).
        let retry = e.source == SOURCE_ANNOTATION_RETRY;
        let refused = !e.refused_by.is_empty();
        let outcome = match (e.dry_run, refused, e.force) {
            (true, _, _) => "dry_run",
            (false, false, _) => "passed",
            (false, true, true) => "forced",
            (false, true, false) => "refused",
        };
        self.metrics
            .gate_evaluations
            .with_label_values(&[outcome])
            .inc();
        if !e.dry_run && (!retry || e.force) {
            for gate in &e.refused_by {
                let family = if e.force {
                    &self.metrics.gate_forced
                } else {
                    &self.metrics.gate_refusals
                };
                family.with_label_values(&[gate.as_str()]).inc();
            }
        }
        let gates: Vec<&str> = e.refused_by.iter().map(|g| g.as_str()).collect();
        match outcome {
            "refused" if retry => {
                tracing::debug!(source = e.source, from = %e.from, to = %e.to, refused_by = ?gates, reason = %e.refusal(), "switch still refused by the migration gates")
            }
            "refused" => {
                tracing::warn!(source = e.source, from = %e.from, to = %e.to, refused_by = ?gates, reason = %e.refusal(), "switch refused by the migration gates")
            }
            "forced" => {
                tracing::warn!(source = e.source, from = %e.from, to = %e.to, refused_by = ?gates, reason = %e.refusal(), "switch FORCED past the migration gates: messages may be lost")
            }
            "dry_run" => {
                tracing::info!(source = e.source, from = %e.from, to = %e.to, refused_by = ?gates, took_ms = e.took_ms, "gates dry run")
            }
            _ => {
                tracing::info!(source = e.source, from = %e.from, to = %e.to, took_ms = e.took_ms, "switch passed the migration gates")
            }
        }
        let json = e.to_json();
        if let Some(path) = &self.file {
            let bytes = serde_json::to_vec_pretty(&json).unwrap_or_default();
            if let Err(err) = state::write_atomic(path, &bytes) {
                tracing::warn!(path = %path.display(), reason = %err, "the gates' evaluation could not be persisted");
            }
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(json);
    }

    /// Samples the backlog of the pod's consumer groups (at most [`MAX_BACKLOG_GROUPS`])
    /// on each configured cluster into `rmq_sidecar_consumer_backlog_messages`, every
    /// `backlog_sample`, forever.
    pub async fn sample_backlog(self: Arc<Self>, ctx: Arc<RelayContext>) {
        let Some(every) = self.config.backlog_sample else {
            return;
        };
        loop {
            tokio::time::sleep(every).await;
            let usage = ctx.usage.snapshot();
            let reads = BrokerReads::new(ctx.clone(), self.config.read_timeout);
            for (group, topics) in usage.consumed.iter().take(MAX_BACKLOG_GROUPS) {
                for cluster in Target::ALL {
                    if ctx.cluster(cluster).namesrv.addrs().is_empty() {
                        continue;
                    }
                    match backlog(&reads, cluster, group, topics).await {
                        Ok(Some(n)) => self
                            .metrics
                            .consumer_backlog
                            .with_label_values(&[cluster.as_str(), group])
                            .set(n),
                        Ok(None) => {}
                        Err(e) => {
                            self.metrics
                                .gate_read_failures
                                .with_label_values(&[cluster.as_str()])
                                .inc();
                            tracing::debug!(%cluster, group, reason = %e, "backlog sample failed");
                        }
                    }
                }
            }
        }
    }
}

/// What the pod was seen doing, for the gates.
struct Facts<'a> {
    produced: &'a std::collections::BTreeMap<String, BTreeSet<String>>,
    consumed: &'a std::collections::BTreeMap<String, BTreeSet<String>>,
    own_ids: &'a BTreeSet<String>,
    transactional: &'a BTreeSet<String>,
    now_ms: u64,
    quiet: Duration,
}

/// Runs the gates of every role that moves.
async fn run<R: ClusterReads>(
    reads: &R,
    from: RoleTargets,
    to: RoleTargets,
    options: SwitchOptions,
    facts: &Facts<'_>,
) -> Vec<GateCheck> {
    let mut checks = Vec::new();
    // First, can the pod use the cluster it moves to at all? A role sent to a cluster
    // whose name servers or brokers do not answer would stall there (a consumer move is
    // otherwise checked only against the cluster it leaves).
    for role in [Role::Consumer, Role::Producer] {
        if from.get(role) == to.get(role) {
            continue;
        }
        let target = to.get(role);
        // The role's own topics: their brokers are where the app will be sent.
        let topics: Vec<String> = match role {
            Role::Producer => facts.produced.keys().cloned().collect(),
            Role::Consumer => facts
                .consumed
                .values()
                .flatten()
                .filter(|t| !t.starts_with('%'))
                .cloned()
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect(),
        };
        let topics = &topics[..topics.len().min(REACH_TOPICS)];
        let outcome = reads.reach(target, topics).await;
        let (passed, reason) = match outcome {
            Ok(detail) => (true, detail),
            Err(e) => (
                false,
                format!("{target} is unreachable from this pod: {e}; check its name server addresses, that its brokers are up, and the network path from this pod"),
            ),
        };
        checks.push(GateCheck {
            gate: GateName::TargetReachable,
            role,
            from: from.get(role),
            to: target,
            passed,
            reason,
            producer: None,
            consumer: None,
            transactional_groups: Vec::new(),
        });
    }
    if checks.iter().any(|c| !c.passed) {
        return checks;
    }
    // Consumers first: in a switch of both roles, their verdict is the one to read first.
    if from.consumer != to.consumer {
        let gate = consumer::check(
            reads,
            consumer::ConsumerGateInput {
                from: from.consumer,
                consumed: facts.consumed,
                own_ids: facts.own_ids,
                now_ms: facts.now_ms,
                quiet: facts.quiet,
            },
        )
        .await;
        checks.push(GateCheck {
            gate: GateName::BacklogDrained,
            role: Role::Consumer,
            from: from.consumer,
            to: to.consumer,
            passed: gate.passed(),
            reason: gate.reason(from.consumer),
            producer: None,
            consumer: Some(gate),
            transactional_groups: Vec::new(),
        });
    }
    if from.producer != to.producer {
        let gate = producer::check(
            reads,
            producer::ProducerGateInput {
                from: from.producer,
                to: to.producer,
                produced: facts.produced,
                seed_offsets: options.seed_offsets,
                dry_run: options.dry_run,
            },
        )
        .await;
        checks.push(GateCheck {
            gate: GateName::ConsumersOnTarget,
            role: Role::Producer,
            from: from.producer,
            to: to.producer,
            passed: gate.passed(),
            reason: gate.reason(from.producer, to.producer),
            producer: Some(gate),
            consumer: None,
            transactional_groups: Vec::new(),
        });
        let groups: Vec<String> = facts.transactional.iter().cloned().collect();
        let reason = if groups.is_empty() {
            "no transactional producer group of the pod on the cluster left".to_owned()
        } else {
            format!(
                "{} keep(s) heartbeating {} while the app uses them, so its transaction checks still reach the app",
                groups.join(", "),
                from.producer
            )
        };
        checks.push(GateCheck {
            gate: GateName::Transactions,
            role: Role::Producer,
            from: from.producer,
            to: to.producer,
            passed: true,
            reason,
            producer: None,
            consumer: None,
            transactional_groups: groups,
        });
    }
    checks
}

fn timed_out(from: RoleTargets, to: RoleTargets) -> Vec<GateCheck> {
    let mut checks = Vec::new();
    for (role, gate) in [
        (Role::Consumer, GateName::BacklogDrained),
        (Role::Producer, GateName::ConsumersOnTarget),
    ] {
        if from.get(role) != to.get(role) {
            checks.push(GateCheck {
                gate,
                role,
                from: from.get(role),
                to: to.get(role),
                passed: false,
                reason: format!(
                    "the gate's reads took longer than {} s (fails closed)",
                    DEADLINE.as_secs()
                ),
                producer: None,
                consumer: None,
                transactional_groups: Vec::new(),
            });
        }
    }
    checks
}

fn verdict(
    from: RoleTargets,
    to: RoleTargets,
    options: SwitchOptions,
    source: &'static str,
    checks: Vec<GateCheck>,
    took: Duration,
) -> Evaluation {
    let mut refused_by: Vec<GateName> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.gate)
        .collect();
    refused_by.dedup();
    Evaluation {
        at_ms: now_ms(),
        took_ms: took.as_millis() as u64,
        source,
        from,
        to,
        dry_run: options.dry_run,
        force: options.force,
        seed_offsets: options.seed_offsets,
        allowed: refused_by.is_empty() || options.force,
        refused_by,
        checks,
    }
}

/// The backlog of `group` on `cluster` over `topics`; `None` when none of them is there.
async fn backlog<R: ClusterReads>(
    reads: &R,
    cluster: Target,
    group: &str,
    topics: &BTreeSet<String>,
) -> Result<Option<i64>, reads::ReadError> {
    let mut brokers = BTreeSet::new();
    for topic in topics {
        if let Some(q) = reads.topic_queues(cluster, topic).await? {
            brokers.extend(q.into_iter().filter_map(|b| b.master));
        }
    }
    if brokers.is_empty() {
        return Ok(None);
    }
    let mut total = 0;
    for addr in &brokers {
        total += reads
            .consume_stats(cluster, addr, group)
            .await?
            .iter()
            .map(|q| q.lag())
            .sum::<i64>();
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests;
