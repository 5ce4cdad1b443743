//! Validation: `config.toml` (as [`ConfigFile`]) plus the environment into a [`Config`],
//! one function per section, each error naming its key and the variable that set it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rmq_common::{Role, RoleTargets, Target};

use super::env::{self, Env};
use super::file::{self, ConfigFile};
use super::{
    parse_broker_bind, parse_namesrv_list, parse_port_range, BrokerBind, ClusterConfig, Config,
    ConfigError, GatesConfig, Limits, LogFormat, UniqueKeyRuleSetting, DEFAULT_ADMIN_LISTEN,
    DEFAULT_BROKER_BIND, DEFAULT_FALLBACK_PORTS, DEFAULT_HEALTH_LISTEN, DEFAULT_NAMESRV_LISTEN,
    DEFAULT_NEW_PREFIX,
};
use crate::acl::credentials::{CredentialSources, Source};
use crate::protocol::DEFAULT_MAX_FRAME_BYTES;

/// A value and the environment variable it came from, if any.
type Picked = (Option<String>, Option<&'static str>);

/// The environment's value of `var` if set, else `value` from the file.
fn pick(env: &dyn Env, var: &'static str, value: Option<String>) -> Picked {
    match env.var(var) {
        Some(v) => (Some(v), Some(var)),
        None => (value, None),
    }
}

/// `[listen]`, validated.
struct Listen {
    namesrv: SocketAddr,
    admin: SocketAddr,
    health: SocketAddr,
    broker_bind: BrokerBind,
    broker_fallback_ports: (u16, u16),
}

/// `[admin]` and the annotation settings, validated.
struct Admin {
    enable_shutdown: bool,
    annotations_file: Option<PathBuf>,
    route_annotation: String,
    token_file: Option<PathBuf>,
}

/// `[upstream]`, validated.
struct Upstream {
    connect_timeout: Duration,
    namesrv_timeout: Duration,
    retire_idle: Option<Duration>,
}

/// Applies `env` over `file` and validates every section.
pub(super) fn config(file: ConfigFile, env: &dyn Env) -> Result<Config, ConfigError> {
    let (target_s, target_env) = pick(env, env::TARGET, file.target);
    let target = match target_s.as_deref() {
        None => RoleTargets::both(Target::Old),
        Some(s) => RoleTargets::parse(s).map_err(|message| ConfigError::Invalid {
            key: "target",
            message,
            env: target_env,
        })?,
    };

    let (state_s, _) = pick(env, env::STATE_DIR, file.state_dir);
    let state_dir = state_s.filter(|s| !s.trim().is_empty()).map(PathBuf::from);

    let (drain_s, drain_env) = pick(
        env,
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

    let (log_s, log_env) = pick(env, env::LOG, file.log);
    let log = log_s.unwrap_or_else(|| "info".to_owned());
    // The filter start-up installs: a filter `check` accepts must be one `run` starts with.
    rmq_common::logging::validate_filter(&log).map_err(|message| ConfigError::Invalid {
        key: "log",
        message,
        env: log_env,
    })?;
    let (fmt_s, fmt_env) = pick(env, env::LOG_FORMAT, file.log_format);
    let log_format = match fmt_s.as_deref() {
        None => LogFormat::Text,
        Some(s) => LogFormat::parse(s).ok_or_else(|| ConfigError::Invalid {
            key: "log_format",
            message: format!("'{}' is not \"text\" or \"json\"", s.trim()),
            env: fmt_env,
        })?,
    };

    let listen = listen(file.listen, env)?;
    let admin = admin(
        file.admin,
        file.annotations_file,
        file.route_annotation,
        env,
    )?;
    let upstream = upstream(&file.upstream)?;
    let limits = limits(&file.limits, frame_max_bytes)?;
    let gates = gates(&file.gates, env)?;
    let (old, new) = clusters(file.clusters, target, env)?;
    Ok(Config {
        target,
        state_dir,
        drain: Duration::from_secs(drain_secs),
        frame_max_bytes,
        log,
        log_format,
        namesrv_listen: listen.namesrv,
        admin_listen: listen.admin,
        health_listen: listen.health,
        broker_bind: listen.broker_bind,
        broker_fallback_ports: listen.broker_fallback_ports,
        admin_token_file: admin.token_file,
        enable_shutdown: admin.enable_shutdown,
        annotations_file: admin.annotations_file,
        route_annotation: admin.route_annotation,
        connect_timeout: upstream.connect_timeout,
        namesrv_timeout: upstream.namesrv_timeout,
        retire_idle: upstream.retire_idle,
        limits,
        gates,
        old,
        new,
    })
}

fn listen(listen: file::ListenFile, env: &dyn Env) -> Result<Listen, ConfigError> {
    let namesrv_listen = socket_addr(
        "listen.namesrv",
        pick(env, env::LISTEN, listen.namesrv),
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
        pick(env, env::ADMIN, listen.admin),
        DEFAULT_ADMIN_LISTEN,
    )?;
    let health_listen = socket_addr(
        "listen.health",
        pick(env, env::METRICS, listen.health),
        DEFAULT_HEALTH_LISTEN,
    )?;
    let (bind_s, bind_env) = pick(env, env::BROKER_BIND, listen.broker_bind);
    let broker_bind =
        parse_broker_bind(bind_s.as_deref().unwrap_or(DEFAULT_BROKER_BIND)).map_err(|message| {
            ConfigError::Invalid {
                key: "listen.broker_bind",
                message,
                env: bind_env,
            }
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

    Ok(Listen {
        namesrv: namesrv_listen,
        admin: admin_listen,
        health: health_listen,
        broker_bind,
        broker_fallback_ports,
    })
}

fn admin(
    file: file::AdminFile,
    annotations_file: Option<String>,
    route_annotation: Option<String>,
    env: &dyn Env,
) -> Result<Admin, ConfigError> {
    let (shutdown_s, shutdown_env) = pick(
        env,
        env::ENABLE_SHUTDOWN,
        file.enable_shutdown.map(|b| b.to_string()),
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
    let (annotations_s, _) = pick(env, env::ANNOTATIONS_FILE, annotations_file);
    let annotations_file = annotations_s
        .filter(|s| !s.trim().is_empty())
        .map(PathBuf::from);
    let route_annotation = route_annotation
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|| rmq_common::contract::ROUTE_ANNOTATION.to_owned());
    if route_annotation.is_empty() || route_annotation.contains(['=', '"', '\n']) {
        return Err(ConfigError::Invalid {
            key: "route_annotation",
            message: format!("'{route_annotation}' is not an annotation key"),
            env: None,
        });
    }
    let (token_s, _) = pick(env, env::ADMIN_TOKEN_FILE, file.token_file);
    let admin_token_file = token_s.filter(|s| !s.trim().is_empty()).map(PathBuf::from);

    Ok(Admin {
        enable_shutdown,
        annotations_file,
        route_annotation,
        token_file: admin_token_file,
    })
}

fn upstream(file: &file::UpstreamFile) -> Result<Upstream, ConfigError> {
    let connect_timeout = millis("upstream.connect_timeout_ms", file.connect_timeout_ms, 3000)?;
    let namesrv_timeout = millis("upstream.namesrv_timeout_ms", file.namesrv_timeout_ms, 3000)?;

    let retire_idle = match file.retire_idle_seconds.unwrap_or(45) {
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

    Ok(Upstream {
        connect_timeout,
        namesrv_timeout,
        retire_idle,
    })
}

fn clusters(
    clusters: file::ClustersFile,
    target: RoleTargets,
    env: &dyn Env,
) -> Result<(ClusterConfig, ClusterConfig), ConfigError> {
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
    for role in Role::ALL {
        let chosen = target.get(role);
        let (cluster, key, var) = match chosen {
            Target::Old => (&old, "clusters.old.namesrv", env::OLD_NAMESRV),
            Target::New => (&new, "clusters.new.namesrv", env::NEW_NAMESRV),
        };
        if cluster.namesrv.is_empty() {
            return Err(ConfigError::Invalid {
                key,
                message: format!(
                    "the initial target of the {role}s is '{chosen}' but it has no name servers; set {key} or {var}"
                ),
                env: None,
            });
        }
    }

    Ok((old, new))
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

fn limits(file: &file::LimitsFile, frame_max_bytes: usize) -> Result<Limits, ConfigError> {
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
        namesrv_frame_max_bytes: match file.namesrv_frame_max_bytes {
            None => d.namesrv_frame_max_bytes,
            Some(n @ 1024..=16_777_216) => n as usize,
            Some(n) => {
                return Err(ConfigError::Invalid {
                    key: "limits.namesrv_frame_max_bytes",
                    message: format!("{n} is outside 1024..=16777216"),
                    env: None,
                })
            }
        },
        partial_frame: match file.partial_frame_seconds {
            None => d.partial_frame,
            Some(n @ 1..=3600) => Duration::from_secs(n),
            Some(n) => {
                return Err(ConfigError::Invalid {
                    key: "limits.partial_frame_seconds",
                    message: format!("{n} is outside 1..=3600 seconds"),
                    env: None,
                })
            }
        },
        partial_frame_budget_bytes: match file.partial_frame_budget_bytes {
            None => d.partial_frame_budget_bytes.max(frame_max_bytes),
            Some(n) if n >= frame_max_bytes as u64 && n <= 1 << 34 => n as usize,
            Some(n) => {
                return Err(ConfigError::Invalid {
                    key: "limits.partial_frame_budget_bytes",
                    message: format!(
                        "{n} must be at least frame_max_bytes ({frame_max_bytes}: one largest \
                         frame must fit) and at most 17179869184"
                    ),
                    env: None,
                })
            }
        },
    })
}

fn gates(file: &file::GatesFile, env: &dyn Env) -> Result<GatesConfig, ConfigError> {
    let d = GatesConfig::default();
    let enabled = match env.var(env::GATES) {
        None => file.enabled.unwrap_or(d.enabled),
        Some(v) => match v.trim() {
            "true" => true,
            "false" => false,
            other => {
                return Err(ConfigError::Invalid {
                    key: "gates.enabled",
                    message: format!("'{other}' is not true or false"),
                    env: Some(env::GATES),
                })
            }
        },
    };
    let range = |key: &'static str, value: Option<u64>, lo: u64, hi: u64, unit: &str| match value {
        Some(n) if !(lo..=hi).contains(&n) => Err(ConfigError::Invalid {
            key,
            message: format!("{n} is outside {lo}..={hi} {unit}"),
            env: None,
        }),
        other => Ok(other),
    };
    let read_timeout = range(
        "gates.read_timeout_ms",
        file.read_timeout_ms,
        100,
        60_000,
        "ms",
    )?
    .map_or(d.read_timeout, Duration::from_millis);
    let quiet = range(
        "gates.quiet_seconds",
        file.quiet_seconds,
        0,
        86_400,
        "seconds",
    )?
    .map_or(d.quiet, Duration::from_secs);
    let retry = range(
        "gates.retry_seconds",
        file.retry_seconds,
        1,
        3_600,
        "seconds",
    )?
    .map_or(d.retry, Duration::from_secs);
    let backlog_sample = match range(
        "gates.backlog_sample_seconds",
        file.backlog_sample_seconds,
        0,
        86_400,
        "seconds",
    )? {
        None => d.backlog_sample,
        Some(0) => None,
        Some(n) => Some(Duration::from_secs(n.max(5))),
    };
    Ok(GatesConfig {
        enabled,
        read_timeout,
        quiet,
        retry,
        backlog_sample,
    })
}

/// Dotted keys of one cluster's section, for error messages.
struct ClusterKeys {
    namespace: &'static str,
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
                namespace: "clusters.old.namespace",
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
                namespace: "clusters.new.namespace",
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
    let ns_env_var = match target {
        Target::Old => env::OLD_NAMESPACE,
        Target::New => env::NEW_NAMESPACE,
    };
    let (namespace_value, namespace_env) = match env.var(ns_env_var) {
        Some(v) => (Some(v), Some(ns_env_var)),
        None => (file.namespace, None),
    };
    let namespace = match namespace_value.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            crate::protocol::namespace::Namespace::parse(&v).map_err(|e| ConfigError::Invalid {
                key: keys.namespace,
                message: format!("'{v}': {e}"),
                env: namespace_env,
            })?,
        ),
    };
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
        namespace,
    })
}
