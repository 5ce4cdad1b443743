//! `ConfigFile`: the serde mirror of `config.toml`. Every key is optional here so that
//! environment variables can fill or override it before validation names what is wrong.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// Initial route: "old", "new" or "producer=new,consumer=old".
    pub target: Option<String>,
    /// Directory for persisted state (target, listener map).
    pub state_dir: Option<String>,
    /// Longest drain after SIGTERM, in seconds.
    pub drain_seconds: Option<u64>,
    /// Largest accepted frame, length prefix included.
    pub frame_max_bytes: Option<u64>,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: Option<String>,
    /// Log format: "text" or "json".
    pub log_format: Option<String>,
    /// Downward API file with the pod's annotations (the route annotation is followed).
    pub annotations_file: Option<String>,
    /// The annotation key that holds the pod's route.
    pub route_annotation: Option<String>,
    /// Listen addresses.
    pub listen: ListenFile,
    /// Admin server settings.
    pub admin: AdminFile,
    /// Upstream timeouts.
    pub upstream: UpstreamFile,
    /// Caps on connections and in-flight requests.
    pub limits: LimitsFile,
    /// The migration gates.
    pub gates: GatesFile,
    /// The two clusters.
    pub clusters: ClustersFile,
}

/// `[listen]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenFile {
    /// Name-server listener (the app's NAMESRV_ADDR).
    pub namesrv: Option<String>,
    /// Admin listener (reads and mutations).
    pub admin: Option<String>,
    /// Health/metrics listener (read-only; probes and Prometheus).
    pub health: Option<String>,
    /// Loopback IP or CIDR where per-broker listeners bind.
    pub broker_bind: Option<String>,
    /// Port range for broker listeners whose upstream port cannot be kept locally.
    pub broker_fallback_ports: Option<String>,
}

/// `[admin]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminFile {
    /// File holding a bearer token that mutations must carry.
    pub token_file: Option<String>,
    /// Whether `POST /shutdown` may stop the sidecar.
    pub enable_shutdown: Option<bool>,
}

/// `[upstream]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamFile {
    /// TCP connect timeout to name servers and brokers, in milliseconds.
    pub connect_timeout_ms: Option<u64>,
    /// How long one name server may take to answer before the next is tried.
    pub namesrv_timeout_ms: Option<u64>,
    /// Close a connection to a cluster that is no longer the target after this long
    /// without a request from the app (0 = never).
    pub retire_idle_seconds: Option<u64>,
}

/// `[limits]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsFile {
    /// Most app connections open at once on the name-server listener.
    pub namesrv_connections: Option<u64>,
    /// Most app connections open at once on each broker listener (and on its VIP twin).
    pub broker_connections: Option<u64>,
    /// Most connections open at once on the admin listener.
    pub admin_connections: Option<u64>,
    /// Most connections open at once on the health listener.
    pub health_connections: Option<u64>,
    /// Most name-server requests being answered at once; more get SYSTEM_BUSY.
    pub namesrv_inflight: Option<u64>,
    /// Largest frame accepted on the name-server listener (route requests are small).
    pub namesrv_frame_max_bytes: Option<u64>,
    /// Longest a connection may hold an incomplete frame before it is closed.
    pub partial_frame_seconds: Option<u64>,
    /// Most bytes in incomplete frames across all relayed connections.
    pub partial_frame_budget_bytes: Option<u64>,
}

/// `[gates]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatesFile {
    /// Check every switch (false: switches are applied unchecked, as before the gates).
    pub enabled: Option<bool>,
    /// How long one read of a gate (one request to a server) may take, in milliseconds.
    pub read_timeout_ms: Option<u64>,
    /// How long the cluster the last consumers leave must have had no write, in seconds.
    pub quiet_seconds: Option<u64>,
    /// How often a refused annotation is tried again, in seconds.
    pub retry_seconds: Option<u64>,
    /// How often the pod's consumer groups' backlog is sampled for the metrics (0 = never).
    pub backlog_sample_seconds: Option<u64>,
}

/// `[clusters]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClustersFile {
    /// `[clusters.old]`
    pub old: ClusterFile,
    /// `[clusters.new]`
    pub new: ClusterFile,
}

/// `[clusters.old]` / `[clusters.new]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterFile {
    /// Name servers, RocketMQ style: `host:port;host:port`.
    pub namesrv: Option<String>,
    /// Prefix added to this cluster's broker names as the app sees them.
    pub broker_name_prefix: Option<String>,
    /// AccessKey, inline (not a secret by itself).
    pub access_key: Option<String>,
    /// File holding the AccessKey.
    pub access_key_file: Option<String>,
    /// File holding the SecretKey (a mounted Secret). There is no inline form.
    pub secret_key_file: Option<String>,
    /// File holding an optional SecurityToken.
    pub security_token_file: Option<String>,
    /// Refused with a clear message: secrets are never inline in config.toml.
    pub secret_key: Option<toml::Value>,
    /// Refused with a clear message: secrets are never inline in config.toml.
    pub security_token: Option<toml::Value>,
    /// Which `_UNIQUE_KEY_QUERY` signing rule the cluster's servers apply: auto, v4 or v5.
    pub unique_key_rule: Option<String>,
    /// Topic used by the credential check to find a broker (optional).
    pub check_topic: Option<String>,
    /// The cluster's namespace (TDMQ 4.x), wrapped around every topic and group the app
    /// names; empty or absent = none.
    pub namespace: Option<String>,
}
