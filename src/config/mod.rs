//! Configuration: `config.toml` (every key optional, defaults documented there), then
//! environment overrides, then validation into an immutable [`Config`]. Nothing binds or
//! connects here, so `rmq-sidecar check` can validate a config anywhere.

pub mod env;
mod file;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use env::{Env, ProcessEnv};
pub use file::ConfigFile;

use rmq_common::Target;

use crate::acl::credentials::{CredentialSources, Source};
use crate::protocol::DEFAULT_MAX_FRAME_BYTES;

pub use rmq_common::contract::{
    parse_namesrv_list, DEFAULT_ADMIN_LISTEN, DEFAULT_HEALTH_LISTEN, DEFAULT_NAMESRV_LISTEN,
};
pub use rmq_common::logging::LogFormat;
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            namesrv_connections: 1024,
            broker_connections: 1024,
            admin_connections: 64,
            health_connections: 256,
            namesrv_inflight: 256,
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
    /// Target when no persisted state exists.
    pub target: Target,
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
        let pick = |var: &'static str, value: Option<String>| match env.var(var) {
            Some(v) => (Some(v), Some(var)),
            None => (value, None),
        };

        let (target_s, target_env) = pick(env::TARGET, file.target);
        let target = match target_s.as_deref() {
            None => Target::Old,
            Some(s) => Target::parse(s).ok_or_else(|| ConfigError::Invalid {
                key: "target",
                message: format!("'{s}' is not a cluster; use \"old\" or \"new\""),
                env: target_env,
            })?,
        };

        let (state_s, _) = pick(env::STATE_DIR, file.state_dir);
        let state_dir = state_s.filter(|s| !s.trim().is_empty()).map(PathBuf::from);

        let (drain_s, drain_env) = pick(
            env::DRAIN_SECONDS,
            file.drain_seconds.map(|d| d.to_string()),
        );
        let drain_secs: u64 = match drain_s {
            None => 30,
            Some(s) => s
                .trim()
                .parse()
                .ok()
                .filter(|d| *d <= 3600)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "drain_seconds",
                    message: format!("'{s}' is not a whole number of seconds from 0 to 3600"),
                    env: drain_env,
                })?,
        };

        let frame_max_bytes = match file.frame_max_bytes {
            None => DEFAULT_MAX_FRAME_BYTES,
            Some(n) if (1024..=(1u64 << 30)).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::Invalid {
                    key: "frame_max_bytes",
                    message: format!("{n} is outside 1024..=1073741824"),
                    env: None,
                })
            }
        };

        let (log_s, log_env) = pick(env::LOG, file.log);
        let log = log_s.unwrap_or_else(|| "info".to_owned());
        // The filter start-up installs: a filter `check` accepts must be one `run` starts with.
        rmq_common::logging::validate_filter(&log).map_err(|message| ConfigError::Invalid {
            key: "log",
            message,
            env: log_env,
        })?;
        let (fmt_s, fmt_env) = pick(env::LOG_FORMAT, file.log_format);
        let log_format = match fmt_s.as_deref() {
            None => LogFormat::Text,
            Some(s) => LogFormat::parse(s).ok_or_else(|| ConfigError::Invalid {
                key: "log_format",
                message: format!("'{}' is not \"text\" or \"json\"", s.trim()),
                env: fmt_env,
            })?,
        };

        let listen = file.listen;
        let namesrv_listen = socket_addr(
            "listen.namesrv",
            pick(env::LISTEN, listen.namesrv),
            DEFAULT_NAMESRV_LISTEN,
        )?;
        if !namesrv_listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "listen.namesrv",
                message: format!(
                    "{namesrv_listen} is not a loopback address; the name-server port carries \
                     the pod's broker traffic (and credentials) and must stay inside the pod"
                ),
                env: env.var(env::LISTEN).map(|_| env::LISTEN),
            });
        }
        let admin_listen = socket_addr(
            "listen.admin",
            pick(env::ADMIN, listen.admin),
            DEFAULT_ADMIN_LISTEN,
        )?;
        let health_listen = socket_addr(
            "listen.health",
            pick(env::METRICS, listen.health),
            DEFAULT_HEALTH_LISTEN,
        )?;
        let (bind_s, bind_env) = pick(env::BROKER_BIND, listen.broker_bind);
        let broker_bind = parse_broker_bind(bind_s.as_deref().unwrap_or(DEFAULT_BROKER_BIND))
            .map_err(|message| ConfigError::Invalid {
                key: "listen.broker_bind",
                message,
                env: bind_env,
            })?;
        let broker_fallback_ports = parse_port_range(
            listen
                .broker_fallback_ports
                .as_deref()
                .unwrap_or(DEFAULT_FALLBACK_PORTS),
        )
        .map_err(|message| ConfigError::Invalid {
            key: "listen.broker_fallback_ports",
            message,
            env: None,
        })?;
        // Port 0 (any free port, used by tests) may repeat; fixed ports may not.
        let fixed: Vec<SocketAddr> = [namesrv_listen, admin_listen, health_listen]
            .into_iter()
            .filter(|a| a.port() != 0)
            .collect();
        let mut distinct = fixed.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != fixed.len() {
            return Err(ConfigError::Invalid {
                key: "listen",
                message: "namesrv, admin and health must be three different addresses".to_owned(),
                env: None,
            });
        }

        let (shutdown_s, shutdown_env) = pick(
            env::ENABLE_SHUTDOWN,
            file.admin.enable_shutdown.map(|b| b.to_string()),
        );
        let enable_shutdown = match shutdown_s.as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "admin.enable_shutdown",
                    message: format!("'{other}' is not true or false"),
                    env: shutdown_env,
                })
            }
        };
        let (annotations_s, _) = pick(env::ANNOTATIONS_FILE, file.annotations_file);
        let annotations_file = annotations_s
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from);
        let route_annotation = file
            .route_annotation
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|| rmq_common::contract::ROUTE_ANNOTATION.to_owned());
        if route_annotation.is_empty() || route_annotation.contains(['=', '"', '\n']) {
            return Err(ConfigError::Invalid {
                key: "route_annotation",
                message: format!("'{route_annotation}' is not an annotation key"),
                env: None,
            });
        }
        let (token_s, _) = pick(env::ADMIN_TOKEN_FILE, file.admin.token_file);
        let admin_token_file = token_s.filter(|s| !s.trim().is_empty()).map(PathBuf::from);

        let connect_timeout = millis(
            "upstream.connect_timeout_ms",
            file.upstream.connect_timeout_ms,
            3000,
        )?;
        let namesrv_timeout = millis(
            "upstream.namesrv_timeout_ms",
            file.upstream.namesrv_timeout_ms,
            3000,
        )?;

        let retire_idle = match file.upstream.retire_idle_seconds.unwrap_or(45) {
            0 => None,
            s @ 1..=3600 => Some(Duration::from_secs(s)),
            s => {
                return Err(ConfigError::Invalid {
                    key: "upstream.retire_idle_seconds",
                    message: format!("{s} is outside 0..=3600 seconds (0 = never)"),
                    env: None,
                })
            }
        };

        let limits = limits(&file.limits)?;

        let clusters = file.clusters;
        let old = cluster(Target::Old, clusters.old, env)?;
        let new = cluster(Target::New, clusters.new, env)?;
        for (key, c) in [
            ("clusters.old.broker_name_prefix", &old),
            ("clusters.new.broker_name_prefix", &new),
        ] {
            if let Some(bad) = c
                .broker_name_prefix
                .chars()
                .find(|ch| matches!(ch, ':' | ';' | '%' | '"' | '\\' | '@') || ch.is_whitespace())
            {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("'{bad}' cannot be part of a broker name"),
                    env: None,
                });
            }
        }
        if old.broker_name_prefix == new.broker_name_prefix {
            return Err(ConfigError::Invalid {
                key: "clusters.new.broker_name_prefix",
                message: format!(
                    "equals the old cluster's prefix '{}': broker names must stay distinct per \
                     cluster, or a consumer that switches keeps offsets of the other cluster",
                    new.broker_name_prefix
                ),
                env: None,
            });
        }
        let chosen = match target {
            Target::Old => &old,
            Target::New => &new,
        };
        if chosen.namesrv.is_empty() {
            let (key, var) = match target {
                Target::Old => ("clusters.old.namesrv", env::OLD_NAMESRV),
                Target::New => ("clusters.new.namesrv", env::NEW_NAMESRV),
            };
            return Err(ConfigError::Invalid {
                key,
                message: format!("the initial target is '{target}' but it has no name servers; set {key} or {var}"),
                env: None,
            });
        }

        Ok(Config {
            target,
            state_dir,
            drain: Duration::from_secs(drain_secs),
            frame_max_bytes,
            log,
            log_format,
            namesrv_listen,
            admin_listen,
            health_listen,
            broker_bind,
            broker_fallback_ports,
            admin_token_file,
            enable_shutdown,
            annotations_file,
            route_annotation,
            connect_timeout,
            namesrv_timeout,
            retire_idle,
            limits,
            old,
            new,
        })
    }

    /// The settings of `target`.
    pub fn cluster(&self, target: Target) -> &ClusterConfig {
        match target {
            Target::Old => &self.old,
            Target::New => &self.new,
        }
    }
}

fn socket_addr(
    key: &'static str,
    (value, env): (Option<String>, Option<&'static str>),
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let s = value.unwrap_or_else(|| default.to_owned());
    s.trim().parse().map_err(|_| ConfigError::Invalid {
        key,
        message: format!("'{s}' is not an ip:port address (e.g. {default})"),
        env,
    })
}

fn millis(key: &'static str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        ms @ 1..=600_000 => Ok(Duration::from_millis(ms)),
        ms => Err(ConfigError::Invalid {
            key,
            message: format!("{ms} is outside 1..=600000 milliseconds"),
            env: None,
        }),
    }
}

fn limits(file: &file::LimitsFile) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let one = |key: &'static str, value: Option<u64>, default: usize| match value {
        None => Ok(default),
        Some(n @ 1..=1_000_000) => Ok(n as usize),
        Some(n) => Err(ConfigError::Invalid {
            key,
            message: format!("{n} is outside 1..=1000000"),
            env: None,
        }),
    };
    Ok(Limits {
        namesrv_connections: one(
            "limits.namesrv_connections",
            file.namesrv_connections,
            d.namesrv_connections,
        )?,
        broker_connections: one(
            "limits.broker_connections",
            file.broker_connections,
            d.broker_connections,
        )?,
        admin_connections: one(
            "limits.admin_connections",
            file.admin_connections,
            d.admin_connections,
        )?,
        health_connections: one(
            "limits.health_connections",
            file.health_connections,
            d.health_connections,
        )?,
        namesrv_inflight: one(
            "limits.namesrv_inflight",
            file.namesrv_inflight,
            d.namesrv_inflight,
        )?,
    })
}

/// Dotted keys of one cluster's section, for error messages.
struct ClusterKeys {
    namesrv: &'static str,
    secret_key: &'static str,
    security_token: &'static str,
    unique_key_rule: &'static str,
    check_topic: &'static str,
}

fn cluster(
    target: Target,
    file: file::ClusterFile,
    env: &dyn Env,
) -> Result<ClusterConfig, ConfigError> {
    let (keys, ns_var, vars) = match target {
        Target::Old => (
            ClusterKeys {
                namesrv: "clusters.old.namesrv",
                secret_key: "clusters.old.secret_key",
                security_token: "clusters.old.security_token",
                unique_key_rule: "clusters.old.unique_key_rule",
                check_topic: "clusters.old.check_topic",
            },
            env::OLD_NAMESRV,
            env::OLD_CREDENTIALS,
        ),
        Target::New => (
            ClusterKeys {
                namesrv: "clusters.new.namesrv",
                secret_key: "clusters.new.secret_key",
                security_token: "clusters.new.security_token",
                unique_key_rule: "clusters.new.unique_key_rule",
                check_topic: "clusters.new.check_topic",
            },
            env::NEW_NAMESRV,
            env::NEW_CREDENTIALS,
        ),
    };
    let (ns_value, ns_env) = match env.var(ns_var) {
        Some(v) => (Some(v), Some(ns_var)),
        None => (file.namesrv, None),
    };
    let namesrv = match ns_value {
        None => Vec::new(),
        Some(s) => parse_namesrv_list(&s).map_err(|message| ConfigError::Invalid {
            key: keys.namesrv,
            message,
            env: ns_env,
        })?,
    };
    let inline_secret = |key: &'static str, file_key: &str, var: &str| {
        ConfigError::Invalid {
        key,
        message: format!(
            "secrets are never written inline in config.toml; use {file_key} (a mounted Secret) or {var}"
        ),
        env: None,
    }
    };
    if file.secret_key.is_some() {
        return Err(inline_secret(
            keys.secret_key,
            "secret_key_file",
            vars.secret_key.0,
        ));
    }
    if file.security_token.is_some() {
        return Err(inline_secret(
            keys.security_token,
            "security_token_file",
            vars.security_token.0,
        ));
    }
    // Environment first (value, then file), then config.toml.
    let source = |(value_var, file_var): (&'static str, &'static str),
                  inline: Option<String>,
                  from_file: Option<String>| {
        env.var(value_var)
            .map(Source::Value)
            .or_else(|| env.var(file_var).map(|p| Source::File(PathBuf::from(p))))
            .or_else(|| inline.filter(|v| !v.trim().is_empty()).map(Source::Value))
            .or_else(|| {
                from_file
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| Source::File(PathBuf::from(p)))
            })
    };
    let credentials = CredentialSources {
        access_key: source(vars.access_key, file.access_key, file.access_key_file),
        secret_key: source(vars.secret_key, None, file.secret_key_file),
        security_token: source(vars.security_token, None, file.security_token_file),
    };
    let unique_key_rule = match file.unique_key_rule.as_deref().map(str::trim) {
        None | Some("auto") => UniqueKeyRuleSetting::Auto,
        Some("v4") => UniqueKeyRuleSetting::V4,
        Some("v5") => UniqueKeyRuleSetting::V5,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: keys.unique_key_rule,
                message: format!("'{other}' is not \"auto\", \"v4\" or \"v5\""),
                env: None,
            })
        }
    };
    let check_topic = file
        .check_topic
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if let Some(t) = &check_topic {
        if t.len() > 255 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::Invalid {
                key: keys.check_topic,
                message: format!("'{t}' is not a valid topic name"),
                env: None,
            });
        }
    }
    let default_prefix = match target {
        Target::Old => "",
        Target::New => DEFAULT_NEW_PREFIX,
    };
    Ok(ClusterConfig {
        target,
        namesrv,
        broker_name_prefix: file
            .broker_name_prefix
            .unwrap_or_else(|| default_prefix.to_owned()),
        credentials,
        unique_key_rule,
        check_topic,
    })
}

fn parse_broker_bind(s: &str) -> Result<BrokerBind, String> {
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

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
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
