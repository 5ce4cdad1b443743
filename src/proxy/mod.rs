//! The data plane: the name-server role ([`namesrv`]), the per-broker local listeners
//! ([`listeners`]), the frame relay ([`relay`]) and the broker-name mapping it applies
//! ([`rename`]), plus the sidecar's own name-server client ([`upstream`]).

pub mod check;
pub mod conns;
pub mod listeners;
pub mod namesrv;
pub mod relay;
pub mod rename;
pub mod roles;
pub mod signing;
pub mod upstream;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::acl::credentials::{CredentialError, CredentialStore};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::routing::RouteState;
use rmq_common::Target;

pub use conns::ConnTracker;
pub use rename::Renamer;
pub use signing::Signer;
pub use upstream::NameServerClient;

/// Per-cluster runtime: its name-server client and broker-name mapping.
#[derive(Debug)]
pub struct Cluster {
    /// Which cluster.
    pub target: Target,
    /// Client for this cluster's name servers.
    pub namesrv: NameServerClient,
    /// How this cluster's broker names appear to the app.
    pub renamer: Renamer,
    /// Credentials and signing state.
    pub signer: Arc<Signer>,
    /// Topic the credential check uses to find a broker.
    pub check_topic: Option<String>,
    /// The cluster's namespace (TDMQ 4.x): names are wrapped towards it, unwrapped back.
    pub namespace: Option<crate::protocol::namespace::Namespace>,
}

/// What every relayed connection needs.
#[derive(Debug)]
pub struct RelayContext {
    /// Old and new cluster, indexed by [`cluster_index`].
    pub clusters: [Arc<Cluster>; 2],
    /// Open client connections (for drain).
    pub conns: ConnTracker,
    /// Largest accepted frame.
    pub frame_max_bytes: usize,
    /// Longest a connection may hold an incomplete frame.
    pub partial_frame: Duration,
    /// Bytes held in incomplete frames across every relayed connection, and their cap.
    pub partial_budget: Arc<relay::PartialBudget>,
    /// Log lines about bad frames, at most one per 10 s.
    bad_frames: std::sync::Mutex<rmq_common::serve::RateLimitedLog>,
    /// Connect timeout to brokers.
    pub connect_timeout: Duration,
    /// Most app connections open at once on each broker listener.
    pub max_broker_connections: usize,
    /// The pod's route, to retire connections to a cluster it has left.
    pub route: watch::Receiver<RouteState>,
    /// Idle time before such a connection is closed (`None` = never).
    pub retire_idle: Option<Duration>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set by `POST /drain`: stop accepting app connections, close idle ones.
    pub draining: watch::Sender<bool>,
    /// Open relays per upstream broker address.
    pub open_by_upstream: dashmap::DashMap<String, (Target, usize)>,
    /// Every upstream broker address a cluster's routes named (where requests redirected
    /// to that cluster go).
    pub brokers: dashmap::DashMap<String, Target>,
    /// Bumped when the app's consumers should rebalance now (after a route refresh that
    /// follows a consumer switch); every relay with consumers tells its client.
    pub consumer_notify: watch::Sender<u64>,
    /// Producer groups kept heartbeating a cluster for their transactions.
    pub transactional: roles::TransactionalGroups,
    /// The consumer switch generation up to which the app has fetched a route since (then
    /// its tables hold the consumers' cluster's brokers).
    pub consumer_route_refreshed: std::sync::atomic::AtomicU64,
    /// Client ids the app's heartbeats carried (a pod usually runs one client instance).
    pub client_ids: roles::ClientIds,
    /// The topics and groups the pod uses, as relayed so far.
    pub usage: Arc<usage::Usage>,
    /// Per upstream broker: woken when a connect to it failed (its listeners then close
    /// until it accepts again).
    pub upstream_down: dashmap::DashMap<String, Arc<UpstreamDown>>,
}

/// The signal between the relays to one broker and that broker's listeners: a relay that
/// found the broker refusing connections wakes the listeners, which close; each closed
/// listener is counted, so the relay can wait for them before it closes the app's
/// connection (the app's reconnect must then be refused, not accepted).
#[derive(Debug)]
pub struct UpstreamDown {
    /// Woken when the broker refused a connect.
    pub refused: tokio::sync::Notify,
    /// How many of its listeners are closed now.
    pub closed_listeners: tokio::sync::watch::Sender<usize>,
}

impl Default for UpstreamDown {
    fn default() -> Self {
        Self {
            refused: tokio::sync::Notify::new(),
            closed_listeners: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Index of a cluster in [`RelayContext::clusters`].
pub fn cluster_index(target: Target) -> usize {
    target.index()
}

// === impl RelayContext ===

impl RelayContext {
    /// Builds the clusters from the config; loads credentials once (a broken credential
    /// source at startup is an error, later ones keep the last good credentials).
    pub fn new(
        config: &Config,
        route: watch::Receiver<RouteState>,
        metrics: Metrics,
    ) -> Result<Self, (Target, CredentialError)> {
        let make = |target: Target| -> Result<Arc<Cluster>, (Target, CredentialError)> {
            let c = config.cluster(target);
            let store = CredentialStore::new(c.credentials.clone()).map_err(|e| (target, e))?;
            let signer = Arc::new(Signer::new(
                target,
                store,
                c.unique_key_rule,
                metrics.clone(),
            ));
            Ok(Arc::new(Cluster {
                target,
                namesrv: NameServerClient::new(
                    target,
                    c.namesrv.clone(),
                    config.connect_timeout,
                    config.namesrv_timeout,
                    config.frame_max_bytes,
                    signer.clone(),
                    metrics.clone(),
                )
                .with_namespace(c.namespace.clone()),
                renamer: Renamer::new(&c.broker_name_prefix),
                signer,
                check_topic: c.check_topic.clone(),
                namespace: c.namespace.clone(),
            }))
        };
        Ok(Self {
            clusters: [make(Target::Old)?, make(Target::New)?],
            conns: ConnTracker::default(),
            frame_max_bytes: config.frame_max_bytes,
            partial_frame: config.limits.partial_frame,
            partial_budget: Arc::new(relay::PartialBudget::new(
                config.limits.partial_frame_budget_bytes,
                Some(
                    metrics
                        .incomplete_frame_bytes
                        .with_label_values(&[] as &[&str]),
                ),
            )),
            bad_frames: std::sync::Mutex::new(rmq_common::serve::RateLimitedLog::new(
                rmq_common::serve::LOG_EVERY,
            )),
            connect_timeout: config.connect_timeout,
            max_broker_connections: config.limits.broker_connections,
            route,
            retire_idle: config.retire_idle,
            metrics,
            draining: watch::channel(false).0,
            open_by_upstream: dashmap::DashMap::new(),
            brokers: dashmap::DashMap::new(),
            consumer_notify: watch::channel(0).0,
            transactional: Default::default(),
            upstream_down: dashmap::DashMap::new(),
            consumer_route_refreshed: std::sync::atomic::AtomicU64::new(0),
            client_ids: Default::default(),
            usage: Default::default(),
        })
    }

    /// Resolves once `POST /drain` was called.
    pub async fn drain_requested(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// A broker address of `target` to send redirected requests to: one the app is
    /// connected to if there is one, else any its routes named.
    pub fn broker_of(&self, target: Target) -> Option<String> {
        let open = self
            .open_by_upstream
            .iter()
            .filter(|e| e.value().0 == target && e.value().1 > 0)
            .map(|e| e.key().clone())
            .min();
        open.or_else(|| {
            self.brokers
                .iter()
                .filter(|e| *e.value() == target)
                .map(|e| e.key().clone())
                .min()
        })
    }

    /// Whether the app has fetched a route since its consumers last moved.
    pub fn consumers_refreshed(&self) -> bool {
        let generation = self.route.borrow().consumer.generation;
        self.consumer_route_refreshed
            .load(std::sync::atomic::Ordering::SeqCst)
            >= generation
    }

    /// `Some(lines held back)` when a line about a bad frame may be logged now (at most
    /// one per 10 s: a flood of bad frames must not flood the log).
    pub fn bad_frame_log(&self) -> Option<u64> {
        self.bad_frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow()
    }

    /// The signal the listeners of `upstream` wait on for "it refuses connections".
    pub fn upstream_down_signal(&self, upstream: &str) -> Arc<UpstreamDown> {
        self.upstream_down
            .entry(upstream.to_owned())
            .or_default()
            .clone()
    }

    /// Reports that `upstream` refused (or did not answer) a connect.
    pub fn upstream_refused(&self, upstream: &str) {
        self.upstream_down_signal(upstream).refused.notify_waiters();
    }

    /// Reports that `upstream` refused a connect and waits, at most `limit`, until one of
    /// its listeners has closed.
    pub async fn upstream_refused_and_closed(&self, upstream: &str, limit: Duration) {
        let signal = self.upstream_down_signal(upstream);
        let mut closed = signal.closed_listeners.subscribe();
        signal.refused.notify_waiters();
        let _ = tokio::time::timeout(limit, closed.wait_for(|n| *n > 0)).await;
    }

    /// The runtime of `target`.
    pub fn cluster(&self, target: Target) -> &Arc<Cluster> {
        &self.clusters[cluster_index(target)]
    }
}
