//! The admin and health HTTP servers.
//!
//! Admin port (`listen.admin`, loopback by default), reads and mutations:
//! - `GET /` lists the endpoints.
//! - `GET /live` 200 while the process runs.
//! - `GET /ready` 200 once the target's name server answered once, else 503.
//! - `GET /route` the pod's target, generation and upstream health (JSON).
//! - `PUT /route` `{"target":"old"|"new"}` switches (idempotent); 400 with a reason for
//!   anything invalid, the running state unchanged.
//! - `GET /listeners` upstream broker address to local listener mappings.
//! - `POST /credentials/check` runs the credential check of every cluster with
//!   credentials now and answers the `credentials` part of `GET /route`.
//! - `GET /metrics` Prometheus text exposition (also on the health port).
//! - `GET /config` the effective configuration, secrets redacted.
//! - `GET /connections` open app connections by listener and by upstream broker.
//! - `GET /log-level`, `PUT /log-level` `{"filter":"info,rocketmq_sidecar=debug"}`.
//! - `POST /drain` stop accepting app connections, close the idle ones (preStop hooks).
//! - `POST /shutdown` drain and exit, only when `admin.enable_shutdown` is set.
//!
//! Every mutation is logged and counted (`rmq_sidecar_admin_mutations_total`).
//!
//! Health port (`listen.health`, reachable by the kubelet and Prometheus), read-only:
//! `GET /live`, `GET /ready`, `GET /route`. Mutations answer 405 there.
//!
//! Mutations are accepted from loopback peers only, or, when `admin.token_file` is set,
//! from any peer that sends `Authorization: Bearer <token>` (loopback then needs it too).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::annotation::AnnotationWatch;
use crate::config::{Config, Target};
use crate::health::Health;
use crate::logging::LogControl;
use crate::proxy::check;
use crate::proxy::listeners::ListenerRegistry;
use crate::proxy::RelayContext;
use crate::routing::{RouteSwitch, SwitchError};

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;

/// Which server a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Admin: reads and mutations.
    Admin,
    /// Health: read-only.
    Health,
}

/// State the HTTP handlers read and change.
#[derive(Debug)]
pub struct AdminState {
    /// Configuration (for cluster details).
    pub config: Arc<Config>,
    /// The pod's route.
    pub route: Arc<RouteSwitch>,
    /// Readiness and upstream health.
    pub health: Arc<Health>,
    /// Broker listeners.
    pub listeners: Arc<ListenerRegistry>,
    /// Clusters and connections.
    pub ctx: Arc<RelayContext>,
    /// Token file for mutations, if configured.
    pub token_file: Option<PathBuf>,
    /// The live log filter.
    pub log: Arc<LogControl>,
    /// Set to true by `POST /shutdown` (when enabled).
    pub shutdown: watch::Sender<bool>,
    /// The followed pod annotation, if configured; while valid it owns the route.
    pub annotation: Option<Arc<AnnotationWatch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelUpdate {
    filter: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteUpdate {
    target: String,
}

/// Serves HTTP/1.1 on `listener` forever.
pub async fn serve(state: Arc<AdminState>, listener: TcpListener, port: Port) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, port, peer, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection error");
            }
        });
    }
}

/// Routes one request.
pub async fn handle(
    state: &AdminState,
    port: Port,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (port, &method, path.as_str()) {
        (_, &Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (_, &Method::GET, "/ready") => {
            if state.health.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the target cluster's name server has not answered yet\n",
                )
            }
        }
        (_, &Method::GET, "/route") => json_response(StatusCode::OK, route_json(state)),
        (_, &Method::GET, "/metrics") => {
            let (body, content_type) = state.ctx.metrics.encode();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            if let Ok(v) = hyper::header::HeaderValue::from_str(&content_type) {
                r.headers_mut().insert(CONTENT_TYPE, v);
            }
            r
        }
        (Port::Admin, &Method::GET, "/") => json_response(StatusCode::OK, index_json()),
        (Port::Admin, &Method::GET, "/config") => {
            json_response(StatusCode::OK, config_json(&state.config))
        }
        (Port::Admin, &Method::GET, "/connections") => {
            json_response(StatusCode::OK, connections_json(state))
        }
        (Port::Admin, &Method::GET, "/log-level") => {
            json_response(StatusCode::OK, json!({ "filter": state.log.get() }))
        }
        (Port::Admin, &Method::PUT, "/log-level") => {
            if let Some(refusal) = authorize(state, peer, &req) {
                count(state, "log_level", "unauthorized");
                return refusal;
            }
            let (response, outcome) = put_log_level(state, peer, req).await;
            count(state, "log_level", outcome);
            response
        }
        (Port::Admin, &Method::POST, "/drain") => {
            if let Some(refusal) = authorize(state, peer, &req) {
                count(state, "drain", "unauthorized");
                return refusal;
            }
            let already = state.ctx.draining.send_replace(true);
            tracing::info!(%peer, already_draining = already, open = state.ctx.conns.count(), "POST /drain: no new app connections; idle ones are closed");
            count(
                state,
                "drain",
                if already { "unchanged" } else { "applied" },
            );
            let body = json!({ "draining": true, "client_connections": state.ctx.conns.count() });
            json_response(StatusCode::ACCEPTED, body)
        }
        (Port::Admin, &Method::POST, "/shutdown") => {
            if let Some(refusal) = authorize(state, peer, &req) {
                count(state, "shutdown", "unauthorized");
                return refusal;
            }
            if !state.config.enable_shutdown {
                count(state, "shutdown", "refused");
                tracing::info!(%peer, "POST /shutdown refused: not enabled");
                return error(
                    StatusCode::FORBIDDEN,
                    "shutdown is disabled; set admin.enable_shutdown = true (or RMQ_SIDECAR_ENABLE_SHUTDOWN=true)",
                );
            }
            tracing::info!(%peer, "POST /shutdown: draining, then exiting");
            count(state, "shutdown", "applied");
            state.shutdown.send_replace(true);
            json_response(StatusCode::ACCEPTED, json!({ "shutting_down": true }))
        }
        (Port::Admin, &Method::GET, "/listeners") => json_response(
            StatusCode::OK,
            json!({ "listeners": state.listeners.mappings() }),
        ),
        (Port::Admin, &Method::PUT, "/route") => {
            if let Some(refusal) = authorize(state, peer, &req) {
                count(state, "route", "unauthorized");
                return refusal;
            }
            let (response, outcome) = put_route(state, peer, req).await;
            state
                .ctx
                .metrics
                .switch_requests
                .with_label_values(&[outcome])
                .inc();
            count(state, "route", outcome);
            response
        }
        (Port::Admin, &Method::POST, "/credentials/check") => {
            if let Some(refusal) = authorize(state, peer, &req) {
                count(state, "credentials_check", "unauthorized");
                return refusal;
            }
            for cluster in &state.ctx.clusters {
                let cfg = &state.config;
                check::run(cluster, cfg.namesrv_timeout, cfg.frame_max_bytes).await;
            }
            tracing::info!(%peer, "credential check run on request");
            count(state, "credentials_check", "applied");
            json_response(StatusCode::OK, credentials_json(state))
        }
        (Port::Health, _, "/live" | "/ready" | "/route" | "/metrics") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the health port is read-only; send mutations to the admin port",
        ),
        (Port::Health, _, _) => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no endpoint {path} on the health port (it serves /live, /ready, /route, /metrics)"
            ),
        ),
        (
            _,
            _,
            "/live" | "/ready" | "/route" | "/listeners" | "/credentials/check" | "/metrics"
            | "/config" | "/connections" | "/log-level" | "/drain" | "/shutdown" | "/",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no endpoint {path}; GET / on the admin port lists them"),
        ),
    }
}

async fn put_route(
    state: &AdminState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> (Response<Full<Bytes>>, &'static str) {
    let update: RouteUpdate = match read_json(req, r#"{"target":"new"}"#).await {
        Ok(u) => u,
        Err(msg) => {
            tracing::info!(%peer, reason = %msg, "route switch refused: invalid body");
            return (error(StatusCode::BAD_REQUEST, &msg), "invalid");
        }
    };
    let Some(target) = Target::parse(&update.target) else {
        tracing::info!(%peer, target = %update.target, "route switch refused: unknown target");
        let msg = format!("unknown target '{}'; use \"old\" or \"new\"", update.target);
        return (error(StatusCode::BAD_REQUEST, &msg), "invalid");
    };
    if let Some(held) = state
        .annotation
        .as_ref()
        .and_then(|a| a.controlling_target())
    {
        if held != target {
            let key = state
                .annotation
                .as_ref()
                .map(|a| a.status().key)
                .unwrap_or_default();
            let msg = format!(
                "the pod annotation {key}=\"{held}\" controls this pod's route; change it with kubectl annotate (or remove it to switch here)"
            );
            tracing::info!(%peer, %target, %held, "route switch refused: the pod annotation holds the route");
            return (error(StatusCode::CONFLICT, &msg), "refused");
        }
    }
    match state.route.switch(target) {
        Ok((now, changed)) => {
            state
                .ctx
                .metrics
                .set_route(now.target.as_str(), now.generation);
            let outcome = if changed {
                tracing::info!(%peer, target = %now.target, generation = now.generation, "route switched; the app moves at its next route poll");
                "applied"
            } else {
                tracing::info!(%peer, target = %now.target, "route switch requested: already there");
                "unchanged"
            };
            (json_response(StatusCode::OK, route_json(state)), outcome)
        }
        Err(e @ SwitchError::NotConfigured(_)) => {
            tracing::info!(%peer, %target, reason = %e, "route switch refused");
            (error(StatusCode::BAD_REQUEST, &e.to_string()), "refused")
        }
        Err(e @ SwitchError::Persist { .. }) => {
            tracing::error!(%peer, %target, reason = %e, "route switch failed");
            (
                error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                "failed",
            )
        }
    }
}

/// `None` when the mutation may proceed, else the refusal to send.
fn authorize(
    state: &AdminState,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    match &state.token_file {
        None if peer.ip().is_loopback() => None,
        None => Some(error(
            StatusCode::FORBIDDEN,
            "mutations are accepted from loopback only (configure admin.token_file to allow others)",
        )),
        Some(path) => {
            let expected = match std::fs::read_to_string(path) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
                Ok(_) | Err(_) => {
                    tracing::error!(path = %path.display(), "admin token file unreadable or empty; refusing mutations");
                    return Some(error(StatusCode::FORBIDDEN, "admin token file unreadable or empty; mutations are refused"));
                }
            };
            let given = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
                None
            } else {
                Some(error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a bounded request body that must be a JSON object like `example`; the error
/// says what to send.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    example: &str,
) -> Result<T, String> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the body: {e}"))?
        .to_bytes();
    json_object(&body).map_err(|e| format!("body must be JSON like {example}: {e}"))
}

/// Decodes a request body that must be a JSON object (serde would also accept an array
/// for a struct, positionally).
fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value(v).map_err(|e| e.to_string())
        }
        Ok(_) => Err("the body is not a JSON object".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn count(state: &AdminState, endpoint: &str, outcome: &str) {
    state
        .ctx
        .metrics
        .admin_mutations
        .with_label_values(&[endpoint, outcome])
        .inc();
}

async fn put_log_level(
    state: &AdminState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> (Response<Full<Bytes>>, &'static str) {
    let update: LogLevelUpdate =
        match read_json(req, r#"{"filter":"info,rocketmq_sidecar=debug"}"#).await {
            Ok(u) => u,
            Err(msg) => return (error(StatusCode::BAD_REQUEST, &msg), "invalid"),
        };
    if update.filter.trim().is_empty() {
        let msg =
            "filter is empty; give a directive such as \"info\" or \"info,rocketmq_sidecar=debug\"";
        return (error(StatusCode::BAD_REQUEST, msg), "invalid");
    }
    let before = state.log.get();
    match state.log.set(&update.filter) {
        Ok(()) => {
            tracing::info!(%peer, from = %before, to = %state.log.get(), "log filter changed");
            let body = json!({ "filter": state.log.get() });
            (json_response(StatusCode::OK, body), "applied")
        }
        Err(e) => {
            tracing::info!(%peer, reason = %e, "log filter change refused");
            (error(StatusCode::BAD_REQUEST, &e), "invalid")
        }
    }
}

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
        })
    };
    json!({
        "target": c.target,
        "state_dir": c.state_dir.as_ref().map(|p| p.display().to_string()),
        "drain_seconds": c.drain.as_secs(),
        "frame_max_bytes": c.frame_max_bytes,
        "log": c.log,
        "log_format": format!("{:?}", c.log_format).to_ascii_lowercase(),
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
    json!({
        "target": now.target,
        "generation": now.generation,
        "changed_at_ms": now.changed_at_ms,
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

fn index_json() -> serde_json::Value {
    json!({
        "endpoints": [
            {"method": "GET", "path": "/", "about": "this list"},
            {"method": "GET", "path": "/live", "about": "200 while the process runs"},
            {"method": "GET", "path": "/ready", "about": "200 once the target's name server answered once"},
            {"method": "GET", "path": "/route", "about": "target, generation, upstream health"},
            {"method": "PUT", "path": "/route", "about": "switch: {\"target\":\"old\"|\"new\"}"},
            {"method": "GET", "path": "/listeners", "about": "upstream broker -> local listener map"},
            {"method": "POST", "path": "/credentials/check", "about": "run the credential check of every cluster now"},
            {"method": "GET", "path": "/metrics", "about": "Prometheus metrics (also on the health port)"},
            {"method": "GET", "path": "/config", "about": "effective configuration, secrets redacted"},
            {"method": "GET", "path": "/connections", "about": "open app connections by listener and upstream"},
            {"method": "GET", "path": "/log-level", "about": "the log filter in force"},
            {"method": "PUT", "path": "/log-level", "about": "change the log filter: {\"filter\":\"debug\"}"},
            {"method": "POST", "path": "/drain", "about": "stop accepting app connections, close idle ones"},
            {"method": "POST", "path": "/shutdown", "about": "drain and exit (only when admin.enable_shutdown)"},
        ]
    })
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(&value).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message }))
}
