//! Every Prometheus family the sidecar exports, declared and registered in one place on a
//! registry that is passed in (no global statics). Prefix `rmq_sidecar_`, base units,
//! `_total` counters. Labels are bounded: cluster (`old`/`new`), peer kind, request-code
//! *names* (a fixed list, else `OTHER`), response codes (a fixed list, else `other`),
//! outcomes and causes. Never a topic, client id or address; a group only in
//! `consumer_backlog_messages`, capped at the pod's own 16 groups.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use rmq_common::metrics::{describe, encode_text};
use rmq_common::{Role, RoleTargets, Target};

pub use rmq_common::metrics::FamilyInfo;

/// Latency buckets in seconds: sub-millisecond relays up to held pulls (15-30 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// The sidecar's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// The last `/metrics` answer, reused for [`SCRAPE_REUSE`] (a scrape storm encodes
    /// once per interval, not once per request).
    rendered: std::sync::Arc<std::sync::Mutex<Option<Rendered>>>,
    /// Requests from the app, by `target`, `peer` (namesrv|broker) and request `code` name.
    pub requests: IntCounterVec,
    /// Responses to the app's requests, by `target`, `peer`, request `code` and `response_code`.
    pub responses: IntCounterVec,
    /// Request latency through the sidecar, by `target`, `peer` and code `group`.
    pub request_duration: HistogramVec,
    /// Requests brokers sent to the app (transaction checks, rebalance notices, ...).
    pub broker_requests: IntCounterVec,
    /// Bytes relayed, by `target` and `direction` (to_upstream|to_client).
    pub bytes: IntCounterVec,
    /// App connections accepted, by `listener` (namesrv|broker).
    pub client_connections_opened: IntCounterVec,
    /// App connections closed, by `listener` and `cause`.
    pub client_connections_closed: IntCounterVec,
    /// App connections open now, by `listener`.
    pub client_connections_active: IntGaugeVec,
    /// Upstream connections opened, by `target` and `peer`.
    pub upstream_connections_opened: IntCounterVec,
    /// Upstream connections closed, by `target`, `peer` and `cause`.
    pub upstream_connections_closed: IntCounterVec,
    /// Upstream connections open now, by `target` and `peer`.
    pub upstream_connections_active: IntGaugeVec,
    /// Failed upstream connects, by `target` and `peer`.
    pub upstream_connect_failures: IntCounterVec,
    /// Frames that closed their connection, by `reason`.
    pub frames_rejected: IntCounterVec,
    /// Name-server failovers (answer from another than the preferred), by `target`.
    pub namesrv_failovers: IntCounterVec,
    /// Route answers served to the app, by the `cluster` that answered.
    pub route_answers: IntCounterVec,
    /// Broker listeners open, by `target`.
    pub broker_listeners: IntGaugeVec,
    /// 1 for the cluster each `role` is switched to, 0 for the other (`target`).
    pub route_target: IntGaugeVec,
    /// Switch generation.
    pub route_generation: IntGauge,
    /// Switch requests, by `outcome` (applied|unchanged|invalid|refused|failed).
    pub switch_requests: IntCounterVec,
    /// Admin mutations, by `endpoint` and `outcome`.
    pub admin_mutations: IntCounterVec,
    /// Changes of the pod route annotation, by `outcome` (applied|invalid|failed).
    pub annotation_updates: IntCounterVec,
    /// Requests signed, by `target`.
    pub signed_requests: IntCounterVec,
    /// Signed requests the cluster refused, by `target` and `outcome`.
    pub signature_refusals: IntCounterVec,
    /// Credential reloads, by `target` and `outcome` (updated|failed).
    pub credential_reloads: IntCounterVec,
    /// 1 for the outcome of the last credential check, by `target` and `outcome`.
    pub credential_check: IntGaugeVec,
    /// Build information (`version`), always 1.
    pub build_info: IntGaugeVec,
    /// Connections closed at accept because their listener was at its cap, by `listener`.
    pub connections_refused: IntCounterVec,
    /// Failed accepts (typically out of file descriptors), by `listener`.
    pub accept_failures: IntCounterVec,
    /// Name-server requests answered SYSTEM_BUSY because too many were in flight.
    pub namesrv_requests_refused: IntCounterVec,
    /// Composed answers (roles apart) that did without a `cluster` where the pod's `role`
    /// goes (the topic is missing there, or it did not answer).
    pub route_partial_answers: IntCounterVec,
    /// Role switches applied, by `role` and the `target` it moved to.
    pub role_switches: IntCounterVec,
    /// What the per-cluster role filter did, by `target` and `action`.
    pub role_filter: IntCounterVec,
    /// Broker listeners closed because their broker refuses connections, by `target`.
    pub broker_listeners_down: IntGaugeVec,
    /// Gate evaluations, by `outcome` (passed|refused|forced|dry_run).
    pub gate_evaluations: IntCounterVec,
    /// Switches a gate refused, by `gate`.
    pub gate_refusals: IntCounterVec,
    /// Switches forced past a refusing gate, by `gate`.
    pub gate_forced: IntCounterVec,
    /// Gate reads (backlog samples) that failed, by `cluster`.
    pub gate_read_failures: IntCounterVec,
    /// Messages not yet consumed by one of the pod's consumer groups, by `cluster` and
    /// `group` (the pod's own groups only, at most 16: the one family with a group label).
    pub consumer_backlog: IntGaugeVec,
    /// Times freed heap memory was handed back to the system after connections closed,
    /// by `outcome` (released|nothing).
    pub heap_trims: IntCounterVec,
    /// Bytes held in incomplete frames the app sent, across its broker connections (no
    /// labels; capped by `limits.partial_frame_budget_bytes`).
    pub incomplete_frame_bytes: IntGaugeVec,
}

/// Every `action` of `role_filter_total`.
pub const ROLE_FILTER_ACTIONS: &[&str] = &[
    "heartbeat_consumers_dropped",
    "heartbeat_producers_dropped",
    "signed_heartbeat_kept",
    "lock_refused",
    "consumer_list_redirected",
    "consumer_list_without_app",
    "consumer_list_joined",
    "redirect_failed",
    "unregistered",
    "notified",
    "own_request_ok",
    "own_request_refused",
];

/// How long a `/metrics` answer is given again instead of encoding a new one: short enough
/// that no scraper sees a difference, long enough that a storm of scrapes encodes 10 times a
/// second at most.
pub const SCRAPE_REUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// One encoded `/metrics` answer.
#[derive(Debug)]
struct Rendered {
    at: std::time::Instant,
    body: bytes::Bytes,
    content_type: String,
}

/// Every listener name (`listener` label of the accept metrics).
pub const LISTENERS: &[&str] = &["namesrv", "broker", "admin", "health"];

// === impl Metrics ===

impl Metrics {
    /// Declares every family on `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(format!("rmq_sidecar_{name}"), help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(format!("rmq_sidecar_{name}"), help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "rmq_sidecar_request_duration_seconds",
                "Time from a request entering the sidecar to its response leaving it",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["target", "peer", "group"],
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        let route_generation = IntGauge::new(
            "rmq_sidecar_route_generation",
            "Switch generation of the pod's route",
        )?;
        registry.register(Box::new(route_generation.clone()))?;
        let m = Self {
            requests: counter(
                "requests_total",
                "Requests from the app",
                &["target", "peer", "code"],
            )?,
            responses: counter(
                "responses_total",
                "Responses to the app's requests",
                &["target", "peer", "code", "response_code"],
            )?,
            request_duration,
            broker_requests: counter(
                "broker_requests_total",
                "Requests brokers sent to the app",
                &["target", "code"],
            )?,
            bytes: counter("bytes_total", "Bytes relayed", &["target", "direction"])?,
            client_connections_opened: counter(
                "client_connections_opened_total",
                "App connections accepted",
                &["listener"],
            )?,
            client_connections_closed: counter(
                "client_connections_closed_total",
                "App connections closed",
                &["listener", "cause"],
            )?,
            client_connections_active: gauge(
                "client_connections_active",
                "App connections open",
                &["listener"],
            )?,
            upstream_connections_opened: counter(
                "upstream_connections_opened_total",
                "Upstream connections opened",
                &["target", "peer"],
            )?,
            upstream_connections_closed: counter(
                "upstream_connections_closed_total",
                "Upstream connections closed",
                &["target", "peer", "cause"],
            )?,
            upstream_connections_active: gauge(
                "upstream_connections_active",
                "Upstream connections open",
                &["target", "peer"],
            )?,
            upstream_connect_failures: counter(
                "upstream_connect_failures_total",
                "Failed connects to name servers and brokers",
                &["target", "peer"],
            )?,
            frames_rejected: counter(
                "frames_rejected_total",
                "Frames that closed their connection",
                &["reason"],
            )?,
            namesrv_failovers: counter(
                "namesrv_failovers_total",
                "Answers that came from another name server than the preferred one",
                &["target"],
            )?,
            route_answers: counter(
                "route_answers_total",
                "Route answers served, by the cluster that answered",
                &["cluster"],
            )?,
            broker_listeners: gauge(
                "broker_listeners",
                "Broker listeners open (each with its VIP twin)",
                &["target"],
            )?,
            route_target: gauge(
                "route_target",
                "1 for the cluster where the pod's role (producer, consumer) is switched to",
                &["role", "target"],
            )?,
            route_generation,
            switch_requests: counter(
                "switch_requests_total",
                "Route switch requests",
                &["outcome"],
            )?,
            annotation_updates: counter(
                "annotation_updates_total",
                "Changes of the pod route annotation",
                &["outcome"],
            )?,
            admin_mutations: counter(
                "admin_mutations_total",
                "Admin mutations",
                &["endpoint", "outcome"],
            )?,
            signed_requests: counter(
                "signed_requests_total",
                "Requests signed with the cluster's credentials",
                &["target"],
            )?,
            signature_refusals: counter(
                "signature_refusals_total",
                "Signed requests the cluster refused",
                &["target", "outcome"],
            )?,
            credential_reloads: counter(
                "credential_reloads_total",
                "Credential reloads",
                &["target", "outcome"],
            )?,
            credential_check: gauge(
                "credential_check",
                "1 for the outcome of the last credential check",
                &["target", "outcome"],
            )?,
            build_info: gauge("build_info", "Build information", &["version"])?,
            connections_refused: counter(
                "connections_refused_total",
                "Connections closed at accept because the listener was at its connection cap",
                &["listener"],
            )?,
            accept_failures: counter(
                "accept_failures_total",
                "Failed accepts (typically out of file descriptors)",
                &["listener"],
            )?,
            namesrv_requests_refused: counter(
                "namesrv_requests_refused_total",
                "Name-server requests answered SYSTEM_BUSY because the in-flight cap was reached",
                &["listener"],
            )?,
            route_partial_answers: counter(
                "route_partial_answers_total",
                "Composed name-server answers (producers and consumers on different clusters) that did without the cluster of one role",
                &["cluster", "role"],
            )?,
            role_switches: counter(
                "role_switches_total",
                "Role switches applied, by role and the cluster it moved to",
                &["role", "target"],
            )?,
            role_filter: counter(
                "role_filter_total",
                "What the per-cluster role filter did: groups dropped from heartbeats, locks refused, member lists redirected, groups unregistered, clients notified",
                &["target", "action"],
            )?,
            broker_listeners_down: gauge(
                "broker_listeners_down",
                "Broker listeners closed while their broker refuses connections (reopened when it accepts again)",
                &["target"],
            )?,
            gate_evaluations: counter(
                "gate_evaluations_total",
                "Migration gate evaluations of a switch, by outcome (passed, refused, forced, dry_run)",
                &["outcome"],
            )?,
            gate_refusals: counter(
                "gate_refusals_total",
                "Switches a migration gate refused",
                &["gate"],
            )?,
            gate_forced: counter(
                "gate_forced_total",
                "Switches forced past a refusing migration gate (messages may have been lost)",
                &["gate"],
            )?,
            gate_read_failures: counter(
                "gate_read_failures_total",
                "Reads of the gates' backlog sampler that failed",
                &["cluster"],
            )?,
            consumer_backlog: gauge(
                "consumer_backlog_messages",
                "Messages not yet consumed by one of the pod's consumer groups on a cluster (sampled; the pod's groups only, at most 16)",
                &["cluster", "group"],
            )?,
            incomplete_frame_bytes: gauge(
                "incomplete_frame_bytes",
                "Bytes held in incomplete frames the app sent, across its broker connections (capped by limits.partial_frame_budget_bytes)",
                &[],
            )?,
            heap_trims: counter(
                "heap_trims_total",
                "Times freed heap memory was handed back to the system after many connections closed",
                &["outcome"],
            )?,
            registry,
            rendered: std::sync::Arc::default(),
        };
        for outcome in ["passed", "refused", "forced", "dry_run"] {
            m.gate_evaluations.with_label_values(&[outcome]);
        }
        // Every `gates::GateName` (kept in step by a test there).
        for gate in [
            "consumers_on_target",
            "backlog_drained",
            "transactions",
            "target_reachable",
        ] {
            m.gate_refusals.with_label_values(&[gate]);
            m.gate_forced.with_label_values(&[gate]);
        }
        for t in ["old", "new"] {
            m.broker_listeners_down.with_label_values(&[t]);
            m.gate_read_failures.with_label_values(&[t]);
            for action in ROLE_FILTER_ACTIONS {
                m.role_filter.with_label_values(&[t, action]);
            }
        }
        for role in ["producer", "consumer"] {
            for t in ["old", "new"] {
                m.route_partial_answers.with_label_values(&[t, role]);
                m.role_switches.with_label_values(&[role, t]);
            }
        }
        // Alerts see these at 0 from the start, not as "no data" until the first event.
        for l in LISTENERS {
            m.connections_refused.with_label_values(&[l]);
            m.accept_failures.with_label_values(&[l]);
        }
        m.namesrv_requests_refused.with_label_values(&["namesrv"]);
        m.incomplete_frame_bytes.with_label_values(&[] as &[&str]);
        for outcome in ["released", "nothing"] {
            m.heap_trims.with_label_values(&[outcome]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(m)
    }

    /// Every declared family as (name, type, help, label names), whether or not it has
    /// samples yet (`rmq-sidecar list-metrics`; dashboards and alerts are checked against it).
    pub fn families(&self) -> Vec<FamilyInfo> {
        use prometheus::core::Collector;
        let counters = [
            &self.requests,
            &self.responses,
            &self.broker_requests,
            &self.bytes,
            &self.client_connections_opened,
            &self.client_connections_closed,
            &self.upstream_connections_opened,
            &self.upstream_connections_closed,
            &self.upstream_connect_failures,
            &self.frames_rejected,
            &self.namesrv_failovers,
            &self.route_answers,
            &self.switch_requests,
            &self.admin_mutations,
            &self.annotation_updates,
            &self.signed_requests,
            &self.signature_refusals,
            &self.credential_reloads,
            &self.connections_refused,
            &self.accept_failures,
            &self.namesrv_requests_refused,
            &self.route_partial_answers,
            &self.role_switches,
            &self.role_filter,
            &self.gate_evaluations,
            &self.gate_refusals,
            &self.gate_forced,
            &self.gate_read_failures,
            &self.heap_trims,
        ];
        let gauges = [
            &self.client_connections_active,
            &self.upstream_connections_active,
            &self.broker_listeners,
            &self.broker_listeners_down,
            &self.route_target,
            &self.credential_check,
            &self.build_info,
            &self.consumer_backlog,
            &self.incomplete_frame_bytes,
        ];
        let mut descs: Vec<(&prometheus::core::Desc, &'static str)> = Vec::new();
        for c in counters {
            descs.extend(c.desc().into_iter().map(|d| (d, "counter")));
        }
        for g in gauges {
            descs.extend(g.desc().into_iter().map(|d| (d, "gauge")));
        }
        descs.extend(
            self.request_duration
                .desc()
                .into_iter()
                .map(|d| (d, "histogram")),
        );
        descs.extend(
            self.route_generation
                .desc()
                .into_iter()
                .map(|d| (d, "gauge")),
        );
        describe(descs)
    }

    /// The text exposition format (version 0.0.4) and its content type.
    pub fn encode(&self) -> (Vec<u8>, String) {
        encode_text(&self.registry)
    }

    /// [`Metrics::encode`] for `GET /metrics`: an answer encoded less than
    /// [`SCRAPE_REUSE`] ago is given again. Encoding every family costs far more than
    /// answering HTTP, so a flood of scrapes would otherwise take CPU from the relay.
    pub fn encode_for_scrape(&self) -> (bytes::Bytes, String) {
        let mut cached = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = cached.as_ref() {
            if r.at.elapsed() < SCRAPE_REUSE {
                return (r.body.clone(), r.content_type.clone());
            }
        }
        let (body, content_type) = self.encode();
        let body = bytes::Bytes::from(body);
        *cached = Some(Rendered {
            at: std::time::Instant::now(),
            body: body.clone(),
            content_type: content_type.clone(),
        });
        (body, content_type)
    }

    /// Counts what the accept loop of `listener` reports.
    pub fn accept_observer(&self, listener: &'static str) -> rmq_common::serve::AcceptObserver {
        let refused = self.connections_refused.with_label_values(&[listener]);
        let failed = self.accept_failures.with_label_values(&[listener]);
        std::sync::Arc::new(move |event| match event {
            rmq_common::serve::AcceptEvent::Refused => refused.inc(),
            rmq_common::serve::AcceptEvent::Failed => failed.inc(),
        })
    }

    /// Sets the route gauges: where each role goes, and the switch generation.
    pub fn set_route(&self, targets: RoleTargets, generation: u64) {
        for role in Role::ALL {
            for t in Target::ALL {
                self.route_target
                    .with_label_values(&[role.as_str(), t.as_str()])
                    .set(i64::from(targets.get(role) == t));
            }
        }
        self.route_generation.set(generation as i64);
    }

    /// Records a switch: the route gauges, and one `role_switches_total` per moved role.
    pub fn record_switch(&self, targets: RoleTargets, generation: u64, moved: &[Role]) {
        self.set_route(targets, generation);
        for role in moved {
            self.role_switches
                .with_label_values(&[role.as_str(), targets.get(*role).as_str()])
                .inc();
        }
    }

    /// Sets the last credential check outcome of `target`.
    pub fn set_check(&self, target: &str, outcome: &str) {
        for o in CHECK_OUTCOMES {
            self.credential_check
                .with_label_values(&[target, o])
                .set(i64::from(*o == outcome));
        }
    }
}

/// Every credential check outcome label.
pub const CHECK_OUTCOMES: &[&str] = &[
    "ok",
    "unknown_access_key",
    "signature_rejected",
    "no_permission",
    "unreachable",
    "unexpected",
    "not_checked",
];

/// `rmq-sidecar list-metrics`: every family of the sidecar, one per line.
pub fn list_metrics() -> std::process::ExitCode {
    match Metrics::new(Registry::new()) {
        Ok(m) => {
            rmq_common::metrics::print_families(&m.families());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmq-sidecar: cannot declare metrics: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Response-code label: the code if it is one RocketMQ defines, else "other".
pub fn response_code_label(code: i32) -> &'static str {
    match code {
        0 => "0",
        1 => "1",
        2 => "2",
        3 => "3",
        4 => "4",
        10 => "10",
        11 => "11",
        12 => "12",
        13 => "13",
        14 => "14",
        16 => "16",
        17 => "17",
        19 => "19",
        20 => "20",
        21 => "21",
        22 => "22",
        24 => "24",
        25 => "25",
        26 => "26",
        29 => "29",
        206 => "206",
        208 => "208",
        215 => "215",
        1500 => "1500",
        3001 => "3001",
        3002 => "3002",
        _ => "other",
    }
}

/// Latency group of a request code (held pulls must not blur send latency).
pub fn code_group(code: i32) -> &'static str {
    match code {
        10 | 310 | 320 | 324 | 325 | 370 => "send",
        11 | 361 | 200050 | 200052 => "pull",
        34 | 35 | 46 => "heartbeat",
        14 | 15 | 29 | 30 | 31 | 32 => "offset",
        36 | 37 | 38 | 41 | 42 | 400 | 401 => "consumer",
        12 | 33 => "query",
        100..=106 | 206 | 216 | 219 | 224 | 304 | 311..=313 => "namesrv",
        _ => "other",
    }
}
