//! Name-server body rewriting: fastjson's bare keys, address replacement, broker-name
//! mapping, and broker names inside otherwise untouched JSON bodies.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use rocketmq_sidecar::protocol::names::map_broker_names;
use rocketmq_sidecar::protocol::route::{self, RouteMapper};
use serde_json::Value;

struct Map {
    locals: HashMap<&'static str, &'static str>,
    prefix: &'static str,
}

impl RouteMapper for Map {
    fn local_addr(&self, upstream: &str) -> Option<String> {
        self.locals.get(upstream).map(|s| s.to_string())
    }
    fn client_name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }
}

fn mapper(prefix: &'static str) -> Map {
    Map {
        locals: HashMap::from([
            ("10.0.0.11:10911", "127.1.0.5:10911"),
            ("10.0.0.12:10911", "127.1.0.6:10911"),
            ("10.0.0.21:10911", "127.1.0.7:10911"),
        ]),
        prefix,
    }
}

#[test]
fn fastjson_route_parses_and_is_rewritten_keeping_ids_and_fields() {
    let body = include_str!("fixtures/route_fastjson_master_slave.json");
    assert!(
        serde_json::from_str::<Value>(body).is_err(),
        "fixture is non-standard JSON"
    );
    let mut v = route::parse_lenient(body.as_bytes()).unwrap();
    let addrs = route::broker_addresses(&v);
    assert_eq!(addrs.len(), 3);
    route::rewrite_topic_route(&mut v, &mapper("new~")).unwrap();
    let out = String::from_utf8(route::to_compact_json(&v)).unwrap();
    assert_eq!(
        out,
        r#"{"brokerDatas":[{"brokerAddrs":{"0":"127.1.0.5:10911","1":"127.1.0.6:10911"},"brokerName":"new~broker-a","cluster":"DefaultCluster","enableActingMaster":false},{"brokerAddrs":{"0":"127.1.0.7:10911"},"brokerName":"new~broker-b","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"new~broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4},{"brokerName":"new~broker-b","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
    );
}

#[test]
fn standard_json_route_is_read_too() {
    let body = include_str!("fixtures/route_fastjson_master_slave.json")
        .replace("{0:", "{\"0\":")
        .replace(",1:", ",\"1\":");
    let mut v = route::parse_lenient(body.as_bytes()).unwrap();
    route::rewrite_topic_route(&mut v, &mapper("")).unwrap();
    assert_eq!(v["brokerDatas"][0]["brokerAddrs"]["1"], "127.1.0.6:10911");
    assert_eq!(v["brokerDatas"][0]["brokerName"], "broker-a");
}

#[test]
fn order_conf_filter_servers_and_static_mappings_are_mapped() {
    let body = r#"{"brokerDatas":[],"queueDatas":[],"orderTopicConf":"broker-a:4;broker-b:8","filterServerTable":{"10.0.0.11:10911":["10.0.0.99:1"]},"topicQueueMappingByBroker":{"broker-a":{"bname":"broker-a","currIdMap":{0:0},"epoch":1}}}"#;
    let mut v = route::parse_lenient(body.as_bytes()).unwrap();
    route::rewrite_topic_route(&mut v, &mapper("new~")).unwrap();
    assert_eq!(v["orderTopicConf"], "new~broker-a:4;new~broker-b:8");
    assert_eq!(v["filterServerTable"]["127.1.0.5:10911"][0], "10.0.0.99:1");
    assert_eq!(
        v["topicQueueMappingByBroker"]["new~broker-a"]["bname"],
        "new~broker-a"
    );
}

#[test]
fn cluster_info_and_topic_list_are_rewritten() {
    let mut v =
        route::parse_lenient(include_bytes!("fixtures/cluster_info_fastjson.json")).unwrap();
    route::rewrite_cluster_info(&mut v, &mapper("new~")).unwrap();
    assert_eq!(
        v["brokerAddrTable"]["new~broker-a"]["brokerAddrs"]["0"],
        "127.1.0.5:10911"
    );
    assert_eq!(v["clusterAddrTable"]["DefaultCluster"][0], "new~broker-a");
    let mut t =
        route::parse_lenient(br#"{"topicList":["a"],"brokerAddr":"10.0.0.21:10911"}"#).unwrap();
    route::rewrite_topic_list(&mut t, &mapper("")).unwrap();
    assert_eq!(t["brokerAddr"], "127.1.0.7:10911");
}

#[test]
fn quoting_bare_keys_leaves_strings_alone() {
    let text = r#"{0:"a:{1:b}",12:{"k\"q":[1,{3:true}]}}"#;
    let quoted = route::quote_bare_keys(text);
    assert_eq!(quoted, r#"{"0":"a:{1:b}","12":{"k\"q":[1,{"3":true}]}}"#);
    let v: Value = serde_json::from_str(&quoted).unwrap();
    assert_eq!(v["0"], "a:{1:b}");
}

#[test]
fn broken_body_is_an_error_not_a_panic() {
    assert!(route::parse_lenient(b"{\"brokerDatas\":[").is_err());
    let mut not_object = serde_json::json!([1, 2]);
    assert!(route::rewrite_topic_route(&mut not_object, &mapper("")).is_err());
}

#[test]
fn broker_names_in_object_keyed_maps_are_mapped() {
    // ResetOffsetBody as fastjson writes it: MessageQueue objects as map keys.
    let body = br#"{"offsetTable":{{"brokerName":"broker-a","queueId":0,"topic":"T"}:12,{"brokerName" : "broker-b","queueId":1,"topic":"brokerName"}:7}}"#;
    let out = map_broker_names(body, &|n| Some(format!("new~{n}"))).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"offsetTable":{{"brokerName":"new~broker-a","queueId":0,"topic":"T"}:12,{"brokerName" : "new~broker-b","queueId":1,"topic":"brokerName"}:7}}"#
    );
    let back = map_broker_names(
        br#"{"mqSet":[{"brokerName":"new~x"},{"brokerName":"old"}]}"#,
        &|n| n.strip_prefix("new~").map(str::to_owned),
    )
    .unwrap();
    assert_eq!(
        back,
        br#"{"mqSet":[{"brokerName":"x"},{"brokerName":"old"}]}"#.to_vec()
    );
    assert!(map_broker_names(b"{\"topic\":\"T\"}", &|n| Some(n.to_owned() + "!")).is_none());
    assert!(map_broker_names(b"{\"brokerName\":\"unterminated", &|_| Some("x".into())).is_none());
}

#[test]
fn routes_are_restricted_to_a_role_and_composed() {
    let body = |name: &str| {
        route::parse_lenient(format!(
            "{{\"brokerDatas\":[{{\"brokerAddrs\":{{0:\"10.0.0.1:10911\"}},\"brokerName\":\"{name}\",\"cluster\":\"C\"}}],\"filterServerTable\":{{}},\"orderTopicConf\":\"{name}:4\",\"queueDatas\":[{{\"brokerName\":\"{name}\",\"perm\":14,\"readQueueNums\":4,\"topicSysFlag\":0,\"writeQueueNums\":4}}]}}"
        ).as_bytes())
        .unwrap()
    };
    let mut producers = body("old-a");
    route::restrict_perm(&mut producers, route::perm::WRITE);
    let mut consumers = body("new~a");
    route::restrict_perm(&mut consumers, route::perm::READ);
    // Other bits (PRIORITY 8) stay; only READ/WRITE are narrowed.
    assert_eq!(producers["queueDatas"][0]["perm"], 10);
    assert_eq!(consumers["queueDatas"][0]["perm"], 12);
    assert_eq!(producers["orderTopicConf"], "old-a:4");
    assert!(
        consumers.get("orderTopicConf").is_none(),
        "producers build queues from orderTopicConf whatever the perms: dropped where they do not send"
    );
    let both = route::compose_routes(Some(producers.clone()), Some(consumers.clone())).unwrap();
    assert_eq!(both["brokerDatas"].as_array().unwrap().len(), 2);
    assert_eq!(both["queueDatas"].as_array().unwrap().len(), 2);
    assert_eq!(both["orderTopicConf"], "old-a:4");
    assert_eq!(
        route::compose_routes(None, Some(consumers.clone())),
        Some(consumers)
    );
    assert_eq!(route::compose_routes(None, None), None);

    let info = |names: &[&str]| {
        serde_json::json!({
            "brokerAddrTable": names.iter().map(|n| (n.to_string(), serde_json::json!({"brokerName": n}))).collect::<serde_json::Map<_, _>>(),
            "clusterAddrTable": {"DefaultCluster": names},
        })
    };
    let merged =
        route::compose_cluster_info(Some(info(&["a"])), Some(info(&["new~a", "a"]))).unwrap();
    assert_eq!(merged["brokerAddrTable"].as_object().unwrap().len(), 2);
    assert_eq!(
        merged["clusterAddrTable"]["DefaultCluster"],
        serde_json::json!(["a", "new~a"]),
        "names joined without repeats"
    );
}
