//! AdmissionReview v1: reading the API server's request and writing the answer. Pure:
//! the stage lookup result comes in as a value.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::config::{SidecarTemplate, Uninjectable};
use crate::diff::json_patch;
use crate::patch::{self, Assessment, PodInputs, Refusal};
use crate::workload::{workload_of, Workload};

/// A review that cannot be answered as a review (no uid to answer to).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an AdmissionReview v1 request.
    #[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
    NotAReview(&'static str),
}

/// The parts of an AdmissionRequest the injector uses.
#[derive(Debug, Clone)]
pub struct Request {
    /// Echoed in the response.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`, ...
    pub operation: String,
    /// `request.kind.kind`.
    pub kind: String,
    /// The pod (`request.object`).
    pub object: Value,
}

/// How one review ended (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// Already had the sidecar; completed (or nothing to do).
    AlreadyInjected,
    /// Opted out by label, or not a pod creation: admitted unchanged.
    Ignored,
    /// On the host network: admitted with the skip label.
    SkippedHostNetwork,
    /// Could not inject; admitted with the skip label.
    UninjectableAdmitted,
    /// Could not inject; denied.
    Denied,
}

impl Outcome {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::Ignored => "ignored",
            Outcome::SkippedHostNetwork => "skipped_host_network",
            Outcome::UninjectableAdmitted => "uninjectable_admitted",
            Outcome::Denied => "denied",
        }
    }
}

/// The stage lookup for one pod, done by the caller between [`parse`] and [`decide`].
#[derive(Debug, Clone)]
pub enum StageResult {
    /// No lookup configured, a bare pod, no ConfigMap or no key: the default target.
    None,
    /// The workload's stage.
    Found(String),
    /// The lookup failed; the pod is uninjectable (a default target could put a producer
    /// back on a cluster its consumers have left).
    Failed(String),
}

/// Parses the request body.
pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    if review.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1") {
        return Err(ReviewError::NotAReview(
            "apiVersion is not admission.k8s.io/v1",
        ));
    }
    if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(ReviewError::NotAReview("kind is not AdmissionReview"));
    }
    let request = review
        .get("request")
        .and_then(Value::as_object)
        .ok_or(ReviewError::NotAReview("no request"))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or(ReviewError::NotAReview("request.uid is missing"))?;
    let text = |key: &str| request.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok(Request {
        uid: uid.to_owned(),
        namespace: text("namespace"),
        operation: text("operation").unwrap_or_default(),
        kind: request
            .get("kind")
            .and_then(|k| k.get("kind"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        object: request.get("object").cloned().unwrap_or(Value::Null),
    })
}

/// The workload whose stage should be looked up, when the request is an injectable pod.
pub fn stage_lookup_needed(req: &Request) -> Option<Workload> {
    if req.kind != "Pod" || req.operation != "CREATE" {
        return None;
    }
    match patch::assess(&req.object) {
        Ok(Assessment::Inject) => workload_of(&req.object),
        _ => None,
    }
}

/// The answer to one review.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview response body.
    pub review: Value,
    /// How it ended.
    pub outcome: Outcome,
    /// What kubectl shows the user (also logged).
    pub warnings: Vec<String>,
}

/// Answers one review; `stage` is the result of the caller's stage lookup.
pub fn decide(
    req: &Request,
    stage: StageResult,
    template: &SidecarTemplate,
    policy: Uninjectable,
) -> Answer {
    let answer = |review, outcome, warnings| Answer {
        review,
        outcome,
        warnings,
    };
    if req.kind != "Pod" || req.operation != "CREATE" {
        return answer(allow(&req.uid, None, &[]), Outcome::Ignored, Vec::new());
    }
    let before = &req.object;
    let mut pod = before.clone();
    let refused = |pod: &mut Value, refusal: Refusal| match policy {
        Uninjectable::Deny => {
            let message = format!(
                "rocketmq-sidecar cannot inject this pod: {}",
                refusal.detail
            );
            answer(
                deny(&req.uid, &message),
                Outcome::Denied,
                vec![refusal.detail],
            )
        }
        Uninjectable::Admit => {
            let warnings = vec![format!(
                "admitted without the rocketmq-sidecar: {}",
                refusal.detail
            )];
            // Something that is not even a JSON object gets no label: nothing to attach it to.
            let ops = if pod.is_object() {
                patch::label_skipped(pod, refusal.reason, &refusal.detail);
                json_patch(before, pod)
            } else {
                Vec::new()
            };
            let review = allow(&req.uid, Some(ops), &warnings);
            answer(review, Outcome::UninjectableAdmitted, warnings)
        }
    };
    match patch::assess(&pod) {
        Err(refusal) => refused(&mut pod, refusal),
        Ok(Assessment::OptedOut) => {
            answer(allow(&req.uid, None, &[]), Outcome::Ignored, Vec::new())
        }
        Ok(Assessment::HostNetwork) => {
            patch::label_skipped(&mut pod, "host-network", patch::HOST_NETWORK_DETAIL);
            let review = allow(&req.uid, Some(json_patch(before, &pod)), &[]);
            answer(review, Outcome::SkippedHostNetwork, Vec::new())
        }
        Ok(assessment @ (Assessment::Inject | Assessment::AlreadyInjected)) => {
            let stage = match stage {
                StageResult::Failed(why) => {
                    let refusal = Refusal {
                        reason: "stage-lookup-failed",
                        detail: format!("the workload's stage could not be read: {why}"),
                    };
                    return refused(&mut pod, refusal);
                }
                StageResult::Found(s) => Some(s),
                StageResult::None => None,
            };
            let workload = workload_of(before).map(|w| w.stage_key());
            let inputs = PodInputs {
                workload: workload.as_deref(),
                stage: stage.as_deref(),
            };
            let report = patch::inject(&mut pod, template, &inputs);
            let review = allow(&req.uid, Some(json_patch(before, &pod)), &report.warnings);
            let outcome = match assessment {
                Assessment::Inject => Outcome::Injected,
                _ => Outcome::AlreadyInjected,
            };
            answer(review, outcome, report.warnings)
        }
    }
}

/// A response that admits the object, with a JSON patch when there is one.
pub fn allow(uid: &str, ops: Option<Vec<Value>>, warnings: &[String]) -> Value {
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(ops) = ops.filter(|o| !o.is_empty()) {
        let patch = serde_json::to_vec(&ops).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    review(response)
}

/// A response that refuses the object with a message kubectl shows.
pub fn deny(uid: &str, message: &str) -> Value {
    review(json!({
        "uid": uid,
        "allowed": false,
        "status": {"code": 403, "reason": "Forbidden", "message": message},
    }))
}

fn review(response: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}
