//! Wiring: bind every listener, restore persisted state, start the servers, probe the
//! target's name servers for readiness, and drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::acl::credentials::ReloadOutcome;
use crate::admin::{self, AdminState, Port};
use crate::annotation::AnnotationWatch;
use crate::config::Config;
use crate::gates::Gates;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::protocol::code::request;
use crate::protocol::Header;
use crate::proxy::check;
use crate::proxy::listeners::{self, ListenerRegistry};
use crate::proxy::namesrv::NameServerRole;
use crate::proxy::{ConnTracker, RelayContext};
use crate::routing::{LoadError, RouteSwitch};
use rmq_common::logging::LogControl;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Persisted route unreadable.
    #[error(transparent)]
    Route(#[from] LoadError),
    /// Persisted listener map unreadable.
    #[error("cannot restore broker listeners: {0}")]
    Listeners(std::io::Error),
    /// Metric declarations are invalid (a bug).
    #[error("cannot declare metrics: {0}")]
    Metrics(prometheus::Error),
    /// A cluster's credentials cannot be loaded.
    #[error("credentials of cluster '{target}': {source}")]
    Credentials {
        /// Which cluster.
        target: rmq_common::Target,
        /// Why (never contains a secret).
        source: crate::acl::credentials::CredentialError,
    },
}

/// The sidecar, configured but not started.
#[derive(Debug)]
pub struct App {
    config: Arc<Config>,
    log: Option<Arc<LogControl>>,
}

/// The sidecar's state, built but not serving (nothing bound, nothing connected).
#[derive(Debug)]
pub struct Core {
    admin: Arc<AdminState>,
    /// The route was restored from the state dir (a restart, not a fresh pod).
    restored: bool,
}

/// A started sidecar.
#[derive(Debug)]
pub struct Running {
    /// Where the name-server role listens.
    pub namesrv_addr: SocketAddr,
    /// Where the admin server listens.
    pub admin_addr: SocketAddr,
    /// Where the health server listens.
    pub health_addr: SocketAddr,
    /// The pod's route.
    pub route: Arc<RouteSwitch>,
    /// Readiness and upstream health.
    pub health: Arc<Health>,
    /// Broker listeners.
    pub listeners: Arc<ListenerRegistry>,
    /// Open client connections.
    pub conns: ConnTracker,
    shutdown: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl App ===

impl App {
    /// A sidecar for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
            log: None,
        }
    }

    /// Lets `PUT /log-level` change the process's log filter.
    pub fn with_log_control(mut self, log: Arc<LogControl>) -> Self {
        self.log = Some(log);
        self
    }

    /// Builds the sidecar's state without binding or connecting anything: the route
    /// (restored from the state dir), metrics, clusters with their credentials, the
    /// listener registry (empty until [`App::start`] restores it), health and the
    /// annotation watch. The admin handlers run on it, so tests can call them in memory.
    pub fn core(&self) -> Result<Core, StartError> {
        let config = self.config.clone();
        let log = self
            .log
            .clone()
            .unwrap_or_else(|| Arc::new(LogControl::fixed(&config.log)));
        let (shutdown, _) = watch::channel(false);
        let (route, restored) = RouteSwitch::load(&config)?;
        let route = Arc::new(route);
        if restored {
            tracing::info!(route = %route.current().targets(), generation = route.current().generation, "route restored from the state dir");
        }
        let metrics = Metrics::new(prometheus::Registry::new()).map_err(StartError::Metrics)?;
        let now = route.current();
        metrics.set_route(now.targets(), now.generation);
        let ctx = Arc::new(
            RelayContext::new(&config, route.subscribe(), metrics)
                .map_err(|(target, source)| StartError::Credentials { target, source })?,
        );
        let listeners = Arc::new(ListenerRegistry::new(
            ctx.clone(),
            config.broker_bind,
            config.broker_fallback_ports,
            config.state_dir.clone(),
        ));
        let gates = Arc::new(Gates::new(
            config.gates,
            config.state_dir.as_deref(),
            ctx.metrics.clone(),
        ));
        if let Some(dir) = &config.state_dir {
            ctx.usage
                .restore_from(&dir.join(rmq_common::contract::USAGE_FILE));
        }
        let annotation = config.annotations_file.as_ref().map(|file| {
            Arc::new(AnnotationWatch::new(
                file.clone(),
                config.route_annotation.clone(),
            ))
        });
        Ok(Core {
            admin: Arc::new(AdminState {
                config,
                route,
                health: Arc::new(Health::default()),
                listeners,
                ctx,
                log,
                shutdown,
                annotation,
                gates,
            }),
            restored,
        })
    }

    /// Binds every listener, restores persisted state and starts serving.
    pub async fn start(self) -> Result<Running, StartError> {
        let core = self.core()?;
        let state = core.admin.clone();
        let config = state.config.clone();
        let (route, ctx, listeners, health) = (
            state.route.clone(),
            state.ctx.clone(),
            state.listeners.clone(),
            state.health.clone(),
        );
        // The app still dials the listeners it was given before a restart: re-open them
        // before anything reports ready.
        let n = listeners.restore().await.map_err(StartError::Listeners)?;
        if n > 0 {
            tracing::info!(count = n, "broker listeners restored");
        }

        let bind = |addr: SocketAddr, what: &'static str| {
            listeners::bind(addr).map_err(|source| StartError::Bind { addr, what, source })
        };
        let ns_listener = bind(config.namesrv_listen, "listen.namesrv")?;
        let admin_listener = bind(config.admin_listen, "listen.admin")?;
        let health_listener = bind(config.health_listen, "listen.health")?;
        let local = |l: &TcpListener, fallback: SocketAddr| l.local_addr().unwrap_or(fallback);
        let namesrv_addr = local(&ns_listener, config.namesrv_listen);
        let admin_addr = local(&admin_listener, config.admin_listen);
        let health_addr = local(&health_listener, config.health_listen);

        let role = Arc::new(NameServerRole::new(
            ctx.clone(),
            listeners.clone(),
            route.clone(),
            health.clone(),
            config.limits.namesrv_inflight,
            config.limits.namesrv_frame_max_bytes,
        ));
        let mut tasks = vec![];
        // A fresh pod (no persisted route) is placed where its annotation says before
        // anything reports ready; a restarted one goes on from its persisted route and
        // takes a changed annotation through the gates, like any switch.
        if let Some(watch) = state.annotation.clone() {
            if let Some(target) = watch.read_once(&ctx.metrics) {
                if !core.restored {
                    watch.place(target, &route, &ctx.metrics);
                }
            }
            tasks.push(tokio::spawn(watch.run(
                route.clone(),
                ctx.metrics.clone(),
                state.gates.clone(),
                ctx.clone(),
            )));
        }
        tasks.push(tokio::spawn(
            state.gates.clone().sample_backlog(ctx.clone()),
        ));
        if let Some(dir) = &config.state_dir {
            let path = dir.join(rmq_common::contract::USAGE_FILE);
            tasks.push(tokio::spawn(
                ctx.usage.clone().persist_every(path, USAGE_PERSIST_EVERY),
            ));
        }
        let limits = config.limits;
        let forever = std::future::pending::<()>;
        tasks.extend([
            tokio::spawn(role.serve(ns_listener, limits.namesrv_connections)),
            tokio::spawn(admin::serve(
                state.clone(),
                admin_listener,
                Port::Admin,
                limits.admin_connections,
                forever(),
            )),
            tokio::spawn(admin::serve(
                state.clone(),
                health_listener,
                Port::Health,
                limits.health_connections,
                forever(),
            )),
            tokio::spawn(probe_until_ready(
                ctx.clone(),
                route.clone(),
                health.clone(),
            )),
            tokio::spawn(watch_credentials(ctx.clone(), config.namesrv_timeout)),
            tokio::spawn(crate::heap::trim_after_bursts(
                {
                    let conns = ctx.conns.clone();
                    move || conns.closed_total()
                },
                ctx.metrics.clone(),
            )),
        ]);
        tracing::info!(
            namesrv = %namesrv_addr,
            admin = %admin_addr,
            health = %health_addr,
            broker_bind = %config.broker_bind,
            route = %route.current().targets(),
            "rmq-sidecar started"
        );
        Ok(Running {
            namesrv_addr,
            admin_addr,
            health_addr,
            route,
            health,
            listeners,
            conns: ctx.conns.clone(),
            shutdown: state.shutdown.subscribe(),
            tasks,
        })
    }
}

// === impl Core ===

impl Core {
    /// The state the admin and health handlers answer from.
    pub fn admin_state(&self) -> Arc<AdminState> {
        self.admin.clone()
    }
}

// === impl Running ===

impl Running {
    /// Waits until no client connection is open or `drain` has passed.
    pub async fn drain(&self, drain: Duration) -> bool {
        tokio::select! {
            _ = self.conns.wait_idle() => true,
            _ = tokio::time::sleep(drain) => false,
        }
    }

    /// Resolves when `POST /shutdown` (if enabled) asked the process to stop.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Stops the servers (open relays end with the runtime).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.listeners.close_all();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort();
    }
}

/// How often credential files are re-read.
const CREDENTIAL_RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How often what the pod uses is written to the state dir (when it changed).
const USAGE_PERSIST_EVERY: Duration = Duration::from_secs(5);

/// Checks every cluster's credentials at startup and after every change, and re-reads
/// credential files every [`CREDENTIAL_RELOAD_EVERY`] (a kubelet Secret update swaps a
/// `..data` symlink; the new content is picked up at the next read).
async fn watch_credentials(ctx: Arc<RelayContext>, timeout: Duration) {
    let configured: Vec<_> = ctx
        .clusters
        .iter()
        .filter(|c| c.signer.is_configured())
        .cloned()
        .collect();
    if configured.is_empty() {
        return;
    }
    for cluster in &configured {
        check::run(cluster, timeout, ctx.frame_max_bytes).await;
    }
    loop {
        tokio::time::sleep(CREDENTIAL_RELOAD_EVERY).await;
        for cluster in &configured {
            if cluster.signer.reload() == ReloadOutcome::Updated {
                check::run(cluster, timeout, ctx.frame_max_bytes).await;
            }
        }
    }
}

/// Asks the name servers of every cluster the pod uses (its producers' and consumers')
/// for the default topic's route every second until each has answered once (any answer,
/// including TOPIC_NOT_EXIST, proves the name server is there).
async fn probe_until_ready(ctx: Arc<RelayContext>, route: Arc<RouteSwitch>, health: Arc<Health>) {
    let mut header = Header::request(request::GET_ROUTEINFO_BY_TOPIC, 0);
    header.set_ext("topic", "TBW102");
    let mut answered = [false; 2];
    while !health.is_ready() {
        let targets = route.current().targets();
        let mut in_use = vec![targets.consumer];
        if targets.producer != targets.consumer {
            in_use.push(targets.producer);
        }
        for target in in_use {
            if answered[target.index()] {
                continue;
            }
            match ctx.cluster(target).namesrv.call(&header, &[]).await {
                Ok(Some(answer)) => {
                    health.answered(target, &answer.addr, 0);
                    answered[target.index()] = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%target, error = %e, "waiting for the target's name server");
                    health.failed(target, e.to_string());
                }
            }
        }
        health.check_ready(&route.current().targets());
        if !health.is_ready() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
