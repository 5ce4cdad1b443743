//! `GET /preflight` (`preflight`) through a running sidecar: the topics and groups the pod
//! used are recorded from the traffic it relays and checked against a cluster's name
//! servers; what is missing there is named.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn preflight_names_what_the_target_cluster_lacks() {
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
    let sidecar = start_sidecar(&sidecar_config(
        old_ns.addr,
        Some(new_ns.addr),
        "127.87.0.0/16",
        None,
    ))
    .await;
    let local = local_master(sidecar.namesrv_addr, "T").await;
    let mut app = FrameClient::connect(local).await;
    for (i, topic) in ["T", "OnlyOld"].into_iter().enumerate() {
        let send = request(310, i as i32 + 1, &[("a", "PG"), ("b", topic)]);
        assert_eq!(app.call(&send, b"m").await.0.code, 0);
    }
    let hb = r#"{"clientID":"c1","consumerDataSet":[{"groupName":"GA","subscriptionDataSet":[{"topic":"T"},{"topic":"%RETRY%GA"}]}],"producerDataSet":[{"groupName":"PG"}]}"#;
    assert_eq!(
        app.call(&request(34, 9, &[]), hb.as_bytes()).await.0.code,
        0
    );

    let (status, body) = http(sidecar.admin_addr, "GET", "/preflight?to=new", None).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["to"], "new");
    assert_eq!(doc["ready"], false);
    assert_eq!(doc["missing"], serde_json::json!(["%RETRY%GA", "OnlyOld"]));
    let topic = |name: &str| {
        doc["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {doc}"))
    };
    assert_eq!(topic("T")["on_target"], "present");
    assert_eq!(topic("T")["produced_by"], serde_json::json!(["PG"]));
    assert_eq!(topic("T")["consumed_by"], serde_json::json!(["GA"]));
    assert_eq!(topic("OnlyOld")["on_target"], "missing");
    assert!(
        topic("OnlyOld")["detail"]
            .as_str()
            .unwrap()
            .contains("create it on new"),
        "{doc}"
    );
    assert_eq!(doc["groups"]["GA"], serde_json::json!(["%RETRY%GA", "T"]));

    let (_, body) = http(sidecar.admin_addr, "GET", "/preflight?to=old", None).await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["missing"], serde_json::json!(["%RETRY%GA"]));

    for bad in ["/preflight?to=mars", "/preflight?cluster=new"] {
        let (status, body) = http(sidecar.admin_addr, "GET", bad, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
