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
/// Downward API annotations file.
pub const ANNOTATIONS_FILE: &str = "RMQ_SIDECAR_ANNOTATIONS_FILE";
/// Enables `POST /shutdown` ("true"/"false").
pub const ENABLE_SHUTDOWN: &str = "RMQ_SIDECAR_ENABLE_SHUTDOWN";
/// Drain seconds after SIGTERM.
pub const DRAIN_SECONDS: &str = "RMQ_SIDECAR_DRAIN_SECONDS";
/// Log filter.
pub const LOG: &str = "RMQ_SIDECAR_LOG";
/// Log format ("text" or "json").
pub const LOG_FORMAT: &str = "RMQ_SIDECAR_LOG_FORMAT";

/// Credential variables of one cluster: (value, file) pairs.
pub struct CredentialVars {
    /// AccessKey value / file.
    pub access_key: (&'static str, &'static str),
    /// SecretKey value / file.
    pub secret_key: (&'static str, &'static str),
    /// SecurityToken value / file.
    pub security_token: (&'static str, &'static str),
}

/// The old cluster's credential variables.
pub const OLD_CREDENTIALS: CredentialVars = CredentialVars {
    access_key: (
        "RMQ_SIDECAR_OLD_ACCESS_KEY",
        "RMQ_SIDECAR_OLD_ACCESS_KEY_FILE",
    ),
    secret_key: (
        "RMQ_SIDECAR_OLD_SECRET_KEY",
        "RMQ_SIDECAR_OLD_SECRET_KEY_FILE",
    ),
    security_token: (
        "RMQ_SIDECAR_OLD_SECURITY_TOKEN",
        "RMQ_SIDECAR_OLD_SECURITY_TOKEN_FILE",
    ),
};

/// The new cluster's credential variables.
pub const NEW_CREDENTIALS: CredentialVars = CredentialVars {
    access_key: (
        "RMQ_SIDECAR_NEW_ACCESS_KEY",
        "RMQ_SIDECAR_NEW_ACCESS_KEY_FILE",
    ),
    secret_key: (
        "RMQ_SIDECAR_NEW_SECRET_KEY",
        "RMQ_SIDECAR_NEW_SECRET_KEY_FILE",
    ),
    security_token: (
        "RMQ_SIDECAR_NEW_SECURITY_TOKEN",
        "RMQ_SIDECAR_NEW_SECURITY_TOKEN_FILE",
    ),
};

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
