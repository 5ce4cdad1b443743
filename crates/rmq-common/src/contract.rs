//! The pod contract: every name and number the injector writes into a pod and the sidecar
//! reads from it. Changing one is a breaking change for running fleets (old sidecars meet
//! new injectors during an upgrade), so both binaries take them from here.

use crate::RoleTargets;
#[cfg(test)]
use crate::Target;

// --- Kubernetes objects

/// Name of the injected container.
pub const SIDECAR_NAME: &str = "rmq-sidecar";
/// Path of the sidecar binary in its image (`deploy/Dockerfile`, target `sidecar`).
pub const SIDECAR_BINARY: &str = "/rmq-sidecar";
/// Namespace/pod label that opts in (`enabled`) or a pod out (`disabled`).
pub const INJECT_LABEL: &str = "rocketmq-sidecar/inject";
/// Label on every injected pod (the PodMonitor selects it).
pub const INJECTED_LABEL: &str = "rocketmq-sidecar/injected";
/// Label on a pod admitted without the sidecar; the value says why.
pub const SKIPPED_LABEL: &str = "rocketmq-sidecar/inject-skipped";
/// Annotation with the full reason a pod was admitted without the sidecar.
pub const SKIPPED_DETAIL_ANNOTATION: &str = "rocketmq-sidecar/inject-skipped-detail";
/// Annotation describing what was injected (JSON).
pub const STATUS_ANNOTATION: &str = "rocketmq-sidecar/status";
/// Annotation the sidecar follows for its route (the default of `route_annotation`).
pub const ROUTE_ANNOTATION: &str = "rocketmq-sidecar/route";
/// Pod annotation that, set to `"true"`, applies the route annotation even where the
/// migration gates refuse it (logged at warn and counted).
pub const ROUTE_FORCE_ANNOTATION: &str = "rocketmq-sidecar/route-force";
/// Pod annotation that overrides `java_tool_options` for one workload ("true"/"false").
pub const JAVA_TOOL_OPTIONS_ANNOTATION: &str = "rocketmq-sidecar/java-tool-options";
/// ConfigMap (in each app namespace) holding workload stages, keys `<kind>.<name>`.
pub const STAGES_CONFIGMAP: &str = "rocketmq-sidecar-stages";

// --- Ports and addresses inside the pod

/// The sidecar's name-server port (the app's `NAMESRV_ADDR`).
pub const NAMESRV_PORT: u16 = 9876;
/// The sidecar's admin port (loopback: mutations live here).
pub const ADMIN_PORT: u16 = 9878;
/// The sidecar's health port (probes, Prometheus, `GET /route`).
pub const HEALTH_PORT: u16 = 9879;
/// Every port the sidecar listens on in the pod's network namespace.
pub const SIDECAR_PORTS: [u16; 3] = [NAMESRV_PORT, ADMIN_PORT, HEALTH_PORT];
/// The app's name server: the sidecar's name-server listener.
pub const NAMESRV_ADDR: &str = "127.0.0.1:9876";
/// Default name-server listen address.
pub const DEFAULT_NAMESRV_LISTEN: &str = "127.0.0.1:9876";
/// Default admin listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9878";
/// Default health listen address (reachable by the kubelet and Prometheus).
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:9879";

// --- Files inside the pod

/// Mount point of the state volume (`RMQ_SIDECAR_STATE_DIR`).
pub const STATE_DIR: &str = "/var/run/rmq-sidecar";
/// Mount point of the pod-info downward API volume.
pub const PODINFO_DIR: &str = "/etc/rmq-sidecar/podinfo";
/// Mount point of the credential Secrets (one sub-directory per cluster).
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/rocketmq-sidecar";
/// The persisted route, inside the state dir.
pub const ROUTE_FILE: &str = "route.json";
/// The persisted broker listener map, inside the state dir.
pub const LISTENERS_FILE: &str = "listeners.json";
/// File name, inside the state dir, of the gates' last evaluation.
pub const GATES_FILE: &str = "gates.json";
/// File name, inside the state dir, of the topics and groups the pod was seen using.
pub const USAGE_FILE: &str = "usage.json";

/// Environment variables the sidecar reads. The names are a public interface: the
/// injector, the docs and users' manifests set them.
pub mod env {
    /// Old cluster name servers.
    pub const OLD_NAMESRV: &str = "RMQ_SIDECAR_OLD_NAMESRV";
    /// New cluster name servers.
    pub const NEW_NAMESRV: &str = "RMQ_SIDECAR_NEW_NAMESRV";
    /// The old cluster's namespace (TDMQ 4.x), empty = none.
    pub const OLD_NAMESPACE: &str = "RMQ_SIDECAR_OLD_NAMESPACE";
    /// The new cluster's namespace (TDMQ 4.x: `rocketmq-xxx|namespace`), empty = none.
    pub const NEW_NAMESPACE: &str = "RMQ_SIDECAR_NEW_NAMESPACE";
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
    /// Log filter (the injector reads it too).
    pub const LOG: &str = "RMQ_SIDECAR_LOG";
    /// Log format, "text" or "json" (the injector reads it too).
    pub const LOG_FORMAT: &str = "RMQ_SIDECAR_LOG_FORMAT";
    /// `true` or `false`: whether the migration gates check switches (`gates.enabled`).
    pub const GATES: &str = "RMQ_SIDECAR_GATES";

    /// Credential variables of one cluster: (value, file) pairs.
    #[derive(Debug, Clone, Copy)]
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
}

// --- Values

/// Parses RocketMQ's `host:port;host:port` name-server list (blank items skipped).
pub fn parse_namesrv_list(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || format!("'{item}' is not host:port (list form: host:port;host:port)");
        let Some((host, port)) = item.rsplit_once(':') else {
            return Err(bad());
        };
        if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        out.push(item.to_owned());
    }
    Ok(out)
}

/// Where a route annotation (or stage, or `--route`) value sends each role: `old`, `new`,
/// or `producer=new,consumer=old`.
pub fn parse_route_value(value: &str) -> Result<RoleTargets, String> {
    RoleTargets::parse(value)
}

/// The raw value of `key` in a downward API annotations file (`key="value"` lines, values
/// quoted and escaped like Go's `%q`).
pub fn find_annotation(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| unquote(v.trim()))
    })
}

fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Checks a cluster namespace (TDMQ 4.x: `rocketmq-xxx|namespace`): the characters the servers
/// accept in resource names other than the `%` separator (letters, digits, `-`, `_`, `|`),
/// at most 64 of them. The error says what to fix.
pub fn check_namespace(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(
            "the namespace is empty; leave it out for a cluster without namespaces".to_owned(),
        );
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '|')))
    {
        return Err(format!(
            "'{c}' is not allowed in a namespace (letters, digits, '-', '_' and '|' are)"
        ));
    }
    if value.len() > 64 {
        return Err(format!(
            "the namespace is {} characters long; the most is 64",
            value.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_downward_api_lines() {
        let text = "kubectl.kubernetes.io/restartedAt=\"2026-11-25T10:00:00Z\"\nrocketmq-sidecar/route=\"new\"\nnote=\"a \\\"quoted\\\" = sign\"\n";
        assert_eq!(
            find_annotation(text, ROUTE_ANNOTATION).as_deref(),
            Some("new")
        );
        assert_eq!(
            find_annotation(text, "note").as_deref(),
            Some("a \"quoted\" = sign")
        );
        assert_eq!(find_annotation(text, "missing"), None);
        assert_eq!(
            parse_route_value(" NEW "),
            Ok(RoleTargets::both(Target::New))
        );
        assert_eq!(
            parse_route_value("producer=new,consumer=old").map(|r| r.producer),
            Ok(Target::New)
        );
        assert!(parse_route_value("producer=new").is_err());
    }

    #[test]
    fn namesrv_lists() {
        assert_eq!(
            parse_namesrv_list(" a:1 ; b:2;").unwrap(),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
        for bad in ["a", ":1", "a:0", "a:x", "http://a:1"] {
            assert!(parse_namesrv_list(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(
            format!("{NAMESRV_ADDR}"),
            format!("127.0.0.1:{NAMESRV_PORT}"),
            "the app's name server is the sidecar's name-server port"
        );
    }
}
