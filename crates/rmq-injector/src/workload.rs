//! Which workload a pod belongs to, and the key of its stage in the stage ConfigMap.
//!
//! At admission the pod already carries its controller's `ownerReferences`. A Deployment's
//! pods are owned by a ReplicaSet named `<deployment>-<pod-template-hash>`, so the hash
//! (also a label on the pod) is cut off to reach the Deployment.

use serde_json::Value;

/// A workload: lower-case kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `deployment`, `statefulset`, `daemonset`, `replicaset`, `job`, ...
    pub kind: String,
    /// The workload's name.
    pub name: String,
}

impl Workload {
    /// The key in the stage ConfigMap: `<kind>.<name>` (a valid ConfigMap key).
    pub fn stage_key(&self) -> String {
        format!("{}.{}", self.kind, self.name)
    }

    /// The keys to look up, most specific first. A Job that a CronJob created is named
    /// `<cronjob>-<scheduled minute>` and gets a new name every run, so its CronJob's key
    /// (`cronjob.<cronjob>`) follows its own.
    pub fn stage_keys(&self) -> Vec<String> {
        let mut keys = vec![self.stage_key()];
        if self.kind == "job" {
            if let Some((cronjob, minute)) = self.name.rsplit_once('-') {
                if minute.len() >= 8
                    && minute.bytes().all(|b| b.is_ascii_digit())
                    && !cronjob.is_empty()
                {
                    keys.push(format!("cronjob.{cronjob}"));
                }
            }
        }
        keys
    }
}

/// The workload of a pod, from its controlling owner; `None` for a bare pod.
pub fn workload_of(pod: &Value) -> Option<Workload> {
    let owners = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    let owner = owners
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| owners.first())?;
    let kind = owner.get("kind")?.as_str()?;
    let name = owner.get("name")?.as_str()?;
    if kind == "ReplicaSet" {
        let hash = pod
            .pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str);
        if let Some(deployment) = hash.and_then(|h| name.strip_suffix(&format!("-{h}"))) {
            return Some(Workload {
                kind: "deployment".into(),
                name: deployment.into(),
            });
        }
    }
    Some(Workload {
        kind: kind.to_ascii_lowercase(),
        name: name.into(),
    })
}

/// The workload a manifest describes (offline injection of a Deployment, StatefulSet, ...).
pub fn workload_of_manifest(obj: &Value) -> Option<Workload> {
    let kind = obj.get("kind")?.as_str()?;
    let name = obj.pointer("/metadata/name")?.as_str()?;
    Some(Workload {
        kind: kind.to_ascii_lowercase(),
        name: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_pods_resolve_through_their_replicaset() {
        let pod = json!({"metadata": {
            "labels": {"pod-template-hash": "7c9f8d6b5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "orders-api-7c9f8d6b5", "controller": true, "uid": "u"}]}});
        assert_eq!(
            workload_of(&pod).unwrap().stage_key(),
            "deployment.orders-api"
        );
    }

    #[test]
    fn other_owners_and_bare_pods() {
        let sts = json!({"metadata": {"ownerReferences": [
            {"kind": "StatefulSet", "name": "ledger", "controller": true}]}});
        assert_eq!(workload_of(&sts).unwrap().stage_key(), "statefulset.ledger");
        // A ReplicaSet without a Deployment (no matching hash) stays a ReplicaSet.
        let rs = json!({"metadata": {"ownerReferences": [
            {"kind": "ReplicaSet", "name": "plain", "controller": true}]}});
        assert_eq!(workload_of(&rs).unwrap().stage_key(), "replicaset.plain");
        assert_eq!(workload_of(&json!({"metadata": {"name": "p"}})), None);
    }

    #[test]
    fn a_cronjobs_pods_fall_back_to_the_cronjob_key() {
        let job = |name: &str| Workload {
            kind: "job".into(),
            name: name.into(),
        };
        assert_eq!(
            job("nightly-export-29361440").stage_keys(),
            ["job.nightly-export-29361440", "cronjob.nightly-export"]
        );
        assert_eq!(job("import-v2").stage_keys(), ["job.import-v2"]);
        assert_eq!(job("migrate-123").stage_keys(), ["job.migrate-123"]);
    }
}
