//! The injection itself, pure: a pod (or a pod template: anything with `metadata` and a
//! pod `spec`) in, the same object with the sidecar added out.
//!
//! Every step checks before it adds, so injecting an injected pod changes nothing, and a
//! pod that another webhook changed after us (`reinvocationPolicy: IfNeeded`) only gets
//! what is missing, such as `NAMESRV_ADDR` on a container that webhook added.

use serde_json::{json, Map, Value};

use crate::config::{SidecarMode, SidecarTemplate};
use rmq_common::contract::env;

use rmq_common::contract::{CREDENTIALS_DIR, PODINFO_DIR, STATE_DIR};
pub use rmq_common::contract::{
    HEALTH_PORT, INJECTED_LABEL, INJECT_LABEL, JAVA_TOOL_OPTIONS_ANNOTATION, NAMESRV_ADDR,
    ROUTE_ANNOTATION, SIDECAR_BINARY as BINARY, SIDECAR_NAME, SIDECAR_PORTS,
    SKIPPED_DETAIL_ANNOTATION, SKIPPED_LABEL, STATUS_ANNOTATION,
};

/// Why a pod on the host network gets no sidecar (label value `host-network`).
pub const HOST_NETWORK_DETAIL: &str =
    "the pod uses the host network, where the sidecar's ports would clash on the node";

const STATE_VOLUME: &str = "rmq-sidecar-state";
const PODINFO_VOLUME: &str = "rmq-sidecar-podinfo";
const JAVA_NAMESRV_PROPERTY: &str = "-Drocketmq.namesrv.addr=";

/// What the pod is, before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// No sidecar yet: inject.
    Inject,
    /// The sidecar is there (by us, offline or a previous invocation): complete what is
    /// missing, change nothing else.
    AlreadyInjected,
    /// Labelled `rocketmq-sidecar/inject: disabled`.
    OptedOut,
    /// `hostNetwork: true`: the sidecar's ports would clash on the node.
    HostNetwork,
}

/// Why a pod cannot be injected; the webhook's `uninjectable` policy decides what follows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    /// Short reason, a valid label value (`invalid-pod`, `port-conflict`, ...).
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub detail: String,
}

/// What [`inject`] did, for the status annotation, logs and the API server's warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injection {
    /// Things the user should know (shown by kubectl as warnings).
    pub warnings: Vec<String>,
}

/// What goes into the pod besides the template.
#[derive(Debug, Clone, Default)]
pub struct PodInputs<'a> {
    /// The workload's stage key (`deployment.orders`), for the status annotation.
    pub workload: Option<&'a str>,
    /// The workload's stage (`old`/`new`); becomes the pod's route annotation.
    pub stage: Option<&'a str>,
}

/// Looks at a pod without changing it.
pub fn assess(pod: &Value) -> Result<Assessment, Refusal> {
    let Some(spec) = pod.get("spec").and_then(Value::as_object) else {
        return Err(invalid("the object has no pod spec"));
    };
    let containers = match spec.get("containers") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => return Err(invalid("the pod spec has no containers")),
    };
    if let Some(init) = spec.get("initContainers") {
        if !init.is_array() {
            return Err(invalid("spec.initContainers is not a list"));
        }
    }
    if label(pod, INJECT_LABEL) == Some("disabled") {
        return Ok(Assessment::OptedOut);
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Assessment::HostNetwork);
    }
    let init = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let all = || containers.iter().chain(init);
    if all().any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME)) {
        return Ok(Assessment::AlreadyInjected);
    }
    for c in all() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
        let ports = c.get("ports").and_then(Value::as_array);
        for port in ports.into_iter().flatten() {
            let n = port.get("containerPort").and_then(Value::as_u64);
            if let Some(p) = n.filter(|p| SIDECAR_PORTS.iter().any(|s| u64::from(*s) == *p)) {
                return Err(Refusal {
                    reason: "port-conflict",
                    detail: format!(
                        "container {name} declares port {p}, which the sidecar needs ({}); \
                         move the app off it or opt the pod out with {INJECT_LABEL}=disabled",
                        SIDECAR_PORTS.map(|p| p.to_string()).join(", ")
                    ),
                });
            }
        }
    }
    Ok(Assessment::Inject)
}

/// Injects the sidecar, or completes an injection; idempotent.
///
/// Call only for [`Assessment::Inject`] or [`Assessment::AlreadyInjected`].
pub fn inject(pod: &mut Value, t: &SidecarTemplate, inputs: &PodInputs<'_>) -> Injection {
    let mut report = Injection::default();
    let fresh = assess(pod) == Ok(Assessment::Inject);

    if fresh {
        let mut container = sidecar_container(t);
        let batch = inputs
            .workload
            .is_some_and(|w| w.starts_with("job.") || w.starts_with("cronjob."));
        if batch && t.mode == SidecarMode::PostStart {
            // A regular container keeps a Job's pod running after the app is done; the
            // job ends it with POST /shutdown on the admin port.
            if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
                env.push(json!({"name": env::ENABLE_SHUTDOWN, "value": "true"}));
            }
            report.warnings.push(
                "a Job's pod in post-start mode: the sidecar keeps running after the app exits; \
                 end the job with `curl -X POST http://127.0.0.1:9878/shutdown` (enabled for this pod) \
                 or use mode \"native\" (Kubernetes >= 1.29), where the sidecar stops on its own"
                    .to_owned(),
            );
        }
        let spec = object_at(pod, "spec");
        let list = match t.mode {
            SidecarMode::Native => "initContainers",
            SidecarMode::PostStart => "containers",
        };
        // First, so it runs before other init containers and (post-start) before the
        // app containers, which the kubelet starts in order.
        array_at_map(spec, list).insert(0, container);
        let volumes = array_at_map(spec, "volumes");
        for v in sidecar_volumes(t) {
            let name = v.get("name").cloned();
            if !volumes.iter().any(|x| x.get("name") == name.as_ref()) {
                volumes.push(v);
            }
        }
        let meta = object_at(pod, "metadata");
        object_at_map(meta, "labels").insert(INJECTED_LABEL.into(), json!("true"));
        let annotations = object_at_map(meta, "annotations");
        match (inputs.stage, annotations.get(ROUTE_ANNOTATION).and_then(Value::as_str)) {
            (Some(stage), None) => {
                annotations.insert(ROUTE_ANNOTATION.into(), json!(stage));
            }
            (Some(stage), Some(own)) if own != stage => report.warnings.push(format!(
                "the pod's own {ROUTE_ANNOTATION}={own} is kept although its workload's stage is {stage}"
            )),
            _ => {}
        }
        if !annotations.keys().any(|k| k.starts_with("prometheus.io/")) {
            annotations.insert("prometheus.io/scrape".into(), json!("true"));
            annotations.insert("prometheus.io/port".into(), json!(HEALTH_PORT.to_string()));
            annotations.insert("prometheus.io/path".into(), json!("/metrics"));
        }
        let status = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": t.mode.as_str(),
            "workload": inputs.workload,
            "stage": inputs.stage,
        });
        annotations.insert(STATUS_ANNOTATION.into(), json!(status.to_string()));
    }

    // App containers, on every invocation: a container another webhook added since our
    // first pass gets the name server too.
    let java_tool_options = match pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(JAVA_TOOL_OPTIONS_ANNOTATION))
        .and_then(Value::as_str)
    {
        None => t.java_tool_options,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            report.warnings.push(format!(
                "{JAVA_TOOL_OPTIONS_ANNOTATION}='{other}' is not \"true\" or \"false\"; \
                 the injector's default ({}) applies",
                t.java_tool_options
            ));
            t.java_tool_options
        }
    };
    let spec = object_at(pod, "spec");
    for c in array_at_map(spec, "containers").iter_mut() {
        let Some(obj) = c.as_object_mut() else {
            continue;
        };
        if obj.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME) {
            continue;
        }
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let env = array_at_map(obj, "env");
        set_env(env, "NAMESRV_ADDR", NAMESRV_ADDR, &name, &mut report);
        if java_tool_options {
            set_java_tool_options(env, &name, &mut report);
        }
    }
    report
}

/// Marks a pod that is admitted without the sidecar.
pub fn label_skipped(pod: &mut Value, reason: &str, detail: &str) {
    let meta = object_at(pod, "metadata");
    object_at_map(meta, "labels").insert(SKIPPED_LABEL.into(), json!(reason));
    object_at_map(meta, "annotations").insert(SKIPPED_DETAIL_ANNOTATION.into(), json!(detail));
}

/// Sets one annotation (creating `metadata.annotations` if needed).
pub fn set_annotation(pod: &mut Value, key: &str, value: &str) {
    let meta = object_at(pod, "metadata");
    object_at_map(meta, "annotations").insert(key.into(), json!(value));
}

/// The value of a label, if the object has it.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")?.get(key)?.as_str()
}

fn invalid(detail: &str) -> Refusal {
    Refusal {
        reason: "invalid-pod",
        detail: detail.to_owned(),
    }
}

fn sidecar_container(t: &SidecarTemplate) -> Value {
    let mut env = vec![
        json!({"name": env::OLD_NAMESRV, "value": t.old_namesrv}),
        json!({"name": env::NEW_NAMESRV, "value": t.new_namesrv}),
        json!({"name": env::TARGET, "value": t.default_target.to_string()}),
        json!({"name": env::STATE_DIR, "value": STATE_DIR}),
        json!({"name": env::ANNOTATIONS_FILE, "value": format!("{PODINFO_DIR}/annotations")}),
        json!({"name": env::METRICS, "value": format!("0.0.0.0:{HEALTH_PORT}")}),
        json!({"name": env::LOG_FORMAT, "value": t.log_format}),
        json!({"name": env::DRAIN_SECONDS, "value": t.drain_seconds.to_string()}),
    ];
    for (name, value) in [
        (env::OLD_NAMESPACE, &t.old_namespace),
        (env::NEW_NAMESPACE, &t.new_namespace),
    ] {
        if let Some(ns) = value {
            env.push(json!({"name": name, "value": ns}));
        }
    }
    let mut mounts = vec![
        json!({"name": STATE_VOLUME, "mountPath": STATE_DIR}),
        json!({"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": true}),
    ];
    for (cluster, secret) in credential_secrets(t) {
        let upper = cluster.to_ascii_uppercase();
        let dir = format!("{CREDENTIALS_DIR}/{cluster}");
        env.push(json!({"name": format!("RMQ_SIDECAR_{upper}_ACCESS_KEY_FILE"), "value": format!("{dir}/access-key")}));
        env.push(json!({"name": format!("RMQ_SIDECAR_{upper}_SECRET_KEY_FILE"), "value": format!("{dir}/secret-key")}));
        mounts.push(json!({"name": credentials_volume(cluster, secret).0, "mountPath": dir, "readOnly": true}));
    }
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": "rmq-health"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 1,
        })
    };
    let quantities = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = Map::new();
        if let Some(v) = cpu {
            m.insert("cpu".into(), json!(v));
        }
        if let Some(v) = memory {
            m.insert("memory".into(), json!(v));
        }
        m
    };
    let mut resources = Map::new();
    for (key, m) in [
        ("requests", quantities(&t.cpu_request, &t.memory_request)),
        ("limits", quantities(&t.cpu_limit, &t.memory_limit)),
    ] {
        if !m.is_empty() {
            resources.insert(key.into(), Value::Object(m));
        }
    }
    let mut c = json!({
        "name": SIDECAR_NAME,
        "image": t.image,
        "imagePullPolicy": t.image_pull_policy,
        "args": ["run"],
        "env": env,
        "ports": [{"name": "rmq-health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        // Held until the sidecar is ready (2 minutes at most), so the app never starts
        // without a name server; after that the kubelet restarts the sidecar.
        "startupProbe": probe("/ready", 1, 120),
        "livenessProbe": probe("/live", 10, 3),
        "readinessProbe": probe("/ready", 5, 3),
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    });
    match t.mode {
        SidecarMode::Native => {
            if let Some(obj) = c.as_object_mut() {
                obj.insert("restartPolicy".into(), json!("Always"));
            }
        }
        SidecarMode::PostStart => {
            if let Some(obj) = c.as_object_mut() {
                obj.remove("startupProbe");
                obj.insert(
                    "lifecycle".into(),
                    json!({"postStart": {"exec": {"command": [
                        BINARY, "wait-ready", "--url",
                        format!("http://127.0.0.1:{HEALTH_PORT}/ready"),
                        "--timeout-seconds", "120",
                    ]}}}),
                );
            }
        }
    }
    c
}

fn credential_secrets(t: &SidecarTemplate) -> impl Iterator<Item = (&'static str, &str)> {
    [
        ("old", t.old_credentials_secret.as_deref()),
        ("new", t.new_credentials_secret.as_deref()),
    ]
    .into_iter()
    .filter_map(|(c, s)| s.map(|s| (c, s)))
}

fn credentials_volume(cluster: &str, secret: &str) -> (String, Value) {
    let name = format!("rmq-sidecar-{cluster}-credentials");
    // Not optional: without its Secret the pod waits in ContainerCreating with an event
    // naming it, rather than starting a sidecar whose requests the cluster refuses.
    let volume = json!({"name": name, "secret": {"secretName": secret}});
    (name, volume)
}

fn sidecar_volumes(t: &SidecarTemplate) -> Vec<Value> {
    let mut v = vec![
        json!({"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}}),
        json!({"name": PODINFO_VOLUME, "downwardAPI": {"items": [
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
        ]}}),
    ];
    v.extend(credential_secrets(t).map(|(c, s)| credentials_volume(c, s).1));
    v
}

fn set_env(env: &mut Vec<Value>, key: &str, value: &str, container: &str, report: &mut Injection) {
    let wanted = json!({"name": key, "value": value});
    match env
        .iter_mut()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(key))
    {
        Some(existing) if *existing == wanted => {}
        Some(existing) => {
            let was = existing
                .get("value")
                .and_then(Value::as_str)
                .map(|v| format!("'{v}'"))
                .unwrap_or_else(|| "set from a reference".into());
            report.warnings.push(format!(
                "container {container}: {key} was {was}; it now points at the sidecar ({value})"
            ));
            *existing = wanted;
        }
        None => env.push(wanted),
    }
}

fn set_java_tool_options(env: &mut Vec<Value>, container: &str, report: &mut Injection) {
    let property = format!("{JAVA_NAMESRV_PROPERTY}{NAMESRV_ADDR}");
    let key = "JAVA_TOOL_OPTIONS";
    match env
        .iter_mut()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(key))
    {
        None => env.push(json!({"name": key, "value": property})),
        Some(existing) => match existing.get("value").and_then(Value::as_str) {
            Some(old) => {
                let kept: Vec<&str> = old
                    .split_whitespace()
                    .filter(|w| !w.starts_with(JAVA_NAMESRV_PROPERTY))
                    .collect();
                let new = kept
                    .into_iter()
                    .chain(std::iter::once(property.as_str()))
                    .collect::<Vec<_>>()
                    .join(" ");
                if new != old {
                    if let Some(obj) = existing.as_object_mut() {
                        obj.insert("value".into(), json!(new));
                    }
                }
            }
            None => report.warnings.push(format!(
                "container {container}: {key} comes from a reference; add {property} to it yourself"
            )),
        },
    }
}

/// `obj[key]` as an object, created (or replaced, if it is not an object) when needed.
fn object_at<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    match obj {
        Value::Object(m) => object_at_map(m, key),
        _ => unreachable!("made an object above"),
    }
}

fn object_at_map<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = m.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

fn array_at_map<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = m.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(v) => v,
        _ => unreachable!("made an array above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InjectorConfig;

    fn template(extra: &str) -> SidecarTemplate {
        InjectorConfig::parse(&format!(
            "[sidecar]\nold_namesrv = \"old:9876\"\nnew_namesrv = \"new:8080\"\n{extra}"
        ))
        .unwrap()
        .sidecar
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}]}})
    }

    #[test]
    fn injecting_twice_equals_injecting_once() {
        let t = template("old_credentials_secret = \"old-keys\"\njava_tool_options = true\n");
        let mut once = pod();
        inject(&mut once, &t, &PodInputs::default());
        let mut twice = once.clone();
        let report = inject(&mut twice, &t, &PodInputs::default());
        assert_eq!(once, twice);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let sidecar = &once["spec"]["initContainers"][0];
        assert_eq!(sidecar["name"], SIDECAR_NAME);
        let env: Vec<&str> = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(
            env.contains(&"RMQ_SIDECAR_OLD_SECRET_KEY_FILE")
                && !env.contains(&"RMQ_SIDECAR_NEW_SECRET_KEY_FILE")
        );
        assert_eq!(once["spec"]["volumes"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn assessment_order_opt_out_then_host_network_then_conflicts() {
        let mut p = pod();
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 9878}]);
        assert_eq!(assess(&p).unwrap_err().reason, "port-conflict");
        p["spec"]["hostNetwork"] = json!(true);
        assert_eq!(assess(&p), Ok(Assessment::HostNetwork));
        p["metadata"]["labels"] = json!({INJECT_LABEL: "disabled"});
        assert_eq!(assess(&p), Ok(Assessment::OptedOut));
        assert_eq!(
            assess(&json!({"spec": {"containers": []}}))
                .unwrap_err()
                .reason,
            "invalid-pod"
        );
    }

    #[test]
    fn a_namespaced_cluster_is_carried_to_the_sidecar() {
        let t = template("new_namespace = \"rocketmq-abc|ns1\"\n");
        let mut p = pod();
        inject(&mut p, &t, &PodInputs::default());
        let env = p["spec"]["initContainers"][0]["env"]
            .as_array()
            .unwrap()
            .clone();
        assert!(env.contains(&json!({"name": env::NEW_NAMESPACE, "value": "rocketmq-abc|ns1"})));
        assert!(!env.iter().any(|e| e["name"] == env::OLD_NAMESPACE));
        let bad = InjectorConfig::parse(
            "[sidecar]\nold_namesrv = \"o:1\"\nnew_namesrv = \"n:1\"\nnew_namespace = \"a%b\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("sidecar.new_namespace") && bad.contains("'%'"),
            "{bad}"
        );
    }

    #[test]
    fn java_tool_options_keep_other_flags_and_replace_ours() {
        let t = template("java_tool_options = true\n");
        let mut p = pod();
        p["spec"]["containers"][0]["env"] = json!([{"name": "JAVA_TOOL_OPTIONS",
            "value": "-Drocketmq.namesrv.addr=10.0.0.1:9876 -Xss1m"}]);
        inject(&mut p, &t, &PodInputs::default());
        let env = &p["spec"]["containers"][0]["env"];
        assert_eq!(
            env[0]["value"],
            "-Xss1m -Drocketmq.namesrv.addr=127.0.0.1:9876"
        );
        assert_eq!(
            env[1],
            json!({"name": "NAMESRV_ADDR", "value": NAMESRV_ADDR})
        );
    }

    #[test]
    fn a_jobs_pod_in_post_start_mode_can_shut_its_sidecar_down() {
        let t = template("mode = \"post-start\"\n");
        let job = PodInputs {
            workload: Some("job.nightly-export"),
            stage: None,
        };
        let mut p = pod();
        let report = inject(&mut p, &t, &job);
        let env = &p["spec"]["containers"][0]["env"];
        assert!(env
            .as_array()
            .unwrap()
            .contains(&json!({"name": env::ENABLE_SHUTDOWN, "value": "true"})));
        assert!(
            report.warnings[0].contains("/shutdown"),
            "{:?}",
            report.warnings
        );
        // Native sidecars stop on their own after a Job's containers; a Deployment needs nothing.
        for (extra, workload) in [
            ("", "job.nightly-export"),
            ("mode = \"post-start\"\n", "deployment.x"),
        ] {
            let mut p = pod();
            let inputs = PodInputs {
                workload: Some(workload),
                stage: None,
            };
            let report = inject(&mut p, &template(extra), &inputs);
            assert!(report.warnings.is_empty() && !p.to_string().contains(env::ENABLE_SHUTDOWN));
        }
    }

    #[test]
    fn a_pod_annotation_turns_java_tool_options_on_or_off() {
        let has_flag = |p: &Value| {
            p["spec"]["containers"][0]
                .to_string()
                .contains("JAVA_TOOL_OPTIONS")
        };
        let with = |value: &str| {
            let mut p = pod();
            p["metadata"]["annotations"] = json!({JAVA_TOOL_OPTIONS_ANNOTATION: value});
            p
        };
        let (mut on, mut off, mut bad) = (with("true"), with("false"), with("yes"));
        inject(&mut on, &template(""), &PodInputs::default());
        inject(
            &mut off,
            &template("java_tool_options = true\n"),
            &PodInputs::default(),
        );
        let report = inject(&mut bad, &template(""), &PodInputs::default());
        assert!(has_flag(&on) && !has_flag(&off) && !has_flag(&bad));
        assert!(
            report.warnings[0].contains("'yes' is not"),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn a_pods_own_route_annotation_wins_over_the_stage_with_a_warning() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({ROUTE_ANNOTATION: "old"});
        let inputs = PodInputs {
            workload: Some("deployment.x"),
            stage: Some("new"),
        };
        let report = inject(&mut p, &template(""), &inputs);
        assert_eq!(p["metadata"]["annotations"][ROUTE_ANNOTATION], "old");
        assert!(
            report.warnings[0].contains("stage is new"),
            "{:?}",
            report.warnings
        );
    }
}
