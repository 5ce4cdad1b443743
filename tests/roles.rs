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

const HEARTBEAT: &str = r#"{"clientID":"10.0.0.7@4242","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"orders-consumer","messageModel":"CLUSTERING","subscriptionDataSet":[],"unitMode":false}],"producerDataSet":[{"groupName":"billing-producer"},{"groupName":"tx-producer"}]}"#;

/// The local listener of `broker_name` in a route answer.
fn local_of(route: &Value, broker_name: &str) -> SocketAddr {
    route["brokerDatas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["brokerName"] == broker_name)
        .and_then(|b| b["brokerAddrs"]["0"].as_str())
        .unwrap_or_else(|| panic!("{broker_name} not in {route}"))
        .parse()
        .unwrap()
}

fn groups_of(body: &[u8]) -> (Vec<String>, Vec<String>) {
    let g = rocketmq_sidecar::protocol::heartbeat::groups(body).unwrap();
    (g.consumers, g.producers)
}

#[tokio::test]
async fn no_cluster_learns_a_role_the_pod_does_not_play_there() {
    let c = clusters().await;
    let sidecar = start_sidecar(&sidecar_config(
        c.old_ns.addr,
        Some(c.new_ns.addr),
        "127.84.0.0/16",
        None,
    ))
    .await;
    let (status, _) = http(
        sidecar.admin_addr,
        "PUT",
        "/route",
        Some(r#"{"consumer":"new"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let (_, route) = route_of(sidecar.namesrv_addr, "T").await;
    let route = route.unwrap();
    let mut old = FrameClient::connect(local_of(&route, "broker-a")).await;
    let mut new = FrameClient::connect(local_of(&route, "new~broker-a")).await;

    // Heartbeats: old (producers only here) loses the consumer group, new (consumers only)
    // the producer groups.
    let hb = request(34, 1, &[]);
    assert_eq!(old.call(&hb, HEARTBEAT.as_bytes()).await.0.code, 0);
    assert_eq!(new.call(&hb, HEARTBEAT.as_bytes()).await.0.code, 0);
    let at_old = c._old_broker.seen_code(34);
    let at_new = c._new_broker.seen_code(34);
    assert_eq!(
        groups_of(&at_old[0].1),
        (
            vec![],
            vec!["billing-producer".into(), "tx-producer".into()]
        )
    );
    assert_eq!(
        groups_of(&at_new[0].1),
        (vec!["orders-consumer".into()], vec![])
    );

    // LOCK_BATCH_MQ towards the producers-only cluster is answered here, locking nothing.
    let lock = br#"{"clientId":"10.0.0.7@4242","consumerGroup":"orders-consumer","mqSet":[{"brokerName":"broker-a","queueId":0,"topic":"T"}]}"#;
    let (h, body) = old.call(&request(41, 2, &[]), lock).await;
    assert_eq!(h.code, 0);
    assert_eq!(&body[..], br#"{"lockOKMQSet":[]}"#);
    assert!(
        c._old_broker.seen_code(41).is_empty(),
        "the lock reached the broker"
    );
    // The member list is the consumers' cluster's, whatever broker the client asked, with
    // the app in it (it joins new's group at its next heartbeat; listed, it takes queues).
    let (h, body) = old
        .call(
            &request(38, 3, &[("consumerGroup", "orders-consumer")]),
            b"",
        )
        .await;
    assert_eq!((h.code, h.ext("handledBy")), (0, Some("new-a")));
    assert_eq!(
        &body[..],
        br#"{"consumerIdList":["10.9.9.9@other","10.0.0.7@4242"]}"#
    );
    assert!(c._old_broker.seen_code(38).is_empty());
    assert_eq!(c._new_broker.seen_code(38).len(), 1);
    // Asked of new itself, the same.
    let (h, body) = new
        .call(
            &request(38, 7, &[("consumerGroup", "orders-consumer")]),
            b"",
        )
        .await;
    assert_eq!(h.opaque, 7);
    assert_eq!(
        &body[..],
        br#"{"consumerIdList":["10.9.9.9@other","10.0.0.7@4242"]}"#
    );
    // Towards the consumers' cluster, locks go through.
    let (h, _) = new.call(&request(41, 4, &[]), lock).await;
    assert_eq!(h.ext("handledBy"), Some("new-a"));

    // A transactional half message from tx-producer on old: that group keeps heartbeating
    // old after the producers leave it; billing-producer is unregistered from old.
    let half = request(310, 5, &[("a", "tx-producer"), ("b", "T"), ("f", "4")]);
    assert_eq!(old.call(&half, b"half").await.0.code, 0);
    let (status, _) = put_route(sidecar.admin_addr, "new").await;
    assert_eq!(status, 200);
    assert_eventually!(
        !c._old_broker.seen_code(35).is_empty(),
        5,
        "no UNREGISTER_CLIENT reached old when the producers left it"
    );
    let unregistered: Vec<(Option<String>, Option<String>)> = c
        ._old_broker
        .seen_code(35)
        .iter()
        .map(|(h, _, _)| {
            assert_eq!(h.ext("clientID"), Some("10.0.0.7@4242"));
            (
                h.ext("producerGroup").map(str::to_owned),
                h.ext("consumerGroup").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        unregistered,
        vec![(Some("billing-producer".to_owned()), None)]
    );
    assert_eq!(old.call(&hb, HEARTBEAT.as_bytes()).await.0.code, 0);
    let last = c._old_broker.seen_code(34).pop().unwrap();
    assert_eq!(groups_of(&last.1), (vec![], vec!["tx-producer".into()]));
    let (_, body) = http(sidecar.admin_addr, "GET", "/route", None).await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc["transactional_producers"]["old"],
        serde_json::json!({"groups": ["tx-producer"], "producers_left": true}),
        "{doc}"
    );
    // The broker's answer to the sidecar's own UNREGISTER never reaches the app: the next
    // frame the app gets is the answer to its next request.
    let (h, _) = old.call(&request(30, 6, &[]), b"").await;
    assert_eq!(h.opaque, 6);

    // Consumers leave new (back to old): new unregisters the consumer group and the app
    // is told to rebalance on that connection.
    let (status, _) = http(
        sidecar.admin_addr,
        "PUT",
        "/route",
        Some(r#"{"consumer":"old"}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eventually!(
        c._new_broker
            .seen_code(35)
            .iter()
            .any(|(h, _, _)| h.ext("consumerGroup") == Some("orders-consumer")),
        5,
        "the consumer group was not unregistered from new"
    );
    let notify = new.next().await.expect("NOTIFY_CONSUMER_IDS_CHANGED");
    let h = header_of(&notify);
    assert_eq!((h.code, h.is_oneway()), (40, true));
    assert_eq!(h.ext("consumerGroup"), Some("orders-consumer"));
    // Until the app fetches a route, its rebalance of new's queues (towards new, which its
    // consumers left) gets new's list without the app: it lets them go at once.
    let (h, body) = new
        .call(
            &request(38, 8, &[("consumerGroup", "orders-consumer")]),
            b"",
        )
        .await;
    assert_eq!((h.code, h.ext("handledBy")), (0, Some("new-a")));
    assert_eq!(&body[..], br#"{"consumerIdList":["10.9.9.9@other"]}"#);
    let redirected = c._old_broker.seen_code(38).len();
    // After a route fetch it is old's list again, asked of old.
    let _ = route_of(sidecar.namesrv_addr, "T").await;
    let (h, _) = new
        .call(
            &request(38, 9, &[("consumerGroup", "orders-consumer")]),
            b"",
        )
        .await;
    assert_eq!((h.code, h.ext("handledBy")), (0, Some("old-a")));
    assert_eq!(c._old_broker.seen_code(38).len(), redirected + 1);

    let (_, metrics) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    for series in [
        r#"rmq_sidecar_role_filter_total{action="lock_refused",target="old"} 1"#,
        r#"rmq_sidecar_role_filter_total{action="consumer_list_redirected",target="old"} 1"#,
        r#"rmq_sidecar_role_filter_total{action="unregistered",target="new"} 1"#,
        r#"rmq_sidecar_role_filter_total{action="unregistered",target="old"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}
