//! Per-role routing through a running sidecar against in-process fakes: a pod's producers
//! and consumers switched apart, route and cluster-info answers composed from both
//! clusters with each side's queues restricted to the role the pod plays there, a topic
//! missing on one side reported, the persisted per-role state after a restart.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::*;

async fn route_of(ns: SocketAddr, topic: &str) -> (i32, Option<Value>) {
    let mut c = FrameClient::connect(ns).await;
    let (h, body) = c.call(&request(105, 7, &[("topic", topic)]), b"").await;
    let v = (!body.is_empty()).then(|| serde_json::from_slice(&body).expect("standard JSON"));
    (h.code, v)
}

/// `brokerName -> perm` of a route's queues.
fn perms(route: &Value) -> HashMap<String, i64> {
    route["queueDatas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["brokerName"].as_str().unwrap().to_owned(),
                q["perm"].as_i64().unwrap(),
            )
        })
        .collect()
}

struct Clusters {
    old_ns: FakeNameServer,
    new_ns: FakeNameServer,
    _old_broker: FakeBroker,
    _new_broker: FakeBroker,
}

/// Both clusters name their broker `broker-a`; topic `T` is on both, `OnlyOld` only on old.
async fn clusters() -> Clusters {
    let old_broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let new_broker = FakeBroker::start("new-a", Duration::ZERO).await;
    let old_ns = FakeNameServer::start(HashMap::from([
        ("T".to_owned(), fastjson_route("broker-a", old_broker.addr)),
        (
            "OnlyOld".to_owned(),
            fastjson_route("broker-a", old_broker.addr),
        ),
    ]))
    .await;
    let new_ns = FakeNameServer::start(HashMap::from([(
        "T".to_owned(),
        fastjson_route("broker-a", new_broker.addr),
    )]))
    .await;
    Clusters {
        old_ns,
        new_ns,
        _old_broker: old_broker,
        _new_broker: new_broker,
    }
}

#[tokio::test]
async fn routes_are_composed_from_both_clusters_with_each_roles_queues() {
    let c = clusters().await;
    let sidecar = start_sidecar(&sidecar_config(
        c.old_ns.addr,
        Some(c.new_ns.addr),
        "127.81.0.0/16",
        None,
    ))
    .await;
    // Consumers first: consumers on new, producers still on old.
    let (status, body) = http(
        sidecar.admin_addr,
        "PUT",
        "/route",
        Some(r#"{"consumer":"new"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["target"], Value::Null, "roles apart: no single target");
    assert_eq!(doc["roles"]["consumer"]["target"], "new");
    assert_eq!(doc["roles"]["producer"]["target"], "old");
    assert_eq!(doc["roles"]["consumer"]["generation"], 1);
    assert_eq!(doc["roles"]["producer"]["generation"], 0);

    let (code, route) = route_of(sidecar.namesrv_addr, "T").await;
    assert_eq!(code, 0);
    let route = route.unwrap();
    let by_broker = perms(&route);
    // Old's queues: producers only (WRITE = 2); new's (prefixed): consumers only (READ = 4).
    assert_eq!(by_broker.get("broker-a"), Some(&2), "{route}");
    assert_eq!(by_broker.get("new~broker-a"), Some(&4), "{route}");
    let brokers: Vec<&str> = route["brokerDatas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["brokerName"].as_str().unwrap())
        .collect();
    assert_eq!(brokers.len(), 2, "{route}");
    for bd in route["brokerDatas"].as_array().unwrap() {
        let addr = bd["brokerAddrs"]["0"].as_str().unwrap();
        assert!(addr.starts_with("127.81."), "not a local listener: {addr}");
    }

    // A topic only on old: what old has, restricted to the role the pod plays there
    // (producers); the missing side is reported.
    let (code, route) = route_of(sidecar.namesrv_addr, "OnlyOld").await;
    assert_eq!(code, 0);
    let route = route.unwrap();
    assert_eq!(perms(&route), HashMap::from([("broker-a".to_owned(), 2)]));
    let (_, body) = http(sidecar.admin_addr, "GET", "/route", None).await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    let partial = &doc["partial_answers"][0];
    assert_eq!(partial["cluster"], "new", "{doc}");
    assert_eq!(partial["role"], "consumer");
    assert_eq!(partial["what"], "route of OnlyOld");
    assert!(
        partial["reason"].as_str().unwrap().contains("code 17"),
        "{partial}"
    );
    let (_, metrics) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains(
            r#"rmq_sidecar_route_partial_answers_total{cluster="new",role="consumer"} 1"#
        ),
        "{metrics}"
    );

    // A topic on neither: the consumers' cluster's answer (17) reaches the app.
    let (code, route) = route_of(sidecar.namesrv_addr, "Nowhere").await;
    assert_eq!((code, route), (17, None));

    // Producers follow: both roles on new, one cluster answers again, unrestricted.
    let (status, body) = put_route(sidecar.admin_addr, "new").await;
    assert_eq!(status, 200, "{body}");
    let (_, route) = route_of(sidecar.namesrv_addr, "T").await;
    let route = route.unwrap();
    assert_eq!(
        perms(&route),
        HashMap::from([("new~broker-a".to_owned(), 6)])
    );
    let (_, body) = http(sidecar.admin_addr, "GET", "/route", None).await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["target"], "new");
    assert_eq!(
        doc["partial_answers"],
        Value::Array(vec![]),
        "partials of a role no longer apart are not shown"
    );
}

#[tokio::test]
async fn cluster_info_is_merged_from_both_clusters() {
    let c = clusters().await;
    let sidecar = start_sidecar(&sidecar_config(
        c.old_ns.addr,
        Some(c.new_ns.addr),
        "127.82.0.0/16",
        None,
    ))
    .await;
    let (status, _) = http(
        sidecar.admin_addr,
        "PUT",
        "/route",
        Some(r#"{"producer":"new","consumer":"old"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let mut client = FrameClient::connect(sidecar.namesrv_addr).await;
    let (h, body) = client.call(&request(106, 3, &[]), b"").await;
    assert_eq!(h.code, 0);
    let info: Value = serde_json::from_slice(&body).unwrap();
    let table = info["brokerAddrTable"].as_object().unwrap();
    let mut names: Vec<&String> = table.keys().collect();
    names.sort();
    assert_eq!(names, ["broker-a", "new~broker-a"], "{info}");
    let cluster = info["clusterAddrTable"]["C"].as_array().unwrap();
    assert_eq!(
        cluster.len(),
        2,
        "both clusters' brokers under the shared name: {info}"
    );
}

#[tokio::test]
async fn route_bodies_that_move_roles_are_checked() {
    let c = clusters().await;
    let dir = tempdir("roles-state");
    let config = sidecar_config(
        c.old_ns.addr,
        Some(c.new_ns.addr),
        "127.83.0.0/16",
        Some(&dir),
    );
    let sidecar = start_sidecar(&config).await;
    for (bad, says) in [
        (r#"{"target":"new","consumer":"new"}"#, "not both"),
        (r#"{}"#, "nothing to switch"),
        (r#"{"consumer":null}"#, "invalid type: null"),
        (r#"{"consumer":"sideways"}"#, "unknown consumer 'sideways'"),
        (r#"{"role":"consumer"}"#, "unknown field"),
    ] {
        let (status, body) = http(sidecar.admin_addr, "PUT", "/route", Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains(says), "{bad}: {body}");
    }
    assert_eq!(
        sidecar.route.current().whole(),
        Some(rocketmq_sidecar::Target::Old)
    );
    let (status, _) = http(
        sidecar.admin_addr,
        "PUT",
        "/route",
        Some(r#"{"consumer":"new"}"#),
    )
    .await;
    assert_eq!(status, 200);
    // The state file is version 2 and a restarted sidecar comes back with both roles.
    let persisted: Value =
        serde_json::from_slice(&std::fs::read(dir.join("route.json")).unwrap()).unwrap();
    assert_eq!(persisted["version"], 2);
    assert_eq!(persisted["consumer"]["target"], "new");
    assert_eq!(persisted["producer"]["target"], "old");
    drop(sidecar);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = start_sidecar(&config).await;
    let now = again.route.current();
    assert_eq!(now.consumer.target, rocketmq_sidecar::Target::New);
    assert_eq!(now.producer.target, rocketmq_sidecar::Target::Old);
    assert_eq!(now.generation, 1);
    std::fs::remove_dir_all(&dir).ok();
}
