//! `injector.toml`: the injector's settings (webhook, stage lookup, the sidecar template),
//! read once at start and validated into [`InjectorConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use rmq_common::RoleTargets;

/// A configuration error naming the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum InjectorConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a key this version does not know.
    #[error("injector config: {0}")]
    Parse(String),
    /// One key has a bad value.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key in injector.toml.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Where the sidecar runs in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarMode {
    /// `initContainers[0]` with `restartPolicy: Always` (Kubernetes >= 1.29): started and
    /// ready before the app, stopped after it.
    Native,
    /// `containers[0]` with a postStart hook running `rmq-sidecar wait-ready`, which holds
    /// the app's start until the sidecar is ready (older clusters).
    PostStart,
}

impl SidecarMode {
    /// The name used in config and in the status annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarMode::Native => "native",
            SidecarMode::PostStart => "post-start",
        }
    }
}

/// What the webhook does with a pod it cannot inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uninjectable {
    /// Admit the pod unchanged, labelled with the reason (the app then talks to whatever
    /// name server its own config names).
    Admit,
    /// Refuse the pod with the reason (the workload's controller retries).
    Deny,
}

/// The validated injector configuration.
#[derive(Debug, Clone)]
pub struct InjectorConfig {
    /// HTTPS listener for `POST /inject`.
    pub listen: SocketAddr,
    /// Plain HTTP listener for `/live`, `/ready`, `/metrics`.
    pub health_listen: SocketAddr,
    /// Most connections open at once on each of the two listeners.
    pub max_connections: usize,
    /// PEM certificate chain served by the webhook.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// Policy for pods that cannot be injected.
    pub uninjectable: Uninjectable,
    /// Where workload stages are looked up.
    pub stages: StageLookup,
    /// What is injected.
    pub sidecar: SidecarTemplate,
}

/// The stage ConfigMap lookup.
#[derive(Debug, Clone)]
pub struct StageLookup {
    /// ConfigMap name in the pod's namespace; `None` = no lookup.
    pub configmap: Option<String>,
    /// API base URL; `None` = in-cluster.
    pub kube_api: Option<String>,
    /// CA bundle for an https API; `None` = the service account's `ca.crt`.
    pub ca_file: Option<PathBuf>,
    /// Bearer token file; `None` = the service account's token (none over http).
    pub token_file: Option<PathBuf>,
    /// Deadline for one lookup.
    pub timeout: Duration,
}

/// The injected sidecar.
#[derive(Debug, Clone)]
pub struct SidecarTemplate {
    /// Container image.
    pub image: String,
    /// `imagePullPolicy`.
    pub image_pull_policy: String,
    /// Native sidecar or postStart hook.
    pub mode: SidecarMode,
    /// Old cluster name servers.
    pub old_namesrv: String,
    /// New cluster name servers.
    pub new_namesrv: String,
    /// Old cluster namespace (TDMQ 4.x), if it has one.
    pub old_namespace: Option<String>,
    /// New cluster namespace (TDMQ 4.x: `rocketmq-xxx|namespace`), if it has one.
    pub new_namespace: Option<String>,
    /// Route of a pod whose workload has no stage (`old`, `new`, or per role).
    pub default_target: RoleTargets,
    /// Secret with the old cluster's `access-key` / `secret-key`.
    pub old_credentials_secret: Option<String>,
    /// Secret with the new cluster's `access-key` / `secret-key`.
    pub new_credentials_secret: Option<String>,
    /// Also set `-Drocketmq.namesrv.addr` in `JAVA_TOOL_OPTIONS`.
    pub java_tool_options: bool,
    /// Resource requests and limits (Kubernetes quantities; `None` = not set).
    pub cpu_request: Option<String>,
    /// Memory request.
    pub memory_request: Option<String>,
    /// CPU limit.
    pub cpu_limit: Option<String>,
    /// Memory limit.
    pub memory_limit: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// Longest drain after SIGTERM.
    pub drain_seconds: u64,
}

// === serde mirror ===

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct InjectorFile {
    webhook: WebhookFile,
    stages: StagesFile,
    sidecar: SidecarFile,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebhookFile {
    listen: String,
    health_listen: String,
    max_connections: u64,
    cert_file: String,
    key_file: String,
    uninjectable: String,
}

impl Default for WebhookFile {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".into(),
            health_listen: "0.0.0.0:9880".into(),
            max_connections: 256,
            cert_file: "/etc/rmq-sidecar-injector/tls/tls.crt".into(),
            key_file: "/etc/rmq-sidecar-injector/tls/tls.key".into(),
            uninjectable: "admit".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StagesFile {
    configmap: String,
    kube_api: String,
    ca_file: String,
    token_file: String,
    timeout_ms: u64,
}

impl Default for StagesFile {
    fn default() -> Self {
        Self {
            configmap: STAGES_CONFIGMAP.into(),
            kube_api: String::new(),
            ca_file: String::new(),
            token_file: String::new(),
            timeout_ms: 2000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SidecarFile {
    image: String,
    image_pull_policy: String,
    mode: String,
    old_namesrv: String,
    new_namesrv: String,
    old_namespace: String,
    new_namespace: String,
    default_target: String,
    old_credentials_secret: String,
    new_credentials_secret: String,
    java_tool_options: bool,
    cpu_request: String,
    memory_request: String,
    cpu_limit: String,
    memory_limit: String,
    log_format: String,
    drain_seconds: u64,
}

impl Default for SidecarFile {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/rocketmq-sidecar/rmq-sidecar:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: "IfNotPresent".into(),
            mode: "native".into(),
            old_namesrv: String::new(),
            new_namesrv: String::new(),
            old_namespace: String::new(),
            new_namespace: String::new(),
            default_target: "old".into(),
            old_credentials_secret: String::new(),
            new_credentials_secret: String::new(),
            java_tool_options: false,
            cpu_request: "20m".into(),
            memory_request: "32Mi".into(),
            cpu_limit: String::new(),
            memory_limit: "128Mi".into(),
            log_format: "json".into(),
            drain_seconds: 30,
        }
    }
}

/// Default name of the stage ConfigMap (one per application namespace).
pub const STAGES_CONFIGMAP: &str = rmq_common::contract::STAGES_CONFIGMAP;

// === impl InjectorConfig ===

impl InjectorConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, InjectorConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| InjectorConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Validates the text of an injector.toml.
    pub fn parse(text: &str) -> Result<Self, InjectorConfigError> {
        let file: InjectorFile =
            toml::from_str(text).map_err(|e| InjectorConfigError::Parse(e.to_string()))?;
        let w = file.webhook;
        let s = file.stages;
        let c = file.sidecar;
        Ok(Self {
            listen: socket("webhook.listen", &w.listen)?,
            health_listen: socket("webhook.health_listen", &w.health_listen)?,
            max_connections: match w.max_connections {
                n @ 1..=100_000 => n as usize,
                n => {
                    return Err(invalid(
                        "webhook.max_connections",
                        format!("{n} is outside 1..=100000"),
                    ))
                }
            },
            cert_file: path_key("webhook.cert_file", &w.cert_file)?,
            key_file: path_key("webhook.key_file", &w.key_file)?,
            uninjectable: match w.uninjectable.as_str() {
                "admit" => Uninjectable::Admit,
                "deny" => Uninjectable::Deny,
                other => {
                    return Err(invalid(
                        "webhook.uninjectable",
                        format!("'{other}' is not a policy; use \"admit\" or \"deny\""),
                    ))
                }
            },
            stages: StageLookup {
                configmap: non_empty(&s.configmap)
                    .map(|name| dns_name("stages.configmap", name))
                    .transpose()?,
                kube_api: non_empty(&s.kube_api)
                    .map(|url| {
                        if url.starts_with("https://") || url.starts_with("http://") {
                            Ok(url.trim_end_matches('/').to_owned())
                        } else {
                            Err(invalid(
                                "stages.kube_api",
                                format!("'{url}' is not an http(s):// URL; leave it empty in a cluster"),
                            ))
                        }
                    })
                    .transpose()?,
                ca_file: non_empty(&s.ca_file).map(PathBuf::from),
                token_file: non_empty(&s.token_file).map(PathBuf::from),
                timeout: match s.timeout_ms {
                    100..=9000 => Duration::from_millis(s.timeout_ms),
                    other => {
                        return Err(invalid(
                            "stages.timeout_ms",
                            format!("{other} is out of range 100-9000 (the API server waits at most 10 s for the webhook)"),
                        ))
                    }
                },
            },
            sidecar: SidecarTemplate {
                image: match c.image.trim() {
                    "" => return Err(invalid("sidecar.image", "must name the sidecar image".into())),
                    image if image.contains(char::is_whitespace) => {
                        return Err(invalid("sidecar.image", format!("'{image}' contains whitespace")))
                    }
                    image => image.to_owned(),
                },
                image_pull_policy: match c.image_pull_policy.as_str() {
                    p @ ("Always" | "IfNotPresent" | "Never") => p.to_owned(),
                    other => {
                        return Err(invalid(
                            "sidecar.image_pull_policy",
                            format!("'{other}' is not Always, IfNotPresent or Never"),
                        ))
                    }
                },
                mode: match c.mode.as_str() {
                    "native" => SidecarMode::Native,
                    "post-start" => SidecarMode::PostStart,
                    other => {
                        return Err(invalid(
                            "sidecar.mode",
                            format!("'{other}' is not a mode; use \"native\" (Kubernetes >= 1.29) or \"post-start\""),
                        ))
                    }
                },
                old_namesrv: namesrv_list("sidecar.old_namesrv", &c.old_namesrv)?,
                new_namesrv: namesrv_list("sidecar.new_namesrv", &c.new_namesrv)?,
                old_namespace: namespace("sidecar.old_namespace", &c.old_namespace)?,
                new_namespace: namespace("sidecar.new_namespace", &c.new_namespace)?,
                default_target: RoleTargets::parse(&c.default_target)
                    .map_err(|e| invalid("sidecar.default_target", e))?,
                old_credentials_secret: non_empty(&c.old_credentials_secret)
                    .map(|n| dns_name("sidecar.old_credentials_secret", n))
                    .transpose()?,
                new_credentials_secret: non_empty(&c.new_credentials_secret)
                    .map(|n| dns_name("sidecar.new_credentials_secret", n))
                    .transpose()?,
                java_tool_options: c.java_tool_options,
                cpu_request: quantity("sidecar.cpu_request", &c.cpu_request)?,
                memory_request: quantity("sidecar.memory_request", &c.memory_request)?,
                cpu_limit: quantity("sidecar.cpu_limit", &c.cpu_limit)?,
                memory_limit: quantity("sidecar.memory_limit", &c.memory_limit)?,
                log_format: match c.log_format.as_str() {
                    f @ ("text" | "json") => f.to_owned(),
                    other => {
                        return Err(invalid(
                            "sidecar.log_format",
                            format!("'{other}' is not \"text\" or \"json\""),
                        ))
                    }
                },
                drain_seconds: match c.drain_seconds {
                    d @ 0..=3600 => d,
                    other => {
                        return Err(invalid(
                            "sidecar.drain_seconds",
                            format!("{other} is out of range 0-3600"),
                        ))
                    }
                },
            },
        })
    }
}

fn invalid(key: &'static str, message: String) -> InjectorConfigError {
    InjectorConfigError::Invalid { key, message }
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn socket(key: &'static str, value: &str) -> Result<SocketAddr, InjectorConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, format!("'{value}' is not an ip:port address")))
}

fn path_key(key: &'static str, value: &str) -> Result<PathBuf, InjectorConfigError> {
    non_empty(value)
        .map(PathBuf::from)
        .ok_or_else(|| invalid(key, "must name a file".into()))
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn dns_name(key: &'static str, name: &str) -> Result<String, InjectorConfigError> {
    let ok = name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(name.to_owned())
    } else {
        Err(invalid(
            key,
            format!(
                "'{name}' is not a Kubernetes object name (lower-case letters, digits, '-', '.')"
            ),
        ))
    }
}

/// `host:port;host:port`, as the sidecar's `RMQ_SIDECAR_*_NAMESRV` takes it.
fn namesrv_list(key: &'static str, value: &str) -> Result<String, InjectorConfigError> {
    match rmq_common::contract::parse_namesrv_list(value) {
        Ok(list) if list.is_empty() => Err(invalid(
            key,
            "required: the cluster's name servers, \"host:port;host:port\"".into(),
        )),
        Ok(list) => Ok(list.join(";")),
        Err(e) => Err(invalid(key, e)),
    }
}

/// A cluster namespace (TDMQ 4.x); empty = none.
fn namespace(key: &'static str, value: &str) -> Result<Option<String>, InjectorConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    rmq_common::contract::check_namespace(value).map_err(|e| invalid(key, e))?;
    Ok(Some(value.to_owned()))
}

/// A Kubernetes resource quantity such as `20m`, `0.5`, `128Mi`, `1G`; empty = unset.
fn quantity(key: &'static str, value: &str) -> Result<Option<String>, InjectorConfigError> {
    let Some(v) = non_empty(value) else {
        return Ok(None);
    };
    let digits_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(digits_end);
    let number_ok = !number.is_empty() && number.parse::<f64>().is_ok();
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    );
    if number_ok && suffix_ok {
        Ok(Some(v.to_owned()))
    } else {
        Err(invalid(
            key,
            format!("'{v}' is not a Kubernetes quantity (e.g. \"20m\", \"128Mi\")"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[sidecar]\nold_namesrv = \"a:9876\"\nnew_namesrv = \"b:9876;c:9876\"\n";

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = InjectorConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.health_listen.to_string(), "0.0.0.0:9880");
        assert_eq!(c.uninjectable, Uninjectable::Admit);
        assert_eq!(c.stages.configmap.as_deref(), Some(STAGES_CONFIGMAP));
        assert_eq!(c.sidecar.mode, SidecarMode::Native);
        assert_eq!(c.sidecar.new_namesrv, "b:9876;c:9876");
        assert_eq!(c.sidecar.cpu_limit, None);
        assert_eq!(c.sidecar.memory_limit.as_deref(), Some("128Mi"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[sidecar]\nnew_namesrv = \"b:1\"\n", "sidecar.old_namesrv"),
            (&format!("{MINIMAL}mode = \"sidecar\"\n"), "sidecar.mode"),
            (
                &format!("{MINIMAL}memory_limit = \"lots\"\n"),
                "sidecar.memory_limit",
            ),
            (
                &format!("{MINIMAL}old_credentials_secret = \"My_Secret\"\n"),
                "sidecar.old_credentials_secret",
            ),
            (
                &format!("[webhook]\nuninjectable = \"maybe\"\n{MINIMAL}"),
                "webhook.uninjectable",
            ),
            (
                &format!("[stages]\ntimeout_ms = 20000\n{MINIMAL}"),
                "stages.timeout_ms",
            ),
            (
                &format!("[stages]\nkube_api = \"api:6443\"\n{MINIMAL}"),
                "stages.kube_api",
            ),
        ];
        for (text, key) in cases {
            let err = InjectorConfig::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(key), "{text:?} gave {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = InjectorConfig::parse(&format!("{MINIMAL}imagee = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("imagee"), "{err}");
    }
}
