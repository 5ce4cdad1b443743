//! Following the pod annotation through a kubelet-style downward API volume: switches
//! within a bounded wait, holds the route against `PUT /route`, ignores invalid values, and
//! the choice survives a restart.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::*;

async fn route_doc(addr: std::net::SocketAddr) -> Value {
    serde_json::from_str(&http(addr, "GET", "/route", None).await.1).unwrap()
}

#[tokio::test]
async fn the_route_follows_the_pod_annotation() {
    let old_ns = FakeNameServer::start(HashMap::new()).await;
    let new_ns = FakeNameServer::start(HashMap::new()).await;
    let state = tempdir("ann-state");
    let podinfo = tempdir("ann-podinfo");
    kubelet_write(
        &podinfo,
        "v1",
        &[("annotations", "kubectl.kubernetes.io/restartedAt=\"x\"\n")],
    );
    let cfg = format!(
        "annotations_file = \"{}\"\n{}",
        podinfo.join("annotations").display(),
        sidecar_config(
            old_ns.addr,
            Some(new_ns.addr),
            "127.92.0.0/16",
            Some(&state)
        )
    );
    let sidecar = start_sidecar(&cfg).await;
    let admin = sidecar.admin_addr;
    let doc = route_doc(admin).await;
    assert_eq!(
        (doc["target"].as_str(), doc["controlled_by"].as_str()),
        (Some("old"), Some("admin"))
    );

    // kubectl annotate pod P rocketmq-sidecar/route=new
    kubelet_write(
        &podinfo,
        "v2",
        &[(
            "annotations",
            "kubectl.kubernetes.io/restartedAt=\"x\"\nrocketmq-sidecar/route=\"new\"\n",
        )],
    );
    assert_eventually!(
        route_doc(admin).await["target"] == "new",
        5,
        "switched by the annotation"
    );
    let doc = route_doc(admin).await;
    assert_eq!(doc["controlled_by"], "annotation");
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["annotation"]["value"], "new");

    // The admin endpoint does not fight the annotation.
    let (status, body) = http(admin, "PUT", "/route", Some("{\"target\":\"old\"}")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("rocketmq-sidecar/route") && body.contains("kubectl annotate"),
        "{body}"
    );
    let (status, _) = http(admin, "PUT", "/route", Some("{\"target\":\"new\"}")).await;
    assert_eq!(status, 200, "agreeing with the annotation is fine");

    // An invalid value is ignored, said, and counted; the route stays.
    kubelet_write(
        &podinfo,
        "v3",
        &[("annotations", "rocketmq-sidecar/route=\"sideways\"\n")],
    );
    assert_eventually!(
        route_doc(admin).await["annotation"]["error"].is_string(),
        5,
        "invalid value reported"
    );
    let doc = route_doc(admin).await;
    assert_eq!(doc["target"], "new");
    assert_eq!(doc["controlled_by"], "admin");
    let (_, metrics) = http(admin, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("rmq_sidecar_annotation_updates_total{outcome=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("rmq_sidecar_annotation_updates_total{outcome=\"applied\"} 1"));

    // The choice survives a restart (persisted), before any annotation is read again.
    drop(sidecar);
    tokio::time::sleep(Duration::from_millis(200)).await;
    kubelet_write(
        &podinfo,
        "v4",
        &[("annotations", "rocketmq-sidecar/route=\"new\"\n")],
    );
    let again = start_sidecar(&cfg).await;
    assert_eq!(
        again.route.current().whole(),
        Some(rocketmq_sidecar::Target::New)
    );
    assert_eq!(
        route_doc(again.admin_addr).await["controlled_by"],
        "annotation",
        "applied at startup, before ready"
    );
    std::fs::remove_dir_all(&state).ok();
    std::fs::remove_dir_all(&podinfo).ok();
}
