//! Configuration: `config.toml` (every key optional, defaults documented there), then
//! environment overrides, then validation into an immutable [`Config`]. Nothing binds or
//! connects here, so `rmq-sidecar check` can validate a config anywhere.
//!
//! - `file`: [`ConfigFile`], the serde mirror of `config.toml`.
//! - [`env`]: environment overrides behind the [`Env`] trait.
//! - `validate`: one function per section, file + environment into [`Config`].

pub mod env;
mod file;
mod validate;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use env::{Env, ProcessEnv};
pub use file::ConfigFile;

use rmq_common::Target;

use crate::acl::credentials::CredentialSources;

pub use rmq_common::contract::{
    parse_namesrv_list, DEFAULT_ADMIN_LISTEN, DEFAULT_HEALTH_LISTEN, DEFAULT_NAMESRV_LISTEN,
};
pub use rmq_common::logging::LogFormat;
pub use rmq_common::RoleTargets;
/// Default loopback range for per-broker listeners.
pub const DEFAULT_BROKER_BIND: &str = "127.1.0.0/16";
/// Default fallback port range for broker listeners (below Linux's ephemeral range).
pub const DEFAULT_FALLBACK_PORTS: &str = "27000-28999";
/// Default broker-name prefix for the new cluster.
pub const DEFAULT_NEW_PREFIX: &str = "new~";

/// A configuration error, naming the key (and the variable that set it, if any).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file: {0}")]
    Parse(String),
    /// One key has a bad value.
    #[error("{key}: {message}{}", .env.map(|e| format!(" (set by {e})")).unwrap_or_default())]
    Invalid {
        /// Dotted key in config.toml.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
        /// The environment variable the value came from.
        env: Option<&'static str>,
    },
}

/// A loopback IPv4 range (or single address) where broker listeners bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerBind {
    /// First address of the range.
    pub base: Ipv4Addr,
    /// Prefix length (32 = one address).
    pub prefix: u8,
}

/// Caps that keep one listener, or a flood on it, from taking the pod's sidecar down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most app connections open at once on the name-server listener.
    pub namesrv_connections: usize,
    /// Most app connections open at once on each broker listener and on its VIP twin.
    pub broker_connections: usize,
    /// Most connections open at once on the admin listener.
    pub admin_connections: usize,
    /// Most connections open at once on the health listener.
    pub health_connections: usize,
    /// Most name-server requests being answered at once; more are answered SYSTEM_BUSY.
    pub namesrv_inflight: usize,
    /// Largest frame accepted on the name-server listener.
    pub namesrv_frame_max_bytes: usize,
    /// Longest a connection may hold an incomplete frame (a complete one never waits).
    pub partial_frame: Duration,
    /// Most bytes held in incomplete frames the app sent, across its broker connections
    /// together; the connection whose frame would go past it is closed.
    pub partial_frame_budget_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            namesrv_connections: 1024,
            broker_connections: 1024,
            admin_connections: 64,
            health_connections: 256,
            namesrv_inflight: 256,
            namesrv_frame_max_bytes: 64 * 1024,
            partial_frame: Duration::from_secs(30),
            partial_frame_budget_bytes: 64 << 20,
        }
    }
}

/// The migration gates (`[gates]`; see [`crate::gates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatesConfig {
    /// Whether switches are checked.
    pub enabled: bool,
    /// Longest one read (one request to a server) may take.
    pub read_timeout: Duration,
    /// How long the cluster the last consumers of a group leave must have had no write.
    pub quiet: Duration,
    /// How often a refused annotation is tried again.
    pub retry: Duration,
    /// How often the pod's groups' backlog is sampled for the metrics (`None` = never).
    pub backlog_sample: Option<Duration>,
}

impl Default for GatesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            read_timeout: Duration::from_secs(3),
            quiet: Duration::from_secs(30),
            retry: Duration::from_secs(15),
            backlog_sample: Some(Duration::from_secs(60)),
        }
    }
}

/// Settings of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Which cluster this is.
    pub target: Target,
    /// Name servers, tried in order.
    pub namesrv: Vec<String>,
    /// Prefix added to broker names the app sees ("" = names unchanged).
    pub broker_name_prefix: String,
    /// Where this cluster's ACL credentials come from (empty = requests pass unsigned).
    pub credentials: CredentialSources,
    /// Which `_UNIQUE_KEY_QUERY` signing rule its servers apply.
    pub unique_key_rule: UniqueKeyRuleSetting,
    /// Topic whose route the credential check uses to find a broker.
    pub check_topic: Option<String>,
    /// The cluster's namespace: topics and groups are wrapped in it towards the cluster and
    /// unwrapped towards the app (`None` = names unchanged).
    pub namespace: Option<crate::protocol::namespace::Namespace>,
}

/// `unique_key_rule`: how the cluster's servers treat `_UNIQUE_KEY_QUERY` in signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueKeyRuleSetting {
    /// Follow the version the cluster's name servers report (4.x or 5.x).
    Auto,
    /// 4.9.x servers: never signed.
    V4,
    /// 5.x servers: signed for clients at 4.9.4 or later.
    V5,
}

/// Validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where each role goes when no persisted state exists.
    pub target: RoleTargets,
    /// Where the target and the listener map are persisted.
    pub state_dir: Option<PathBuf>,
    /// Longest drain after SIGTERM.
    pub drain: Duration,
    /// Largest accepted frame (length prefix included).
    pub frame_max_bytes: usize,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Name-server listener.
    pub namesrv_listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Health listener.
    pub health_listen: SocketAddr,
    /// Where broker listeners bind.
    pub broker_bind: BrokerBind,
    /// Fallback ports for broker listeners.
    pub broker_fallback_ports: (u16, u16),
    /// Token file for admin mutations.
    pub admin_token_file: Option<PathBuf>,
    /// Whether `POST /shutdown` may stop the sidecar.
    pub enable_shutdown: bool,
    /// Downward API annotations file to follow (`None` = switching by admin only).
    pub annotations_file: Option<PathBuf>,
    /// Annotation key holding the route.
    pub route_annotation: String,
    /// Connect timeout to upstreams.
    pub connect_timeout: Duration,
    /// Per-name-server answer timeout.
    pub namesrv_timeout: Duration,
    /// Idle time after which a connection to a no-longer-targeted cluster is closed
    /// (`None` = never).
    pub retire_idle: Option<Duration>,
    /// Connection and in-flight caps.
    pub limits: Limits,
    /// The migration gates.
    pub gates: GatesConfig,
    /// The old cluster.
    pub old: ClusterConfig,
    /// The new cluster.
    pub new: ClusterConfig,
}

// === impl BrokerBind ===

impl BrokerBind {
    /// Number of addresses in the range.
    pub fn size(&self) -> u32 {
        if self.prefix >= 32 {
            1
        } else {
            1u32 << (32 - self.prefix)
        }
    }

    /// The `n`-th address of the range (wrapping).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(n % self.size()))
    }
}

impl fmt::Display for BrokerBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

// === impl Config ===

impl Config {
    /// Reads `path` (if any), applies `env`, validates.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_str(&text, env)
    }

    /// Parses TOML text, applies `env`, validates.
    pub fn from_toml_str(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(e.to_string().trim().to_owned()))?;
        Self::from_file(file, env)
    }

    /// Applies `env` over `file` and validates.
    pub fn from_file(file: ConfigFile, env: &dyn Env) -> Result<Self, ConfigError> {
        validate::config(file, env)
    }

    /// The settings of `target`.
    pub fn cluster(&self, target: Target) -> &ClusterConfig {
        match target {
            Target::Old => &self.old,
            Target::New => &self.new,
        }
    }
}

pub(crate) fn parse_broker_bind(s: &str) -> Result<BrokerBind, String> {
    let s = s.trim();
    let (ip_s, prefix) = match s.split_once('/') {
        Some((ip, p)) => (
            ip,
            p.parse::<u8>()
                .ok()
                .filter(|p| (8..=32).contains(p))
                .ok_or_else(|| format!("'{s}': prefix length must be 8..=32"))?,
        ),
        None => (s, 32),
    };
    let ip: Ipv4Addr = ip_s.parse().map_err(|_| {
        format!("'{s}' is not an IPv4 address or CIDR (e.g. {DEFAULT_BROKER_BIND})")
    })?;
    if !ip.is_loopback() {
        return Err(format!(
            "'{s}' is not in 127.0.0.0/8; broker listeners must stay inside the pod"
        ));
    }
    let mask = if prefix == 32 {
        u32::MAX
    } else {
        !(u32::MAX >> prefix)
    };
    Ok(BrokerBind {
        base: Ipv4Addr::from(u32::from(ip) & mask),
        prefix,
    })
}

pub(crate) fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!("'{s}' is not a port range like {DEFAULT_FALLBACK_PORTS} (ports 1024-65535, at least 3 ports)")
    };
    let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a < 1024 || b < a.saturating_add(2) {
        return Err(bad());
    }
    Ok((a, b))
}
