//! The admin and health HTTP servers.
//!
//! The endpoints are the table [`endpoints::ENDPOINTS`] (`GET /` on the admin port lists
//! it; `deploy/admin-openapi.yaml` is the contract, tested against the running server).
//! The admin port serves them all; the health port serves the reads marked `on_health`
//! and answers 405 to anything else on those paths, 404 elsewhere.
//!
//! Mutations are accepted from loopback peers only, or, when `admin.token_file` is set,
//! from any peer that sends `Authorization: Bearer <token>` (loopback then needs it too).
//! Every mutation is logged and counted (`rmq_sidecar_admin_mutations_total`).
//!
//! [`handle`] answers one request held in memory (`Request<Bytes>`), so it is tested
//! without sockets; [`serve`] runs it behind the shared accept loop and HTTP/1.1 server.

pub mod endpoints;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION};
use hyper::{Request, Response, StatusCode};
use rmq_common::http::{self, error, json_object, json_response, text, Body, Http1Limits};
use rmq_common::logging::LogControl;
use rmq_common::serve::{self, AcceptConfig};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use endpoints::{Action, Endpoint, Port, ENDPOINTS};

use crate::annotation::AnnotationWatch;
use crate::config::Config;
use crate::gates::{Gates, SwitchOptions, SOURCE_ADMIN};
use crate::health::Health;
use crate::proxy::check;
use crate::proxy::listeners::ListenerRegistry;
use crate::proxy::RelayContext;
use crate::routing::{RouteRequest, RouteSwitch, SwitchError};
use rmq_common::{Role, RoleTargets, Target};

/// Largest accepted request body (a larger one is answered 413).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest time a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The live log filter.
    pub log: Arc<LogControl>,
    /// Set to true by `POST /shutdown` (when enabled).
    pub shutdown: watch::Sender<bool>,
    /// The followed pod annotation, if configured; while valid it owns the route.
    pub annotation: Option<Arc<AnnotationWatch>>,
    /// The migration gates every switch passes.
    pub gates: Arc<Gates>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelUpdate {
    filter: String,
}

/// `PUT /route`: `{"target": T}` moves both roles; `{"producer": T}`, `{"consumer": T}`
/// or both move those roles only. A field given as `null` is refused, not ignored.
/// `dry_run`, `force` and `seed_offsets` say how the migration gates treat the switch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteUpdate {
    #[serde(default, deserialize_with = "present")]
    target: Option<String>,
    #[serde(default, deserialize_with = "present")]
    producer: Option<String>,
    #[serde(default, deserialize_with = "present")]
    consumer: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    seed_offsets: bool,
}

/// A field that, when present, must be a string (`null` is an error).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// Serves HTTP/1.1 on `listener` (`port` decides what is served) until `shutdown`.
pub async fn serve(
    state: Arc<AdminState>,
    listener: TcpListener,
    port: Port,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let name = match port {
        Port::Admin => "admin",
        Port::Health => "health",
    };
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let config = AcceptConfig {
        name,
        local,
        max_connections,
    };
    let observer = state.ctx.metrics.accept_observer(name);
    let limits = Http1Limits {
        max_body: MAX_BODY,
        header_timeout: HEADER_TIMEOUT,
    };
    serve::serve(listener, config, observer, shutdown, move |stream, peer| {
        let state = state.clone();
        async move {
            let handler = move |req: Request<Bytes>| {
                let state = state.clone();
                async move { handle(&state, port, peer, req).await }
            };
            http::serve_connection(stream, limits, handler, |_| {}).await;
        }
    })
    .await;
}

/// Answers one request.
pub async fn handle(
    state: &AdminState,
    port: Port,
    peer: SocketAddr,
    req: Request<Bytes>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let endpoint = match endpoints::route(port, req.method().as_str(), &path) {
        endpoints::Route::Serve(e) => e,
        endpoints::Route::WrongMethod => {
            let allowed = endpoints::allowed(port, &path).join(", ");
            let message = match port {
                Port::Health => format!(
                    "the health port is read-only ({allowed} {path}); send mutations to the admin port"
                ),
                Port::Admin => format!("{} is not allowed on {path}; use {allowed}", req.method()),
            };
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, &message);
            if let Ok(v) = HeaderValue::from_str(&allowed) {
                r.headers_mut().insert(ALLOW, v);
            }
            return r;
        }
        endpoints::Route::NotFound => {
            let message = match port {
                Port::Health => format!(
                    "no endpoint {path} on the health port (it serves {})",
                    endpoints::health_paths().join(", ")
                ),
                Port::Admin => format!("no endpoint {path}; GET / on the admin port lists them"),
            };
            return error(StatusCode::NOT_FOUND, &message);
        }
    };
    if let Some(label) = endpoint.mutation {
        if let Some(refusal) = authorize(state, peer, &req) {
            count(state, label, "unauthorized");
            return refusal;
        }
        let (response, outcome) = mutate(state, endpoint.action, peer, req.body()).await;
        if endpoint.action == Action::PutRoute {
            state
                .ctx
                .metrics
                .switch_requests
                .with_label_values(&[outcome])
                .inc();
        }
        count(state, label, outcome);
        return response;
    }
    if endpoint.action == Action::Preflight {
        return preflight(state, req.uri().query()).await;
    }
    read(state, port, endpoint.action)
}

/// `GET /preflight?to=new|old` (default: new).
async fn preflight(state: &AdminState, query: Option<&str>) -> Response<Body> {
    let mut to = Target::New;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("to", v)) => match Target::parse(v) {
                Some(t) => to = t,
                None => {
                    let msg = format!("unknown cluster '{v}' in ?to=; use old or new");
                    return error(StatusCode::BAD_REQUEST, &msg);
                }
            },
            _ => {
                let msg = format!("unknown query parameter '{pair}'; the only one is to=old|new");
                return error(StatusCode::BAD_REQUEST, &msg);
            }
        }
    }
    let result = crate::preflight::run(state.ctx.clone(), to).await;
    json_response(
        StatusCode::OK,
        serde_json::to_value(result).unwrap_or_default(),
    )
}

/// Answers a read.
fn read(state: &AdminState, port: Port, action: Action) -> Response<Body> {
    match action {
        Action::Index => json_response(StatusCode::OK, index_json()),
        Action::Live => text(StatusCode::OK, "live\n"),
        Action::Ready if state.health.is_ready() => text(StatusCode::OK, "ready\n"),
        Action::Ready => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the target cluster's name server has not answered yet\n",
        ),
        Action::GetRoute => json_response(StatusCode::OK, views::route_json(state)),
        Action::Metrics => {
            // The health port is open to the whole cluster: a scrape storm there reuses an
            // answer up to 100 ms old instead of taking CPU from the relay. The admin port
            // (loopback, this pod only) always encodes afresh.
            let (body, content_type) = match port {
                Port::Health => state.ctx.metrics.encode_for_scrape(),
                Port::Admin => {
                    let (body, content_type) = state.ctx.metrics.encode();
                    (body.into(), content_type)
                }
            };
            http::with_content_type(body, &content_type)
        }
        Action::Config => json_response(StatusCode::OK, views::config_json(&state.config)),
        Action::Connections => json_response(StatusCode::OK, views::connections_json(state)),
        Action::GetLogLevel => json_response(StatusCode::OK, json!({ "filter": state.log.get() })),
        Action::Preflight => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "preflight is answered asynchronously (a bug)",
        ),
        Action::Listeners => json_response(
            StatusCode::OK,
            json!({ "listeners": state.listeners.mappings() }),
        ),
        Action::PutRoute
        | Action::PutLogLevel
        | Action::CheckCredentials
        | Action::Drain
        | Action::Shutdown => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a mutation was routed as a read (a bug)",
        ),
    }
}

/// Carries out an authorized mutation: the response and its outcome label.
async fn mutate(
    state: &AdminState,
    action: Action,
    peer: SocketAddr,
    body: &[u8],
) -> (Response<Body>, &'static str) {
    match action {
        Action::PutRoute => put_route(state, peer, body).await,
        Action::PutLogLevel => put_log_level(state, peer, body),
        Action::CheckCredentials => {
            for cluster in &state.ctx.clusters {
                let cfg = &state.config;
                check::run(cluster, cfg.namesrv_timeout, cfg.frame_max_bytes).await;
            }
            tracing::info!(%peer, "credential check run on request");
            let body = views::credentials_json(state);
            (json_response(StatusCode::OK, body), "applied")
        }
        Action::Drain => {
            let already = state.ctx.draining.send_replace(true);
            tracing::info!(%peer, already_draining = already, open = state.ctx.conns.count(), "POST /drain: no new app connections; idle ones are closed");
            let body = json!({ "draining": true, "client_connections": state.ctx.conns.count() });
            let outcome = if already { "unchanged" } else { "applied" };
            (json_response(StatusCode::ACCEPTED, body), outcome)
        }
        Action::Shutdown => {
            if !state.config.enable_shutdown {
                tracing::info!(%peer, "POST /shutdown refused: not enabled");
                let message = "shutdown is disabled; set admin.enable_shutdown = true (or RMQ_SIDECAR_ENABLE_SHUTDOWN=true)";
                return (error(StatusCode::FORBIDDEN, message), "refused");
            }
            tracing::info!(%peer, "POST /shutdown: draining, then exiting");
            state.shutdown.send_replace(true);
            let body = json!({ "shutting_down": true });
            (json_response(StatusCode::ACCEPTED, body), "applied")
        }
        Action::Index
        | Action::Live
        | Action::Ready
        | Action::GetRoute
        | Action::Metrics
        | Action::Config
        | Action::Connections
        | Action::GetLogLevel
        | Action::Preflight
        | Action::Listeners => (
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a read was routed as a mutation (a bug)",
            ),
            "failed",
        ),
    }
}

async fn put_route(
    state: &AdminState,
    peer: SocketAddr,
    body: &[u8],
) -> (Response<Body>, &'static str) {
    let parsed = json_object::<RouteUpdate>(body)
        .map_err(|e| format!(r#"body must be JSON like {{"target":"new"}} or {{"producer":"new","consumer":"old","dry_run":true}}: {e}"#))
        .and_then(|u| {
            let options = SwitchOptions {
                dry_run: u.dry_run,
                force: u.force,
                seed_offsets: u.seed_offsets,
            };
            route_request(u).map(|r| (r, options))
        });
    let (request, options) = match parsed {
        Ok(r) => r,
        Err(msg) => {
            tracing::info!(%peer, reason = %msg, "route switch refused: invalid body");
            return (error(StatusCode::BAD_REQUEST, &msg), "invalid");
        }
    };
    let current = state.route.current().targets();
    let wanted = Role::ALL.into_iter().fold(current, |t, role| {
        request.get(role).map_or(t, |target| t.with(role, target))
    });
    if let Some(annotation) = &state.annotation {
        if let Some(held) = annotation.controlling_target().filter(|h| *h != wanted) {
            let key = annotation.status().key;
            let msg = format!(
                "the pod annotation {key}=\"{held}\" controls this pod's route; change it with kubectl annotate (or remove it to switch here)"
            );
            tracing::info!(%peer, %wanted, %held, "route switch refused: the pod annotation holds the route");
            return (error(StatusCode::CONFLICT, &msg), "refused");
        }
    }
    if wanted != current {
        if let Some(target) = Role::ALL
            .into_iter()
            .filter(|r| wanted.get(*r) != current.get(*r))
            .map(|r| wanted.get(r))
            .find(|t| state.config.cluster(*t).namesrv.is_empty())
        {
            let e = SwitchError::NotConfigured(target);
            tracing::info!(%peer, %wanted, reason = %e, "route switch refused");
            return (error(StatusCode::BAD_REQUEST, &e.to_string()), "refused");
        }
        if state.gates.enabled() {
            let evaluation = state
                .gates
                .evaluate(&state.ctx, current, wanted, options, SOURCE_ADMIN)
                .await;
            let gates_json = serde_json::to_value(&evaluation).unwrap_or_default();
            if options.dry_run {
                let extra = ("gates", gates_json);
                return dry_run_answer(current, wanted, evaluation.allowed, extra);
            }
            if !evaluation.allowed {
                let body = json!({
                    "error": format!("switch {current} -> {wanted} refused by the migration gates: {}", evaluation.refusal()),
                    "refused_by": evaluation.refused_by,
                    "hint": "fix what the reason names and retry; {\"dry_run\":true} shows the gates without switching; {\"seed_offsets\":true} seeds missing consumer offsets; {\"force\":true} overrides (messages may be lost)",
                    "gates": gates_json,
                });
                return (json_response(StatusCode::CONFLICT, body), "refused");
            }
        } else if options.dry_run {
            return dry_run_answer(current, wanted, true, ("gates", json!("disabled")));
        }
    } else if options.dry_run {
        let extra = ("detail", json!("already there: nothing to switch"));
        return dry_run_answer(current, wanted, false, extra);
    }
    match state.route.switch(request) {
        Ok((now, moved)) => {
            state
                .ctx
                .metrics
                .record_switch(now.targets(), now.generation, &moved);
            let outcome = if moved.is_empty() {
                tracing::info!(%peer, route = %now.targets(), "route switch requested: already there");
                "unchanged"
            } else {
                let moved: Vec<&str> = moved.iter().map(|r| r.as_str()).collect();
                tracing::info!(%peer, route = %now.targets(), moved = ?moved, generation = now.generation, "route switched");
                "applied"
            };
            // `gates.last` of the route document is this switch's evaluation.
            (
                json_response(StatusCode::OK, views::route_json(state)),
                outcome,
            )
        }
        Err(e @ SwitchError::NotConfigured(_)) => {
            tracing::info!(%peer, %wanted, reason = %e, "route switch refused");
            (error(StatusCode::BAD_REQUEST, &e.to_string()), "refused")
        }
        Err(e @ SwitchError::Persist { .. }) => {
            tracing::error!(%peer, %wanted, reason = %e, "route switch failed");
            (
                error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                "failed",
            )
        }
    }
}

/// The answer to a `PUT /route` dry run: what would happen; nothing changed.
fn dry_run_answer(
    current: RoleTargets,
    wanted: RoleTargets,
    would_switch: bool,
    (key, value): (&str, serde_json::Value),
) -> (Response<Body>, &'static str) {
    let mut body = json!({
        "dry_run": true,
        "would_switch": would_switch,
        "route": current.to_string(),
        "requested": wanted.to_string(),
    });
    body[key] = value;
    (json_response(StatusCode::OK, body), "unchanged")
}

/// The roles a `PUT /route` body moves; the error says what to send instead.
fn route_request(update: RouteUpdate) -> Result<RouteRequest, String> {
    let parse = |field: &str, v: &str| {
        Target::parse(v).ok_or_else(|| format!("unknown {field} '{v}'; use \"old\" or \"new\""))
    };
    match (update.target, update.producer, update.consumer) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(
            "give either \"target\" (both roles) or \"producer\"/\"consumer\", not both".to_owned(),
        ),
        (Some(t), None, None) => Ok(RouteRequest::whole(parse("target", &t)?)),
        (None, None, None) => Err(
            r#"nothing to switch; send {"target":"new"} or {"producer":"new","consumer":"old"}"#
                .to_owned(),
        ),
        (None, producer, consumer) => Ok(RouteRequest {
            producer: producer.map(|p| parse("producer", &p)).transpose()?,
            consumer: consumer.map(|c| parse("consumer", &c)).transpose()?,
        }),
    }
}

fn put_log_level(
    state: &AdminState,
    peer: SocketAddr,
    body: &[u8],
) -> (Response<Body>, &'static str) {
    let update: LogLevelUpdate = match json_object(body) {
        Ok(u) => u,
        Err(e) => {
            let msg = format!(
                r#"body must be JSON like {{"filter":"info,rocketmq_sidecar=debug"}}: {e}"#
            );
            return (error(StatusCode::BAD_REQUEST, &msg), "invalid");
        }
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

/// `None` when the mutation may proceed, else the refusal to send.
fn authorize(state: &AdminState, peer: SocketAddr, req: &Request<Bytes>) -> Option<Response<Body>> {
    let token_file: &Option<PathBuf> = &state.config.admin_token_file;
    match token_file {
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
            if http::constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
                None
            } else {
                Some(error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
            }
        }
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

/// `GET /`: the endpoint table.
fn index_json() -> serde_json::Value {
    let endpoints: Vec<_> = ENDPOINTS
        .iter()
        .map(|e| json!({ "method": e.method, "path": e.path, "about": e.about }))
        .collect();
    json!({ "endpoints": endpoints })
}
