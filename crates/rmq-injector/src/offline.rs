//! `rmq-injector inject -f manifest.yaml`: the webhook's injection applied to the pod
//! templates of a manifest, for GitOps pipelines (as `istioctl kube-inject` does).
//!
//! Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and List documents
//! are injected; every other document is passed through. YAML comments are not kept.

use serde::Deserialize;
use serde_json::Value;

use crate::config::{SidecarTemplate, Uninjectable};
use crate::patch::{self, Assessment, PodInputs};
use crate::workload::{workload_of, workload_of_manifest};

/// A manifest that cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Not YAML.
    #[error("document {doc}: not valid YAML: {message}")]
    Yaml {
        /// 1-based document number.
        doc: usize,
        /// Parser message (with line and column).
        message: String,
    },
    /// A pod template the `deny` policy refuses.
    #[error("document {doc} ({what}): cannot inject: {detail}")]
    Refused {
        /// 1-based document number.
        doc: usize,
        /// `Deployment/orders`.
        what: String,
        /// Why.
        detail: String,
    },
    /// The result could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Write(String),
}

/// The injected manifest and notes for stderr.
#[derive(Debug)]
pub struct Injected {
    /// Multi-document YAML.
    pub yaml: String,
    /// One line per template: injected, skipped (and why), warnings.
    pub notes: Vec<String>,
}

/// Injects every pod template in `text`. `route` becomes the templates' route
/// annotation (changing it in Git rolls the workload onto that cluster).
pub fn inject_manifest(
    text: &str,
    template: &SidecarTemplate,
    route: Option<&str>,
    policy: Uninjectable,
) -> Result<Injected, OfflineError> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let mut value = Value::deserialize(doc).map_err(|e| OfflineError::Yaml {
            doc: n,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document (comments only)
        }
        inject_object(&mut value, n, template, route, policy, &mut notes)?;
        out.push(value);
    }
    let mut yaml = String::new();
    for (i, doc) in out.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(
            &serde_yaml_ng::to_string(doc).map_err(|e| OfflineError::Write(e.to_string()))?,
        );
    }
    Ok(Injected { yaml, notes })
}

fn inject_object(
    obj: &mut Value,
    doc: usize,
    template: &SidecarTemplate,
    route: Option<&str>,
    policy: Uninjectable,
    notes: &mut Vec<String>,
) -> Result<(), OfflineError> {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let what = format!("{kind}/{name}");
    let pointer = match kind.as_str() {
        "List" => {
            if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    inject_object(item, doc, template, route, policy, notes)?;
                }
            }
            return Ok(());
        }
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return Ok(()),
    };
    let workload = if kind == "Pod" {
        workload_of(obj)
    } else {
        workload_of_manifest(obj)
    }
    .map(|w| w.stage_key());
    let Some(pod) = obj.pointer_mut(pointer) else {
        notes.push(format!("{what}: no pod template, left as is"));
        return Ok(());
    };
    match patch::assess(pod) {
        Ok(Assessment::OptedOut) => notes.push(format!("{what}: opted out, left as is")),
        Ok(Assessment::HostNetwork) => {
            notes.push(format!("{what}: host network, not injected"));
            patch::label_skipped(pod, "host-network", patch::HOST_NETWORK_DETAIL);
        }
        Err(refusal) => match policy {
            Uninjectable::Deny => {
                return Err(OfflineError::Refused {
                    doc,
                    what,
                    detail: refusal.detail,
                })
            }
            Uninjectable::Admit => {
                notes.push(format!("{what}: not injected: {}", refusal.detail));
                if pod.is_object() {
                    patch::label_skipped(pod, refusal.reason, &refusal.detail);
                }
            }
        },
        Ok(assessment) => {
            let inputs = PodInputs {
                workload: workload.as_deref(),
                stage: route,
            };
            let report = patch::inject(pod, template, &inputs);
            // Offline the route is the user's explicit choice: it replaces an earlier one,
            // so changing --route in a pipeline rolls the workload onto that cluster.
            if let Some(route) = route {
                patch::set_annotation(pod, patch::ROUTE_ANNOTATION, route);
            }
            let verb = if assessment == Assessment::Inject {
                "injected"
            } else {
                "already injected"
            };
            notes.push(format!("{what}: {verb}"));
            notes.extend(report.warnings.into_iter().map(|w| format!("{what}: {w}")));
        }
    }
    Ok(())
}
