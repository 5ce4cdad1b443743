//! The JSON documents the admin API answers with: the route, the configuration (secret
//! sources, never values), connections and credentials.

use serde_json::json;

use super::AdminState;
use crate::config::Config;
use rmq_common::Target;

/// The effective configuration, secrets redacted (credential *sources* are shown, never
/// values).
pub fn config_json(c: &Config) -> serde_json::Value {
    let cluster = |k: &crate::config::ClusterConfig| {
        json!({
            "namesrv": k.namesrv,
            "broker_name_prefix": k.broker_name_prefix,
            "credentials": k.credentials.describe(),
            "unique_key_rule": format!("{:?}", k.unique_key_rule).to_ascii_lowercase(),
            "check_topic": k.check_topic,
            "namespace": k.namespace.as_ref().map(|n| n.as_str()),
        })
    };
    json!({
        "target": c.target,
        "state_dir": c.state_dir.as_ref().map(|p| p.display().to_string()),
        "drain_seconds": c.drain.as_secs(),
        "frame_max_bytes": c.frame_max_bytes,
        "log": c.log,
        "log_format": c.log_format.as_str(),
        "listen": {
            "namesrv": c.namesrv_listen.to_string(),
            "admin": c.admin_listen.to_string(),
            "health": c.health_listen.to_string(),
            "broker_bind": c.broker_bind.to_string(),
            "broker_fallback_ports": format!("{}-{}", c.broker_fallback_ports.0, c.broker_fallback_ports.1),
        },
        "admin": {
            "token_file": c.admin_token_file.as_ref().map(|p| p.display().to_string()),
            "enable_shutdown": c.enable_shutdown,
        },
        "upstream": {
            "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
            "namesrv_timeout_ms": c.namesrv_timeout.as_millis() as u64,
            "retire_idle_seconds": c.retire_idle.map(|d| d.as_secs()).unwrap_or(0),
        },
        "limits": {
            "namesrv_connections": c.limits.namesrv_connections,
            "broker_connections": c.limits.broker_connections,
            "admin_connections": c.limits.admin_connections,
            "health_connections": c.limits.health_connections,
            "namesrv_inflight": c.limits.namesrv_inflight,
            "namesrv_frame_max_bytes": c.limits.namesrv_frame_max_bytes,
            "partial_frame_seconds": c.limits.partial_frame.as_secs(),
            "partial_frame_budget_bytes": c.limits.partial_frame_budget_bytes,
        },
        "clusters": { "old": cluster(&c.old), "new": cluster(&c.new) },
    })
}

/// Open app connections by listener, and relays per upstream broker.
pub fn connections_json(state: &AdminState) -> serde_json::Value {
    let m = &state.ctx.metrics;
    let by = |l: &str| {
        m.client_connections_active
            .with_label_values(&[l])
            .get()
            .max(0)
    };
    let mut upstreams: Vec<serde_json::Value> = state
        .listeners
        .mappings()
        .into_iter()
        .map(|mapping| {
            let open = state
                .ctx
                .open_by_upstream
                .get(&mapping.upstream)
                .map(|e| e.1)
                .unwrap_or(0);
            json!({
                "cluster": mapping.cluster,
                "upstream": mapping.upstream,
                "local": mapping.local.to_string(),
                "open": open,
            })
        })
        .collect();
    upstreams.sort_by(|a, b| b["open"].as_u64().cmp(&a["open"].as_u64()));
    json!({
        "client_connections": state.ctx.conns.count(),
        "by_listener": { "namesrv": by("namesrv"), "broker": by("broker") },
        "draining": *state.ctx.draining.borrow(),
        "upstreams": upstreams,
    })
}

/// The `GET /route` document.
pub fn route_json(state: &AdminState) -> serde_json::Value {
    let now = state.route.current();
    let cluster = |t: Target| {
        let c = state.ctx.cluster(t);
        json!({
            "namesrv": c.namesrv.addrs(),
            "preferred_namesrv": c.namesrv.preferred(),
            "broker_name_prefix": state.config.cluster(t).broker_name_prefix,
        })
    };
    let targets = now.targets();
    json!({
        // Both roles' cluster, or null while producers and consumers are apart.
        "target": now.whole(),
        "roles": {
            "producer": now.producer,
            "consumer": now.consumer,
        },
        "generation": now.generation,
        "changed_at_ms": now.changed_at_ms,
        // Composed answers that did without one cluster (a topic missing there, or no answer).
        "partial_answers": state.health.partials(&targets),
        // Producer groups that sent transactional half messages to a cluster and keep
        // heartbeating it (for its transaction checks) while the app uses them.
        "transactional_producers": transactional_json(state),
        "ready": state.health.is_ready(),
        "last_route_answer": state.health.last_route_answer(),
        "last_answer": state.health.last_answer(),
        "last_failure": state.health.last_failure(),
        "client_connections": state.ctx.conns.count(),
        "clusters": { "old": cluster(Target::Old), "new": cluster(Target::New) },
        "credentials": credentials_json(state),
        "controlled_by": match state.annotation.as_ref().and_then(|a| a.controlling_target()) {
            Some(_) => "annotation",
            None => "admin",
        },
        "annotation": state.annotation.as_ref().map(|a| a.status()),
        // What the migration gates last saw (kept across restarts in the state dir).
        "gates": {
            "enabled": state.gates.enabled(),
            "last": state.gates.last(),
        },
    })
}

/// Per cluster: whether requests are signed, with what (AccessKey shortened; the
/// SecretKey never appears), and the last credential check.
pub fn credentials_json(state: &AdminState) -> serde_json::Value {
    let one = |t: Target| {
        let s = &state.ctx.cluster(t).signer;
        let rule = match s.rule() {
            crate::acl::UniqueKeyRule::Excluded => "v4",
            crate::acl::UniqueKeyRule::ByRequestVersion => "v5",
        };
        let check = match s.last_check() {
            Some(c) => serde_json::to_value(c).unwrap_or_default(),
            None => json!({
                "outcome": "not_checked",
                "detail": if s.is_configured() { "not run yet" } else { "no credentials configured for this cluster" },
                "at_ms": 0,
            }),
        };
        json!({
            "configured": s.is_configured(),
            "access_key": s.access_key_hint(),
            "unique_key_rule": rule,
            "server_version": s.server_version(),
            "signed_requests": s.signed(),
            "refusals": s.rejections(),
            "reloads": { "updated": s.store().updates(), "failed": s.store().failures() },
            "check": check,
        })
    };
    json!({ "old": one(Target::Old), "new": one(Target::New) })
}

/// Per cluster, the producer groups kept heartbeating it for their transactions, and
/// whether the pod's producers have left that cluster (then only this keeps them there).
fn transactional_json(state: &AdminState) -> serde_json::Value {
    let producers_on = state.route.current().producer.target;
    let mut out = serde_json::Map::new();
    for t in Target::ALL {
        let mut groups: Vec<String> = state
            .ctx
            .transactional
            .iter()
            .filter(|e| e.key().0 == t)
            .map(|e| e.key().1.clone())
            .collect();
        groups.sort();
        out.insert(
            t.as_str().to_owned(),
            json!({ "groups": groups, "producers_left": producers_on != t }),
        );
    }
    serde_json::Value::Object(out)
}
