//! Environment overrides. The variable names are a public interface: the injector, the
//! docs and users' manifests depend on them.

use std::collections::HashMap;

/// Where variables come from: the process, or a map in tests.
pub trait Env {
    /// The value of `key`, if set (an empty value counts as unset).
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

/// Old cluster name servers.
pub const OLD_NAMESRV: &str = "RMQ_SIDECAR_OLD_NAMESRV";
/// New cluster name servers.
pub const NEW_NAMESRV: &str = "RMQ_SIDECAR_NEW_NAMESRV";
/// Initial target.
pub const TARGET: &str = "RMQ_SIDECAR_TARGET";
/// Name-server listen address.
pub const LISTEN: &str = "RMQ_SIDECAR_LISTEN";
/// Admin listen address.
pub const ADMIN: &str = "RMQ_SIDECAR_ADMIN";
/// Health/metrics listen address.
pub const METRICS: &str = "RMQ_SIDECAR_METRICS";
/// Loopback IP or CIDR for broker listeners.
pub const BROKER_BIND: &str = "RMQ_SIDECAR_BROKER_BIND";
/// State directory.
pub const STATE_DIR: &str = "RMQ_SIDECAR_STATE_DIR";
/// Admin token file.
pub const ADMIN_TOKEN_FILE: &str = "RMQ_SIDECAR_ADMIN_TOKEN_FILE";
/// Drain seconds after SIGTERM.
pub const DRAIN_SECONDS: &str = "RMQ_SIDECAR_DRAIN_SECONDS";
/// Log filter.
pub const LOG: &str = "RMQ_SIDECAR_LOG";
/// Log format ("text" or "json").
pub const LOG_FORMAT: &str = "RMQ_SIDECAR_LOG_FORMAT";

// === impl ProcessEnv ===

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.trim().is_empty()).cloned()
    }
}
