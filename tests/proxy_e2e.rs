//! The sidecar end to end against in-process fakes: route rewriting, relaying in both
//! directions, broker-name mapping, switching, restart with persisted state, and the
//! isolation of bad connections.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rocketmq_sidecar::protocol::{encode_frame, SerializeType};
use serde_json::Value;
use support::*;

fn routes(topic: &str, body: String) -> HashMap<String, String> {
    HashMap::from([(topic.to_owned(), body)])
}

/// Asks the sidecar for `topic`'s route; returns (code, parsed body).
async fn route_of(
    ns: SocketAddr,
    topic: &str,
    opaque: i32,
) -> (i32, Option<Value>, Option<String>) {
    let mut c = FrameClient::connect(ns).await;
    let (h, body) = c
        .call(&request(105, opaque, &[("topic", topic)]), b"")
        .await;
    let v = (!body.is_empty()).then(|| serde_json::from_slice(&body).expect("standard JSON"));
    (h.code, v, h.remark)
}

fn master_of(route: &Value) -> (String, SocketAddr) {
    let bd = &route["brokerDatas"][0];
    let addr = bd["brokerAddrs"]["0"]
        .as_str()
        .expect("master address")
        .parse()
        .expect("addr");
    (bd["brokerName"].as_str().expect("name").to_owned(), addr)
}

#[tokio::test]
async fn route_answer_points_at_local_listeners_and_relays_to_the_broker() {
    let broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let ns = FakeNameServer::start(routes("T", fastjson_route("broker-a", broker.addr))).await;
    let sidecar = start_sidecar(&sidecar_config(ns.addr, None, "127.71.0.0/16", None)).await;

    let (code, route, _) = route_of(sidecar.namesrv_addr, "T", 1).await;
    assert_eq!(code, 0);
    let route = route.expect("route body");
    let (name, local) = master_of(&route);
    assert_eq!(name, "broker-a", "old cluster names are unchanged");
    assert_ne!(local, broker.addr, "the app must be given a local listener");
    assert!(
        local.to_string().starts_with("127.71."),
        "listener inside broker_bind: {local}"
    );
    assert_eq!(route["queueDatas"][0]["brokerName"], "broker-a");
    assert_eq!(
        route["brokerDatas"][0]["enableActingMaster"], false,
        "unknown fields are kept"
    );

    // A send through the main listener and one through the VIP twin reach the same broker.
    let send = request(310, 7, &[("a", "PG"), ("b", "T"), ("n", "broker-a")]);
    let mut app = FrameClient::connect(local).await;
    let (resp, _) = app.call(&send, b"hello").await;
    assert_eq!(resp.ext("handledBy"), Some("old-a"));
    let vip = SocketAddr::new(local.ip(), local.port() - 2);
    let mut app_vip = FrameClient::connect(vip).await;
    let (resp, _) = app_vip.call(&request(310, 8, &[("b", "T")]), b"x").await;
    assert_eq!(resp.ext("handledBy"), Some("old-a"));
    assert_eq!(broker.seen_code(310).len(), 2);
}

#[tokio::test]
async fn frames_that_need_no_change_arrive_byte_for_byte_in_both_header_forms() {
    let broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let ns = FakeNameServer::start(routes("T", fastjson_route("broker-a", broker.addr))).await;
    let sidecar = start_sidecar(&sidecar_config(ns.addr, None, "127.72.0.0/16", None)).await;
    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 1).await;
    let (_, local) = master_of(&route.expect("route"));

    let mut app = FrameClient::connect(local).await;
    let json = request(34, 1, &[("x", "1")]).encode_frame(b"{\"clientID\":\"c1\"}");
    app.send_raw(&json).await;
    let mut bin_header = request(11, 2, &[("topic", "T"), ("queueId", "0")]);
    bin_header.language = "GO".into();
    let binary = encode_frame(SerializeType::RocketMq, &bin_header.to_binary(), b"");
    app.send_raw(&binary).await;
    assert_eventually!(
        broker.seen.lock().unwrap().len() == 2,
        5,
        "broker got both frames"
    );
    let seen = broker.seen.lock().unwrap().clone();
    assert_eq!(seen[0].2, json.to_vec());
    assert_eq!(seen[1].2, binary.to_vec());
}

#[tokio::test]
async fn error_answers_and_other_codes_pass_through_unchanged() {
    let ns = FakeNameServer::start(HashMap::new()).await;
    let sidecar = start_sidecar(&sidecar_config(ns.addr, None, "127.73.0.0/16", None)).await;
    let (code, body, remark) = route_of(sidecar.namesrv_addr, "missing", 3).await;
    assert_eq!(code, 17);
    assert!(body.is_none());
    assert_eq!(
        remark.as_deref(),
        Some("No topic route info in name server")
    );

    let mut c = FrameClient::connect(sidecar.namesrv_addr).await;
    let (h, body) = c.call(&request(206, 9, &[]), b"").await;
    assert_eq!((h.code, h.opaque), (0, 9));
    assert_eq!(&body[..], b"echo:206");
}

#[tokio::test]
async fn held_pull_is_not_cut_short_and_broker_requests_reach_the_client() {
    let broker = FakeBroker::start("old-a", Duration::from_secs(3)).await;
    let ns = FakeNameServer::start(routes("T", fastjson_route("broker-a", broker.addr))).await;
    let sidecar = start_sidecar(&sidecar_config(ns.addr, None, "127.74.0.0/16", None)).await;
    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 1).await;
    let (_, local) = master_of(&route.expect("route"));

    let mut app = FrameClient::connect(local).await;
    app.send(
        &request(11, 40, &[("topic", "T"), ("suspendTimeoutMillis", "15000")]),
        b"",
    )
    .await;
    assert_eventually!(
        !broker.seen_code(11).is_empty(),
        5,
        "pull reached the broker"
    );
    // While the pull is held, the broker asks the client something (NOTIFY_CONSUMER_IDS_CHANGED
    // is oneway, GET_CONSUMER_RUNNING_INFO expects an answer).
    broker
        .push(&request(40, 500, &[("consumerGroup", "G")]), b"")
        .await;
    broker
        .push(&request(307, 501, &[("consumerGroup", "G")]), b"")
        .await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let f = app.next().await.expect("frame");
        got.push((f.is_response(), f.code(), f.opaque()));
        if !f.is_response() && f.code() == 307 {
            let reply = as_response(rocketmq_sidecar::protocol::Header::response_to(
                &header_of(&f),
                0,
                None,
            ));
            app.send(&reply, b"{\"properties\":{}}").await;
        }
    }
    assert!(got.contains(&(false, 40, 500)));
    assert!(got.contains(&(false, 307, 501)));
    assert!(
        got.contains(&(true, 0, 40)),
        "the held pull was answered: {got:?}"
    );
    assert_eventually!(
        broker.client_replies.lock().unwrap().len() == 1,
        5,
        "the client's reply reached the broker"
    );
    assert_eq!(broker.client_replies.lock().unwrap()[0].0.opaque, 501);
}

#[tokio::test]
async fn switch_moves_route_answers_and_keeps_broker_names_distinct() {
    // Both clusters have a broker called broker-a.
    let old_broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let new_broker = FakeBroker::start("new-a", Duration::ZERO).await;
    let old_ns =
        FakeNameServer::start(routes("T", fastjson_route("broker-a", old_broker.addr))).await;
    let new_ns =
        FakeNameServer::start(routes("T", fastjson_route("broker-a", new_broker.addr))).await;
    let sidecar = start_sidecar(&sidecar_config(
        old_ns.addr,
        Some(new_ns.addr),
        "127.75.0.0/16",
        None,
    ))
    .await;

    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 1).await;
    let (old_name, old_local) = master_of(&route.expect("route"));
    assert_eq!(old_name, "broker-a");
    let mut old_conn = FrameClient::connect(old_local).await;

    let (status, body) = put_route(sidecar.admin_addr, "new").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (doc["target"].as_str(), doc["generation"].as_u64()),
        (Some("new"), Some(1))
    );

    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 2).await;
    let route = route.expect("route");
    let (new_name, new_local) = master_of(&route);
    assert_eq!(
        new_name, "new~broker-a",
        "new cluster names carry the prefix"
    );
    assert_eq!(route["queueDatas"][0]["brokerName"], "new~broker-a");
    assert_ne!(new_local, old_local);

    // The connection opened before the switch still reaches the old broker.
    let (resp, _) = old_conn
        .call(&request(310, 3, &[("b", "T"), ("n", "broker-a")]), b"m")
        .await;
    assert_eq!(resp.ext("handledBy"), Some("old-a"));

    // Requests to the new broker carry the upstream name again.
    let mut new_conn = FrameClient::connect(new_local).await;
    let (resp, _) = new_conn
        .call(
            &request(
                310,
                4,
                &[("b", "T"), ("n", "new~broker-a"), ("bname", "new~broker-a")],
            ),
            b"m",
        )
        .await;
    assert_eq!(resp.ext("handledBy"), Some("new-a"));
    let sent = new_broker.seen_code(310);
    assert_eq!(sent[0].0.ext("n"), Some("broker-a"));
    assert_eq!(sent[0].0.ext("bname"), Some("broker-a"));

    // LOCK_BATCH_MQ: names in the body mapped back, names in the answer mapped forward.
    let lock_body = br#"{"clientId":"c","consumerGroup":"G","mqSet":[{"brokerName":"new~broker-a","queueId":0,"topic":"T"}]}"#;
    let (_, answer) = new_conn.call(&request(41, 5, &[]), lock_body).await;
    let locked = new_broker.seen_code(41);
    assert!(String::from_utf8_lossy(&locked[0].1).contains("\"brokerName\":\"broker-a\""));
    assert!(String::from_utf8_lossy(&answer).contains("\"brokerName\":\"new~broker-a\""));

    // Broker -> client: CONSUME_MESSAGE_DIRECTLY names the broker as the app knows it.
    new_broker
        .push(
            &request(
                309,
                77,
                &[("brokerName", "broker-a"), ("consumerGroup", "G")],
            ),
            b"",
        )
        .await;
    let pushed = new_conn.next().await.expect("pushed request");
    assert_eq!(header_of(&pushed).ext("brokerName"), Some("new~broker-a"));

    // Idempotent switch: same target, same generation.
    let (status, body) = put_route(sidecar.admin_addr, "new").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["generation"].as_u64(), Some(1));
}

#[tokio::test]
async fn bad_frame_closes_only_its_own_connection() {
    let broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let ns = FakeNameServer::start(routes("T", fastjson_route("broker-a", broker.addr))).await;
    let config = format!(
        "frame_max_bytes = 4096\n{}",
        sidecar_config(ns.addr, None, "127.76.0.0/16", None)
    );
    let sidecar = start_sidecar(&config).await;
    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 1).await;
    let (_, local) = master_of(&route.expect("route"));

    let mut good = FrameClient::connect(local).await;
    let mut bad_type = FrameClient::connect(local).await;
    let mut too_big = FrameClient::connect(local).await;
    let mut bad_ns = FrameClient::connect(sidecar.namesrv_addr).await;

    bad_type
        .send_raw(&[0, 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0])
        .await; // serialize type 7
    too_big.send_raw(&[0, 16, 0, 0, 0, 0, 0, 2]).await; // claims 1 MiB, limit 4 KiB
    bad_ns.send_raw(&[0, 0, 0, 6, 0, 0, 0, 2, b'{', b'}']).await; // JSON header without code
    assert!(
        bad_type.closed().await,
        "unknown serialize type closes the connection"
    );
    assert!(
        too_big.closed().await,
        "oversized frame closes the connection"
    );
    assert!(
        bad_ns.closed().await,
        "bad name-server frame closes the connection"
    );

    let (resp, _) = good.call(&request(310, 1, &[("b", "T")]), b"ok").await;
    assert_eq!(
        resp.ext("handledBy"),
        Some("old-a"),
        "other connections carry on"
    );
    let (code, _, _) = route_of(sidecar.namesrv_addr, "T", 2).await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn restart_restores_target_and_listeners_before_ready() {
    let dir = tempdir();
    let broker = FakeBroker::start("new-a", Duration::ZERO).await;
    let old_ns = FakeNameServer::start(HashMap::new()).await;
    let new_ns = FakeNameServer::start(routes("T", fastjson_route("broker-b", broker.addr))).await;
    let config = sidecar_config(old_ns.addr, Some(new_ns.addr), "127.77.0.0/16", Some(&dir));

    let first = start_sidecar(&config).await;
    let (status, _) = put_route(first.admin_addr, "new").await;
    assert_eq!(status, 200);
    let (_, route, _) = route_of(first.namesrv_addr, "T", 1).await;
    let (_, local) = master_of(&route.expect("route"));
    drop(first);
    // The aborted accept tasks release their sockets at their next poll, as a process
    // exit would at once.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = start_sidecar(&config).await;
    assert_eq!(
        second
            .route
            .current()
            .whole()
            .map(|t| t.as_str())
            .unwrap_or("split"),
        "new",
        "never silently back to old"
    );
    assert_eq!(second.route.current().generation, 1);
    // The listener the app was given is open again, before any new route query.
    let mut app = FrameClient::connect(local).await;
    let (resp, _) = app.call(&request(310, 2, &[("b", "T")]), b"x").await;
    assert_eq!(resp.ext("handledBy"), Some("new-a"));
    let (_, body) = http(second.health_addr, "GET", "/route", None).await;
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["target"], "new");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn admin_refuses_invalid_requests_and_keeps_state() {
    let ns = FakeNameServer::start(HashMap::new()).await;
    let sidecar = start_sidecar(&sidecar_config(ns.addr, None, "127.78.0.0/16", None)).await;
    for (body, needle) in [
        ("{\"target\":\"sideways\"}", "unknown target"),
        ("not json", "body must be JSON"),
        ("{\"target\":\"new\",\"extra\":1}", "unknown field"),
        ("{\"target\":\"new\"}", "no name servers configured"),
    ] {
        let (status, text) = http(sidecar.admin_addr, "PUT", "/route", Some(body)).await;
        assert_eq!(status, 400, "{body} -> {text}");
        assert!(text.contains(needle), "{body} -> {text}");
    }
    assert_eq!(
        sidecar.route.current().whole().map(|t| t.as_str()),
        Some("old")
    );
    assert_eq!(sidecar.route.current().generation, 0);
    let (status, _) = put_route(sidecar.health_addr, "old").await;
    assert_eq!(status, 405, "the health port is read-only");
    let (status, _) = http(sidecar.admin_addr, "GET", "/nope", None).await;
    assert_eq!(status, 404);
    let (status, _) = http(sidecar.health_addr, "GET", "/live", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn ready_waits_for_the_name_server_and_failover_is_remembered() {
    // Nothing listens on the first name server; the second answers.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let unreachable = start_sidecar(&sidecar_config(dead_addr, None, "127.79.0.0/16", None)).await;
    let (status, _) = http(unreachable.health_addr, "GET", "/ready", None).await;
    assert_eq!(status, 503);
    let ns = FakeNameServer::start(HashMap::new()).await;
    let config = sidecar_config(dead_addr, None, "127.79.0.0/16", None).replace(
        &format!("namesrv = \"{dead_addr}\""),
        &format!("namesrv = \"{dead_addr};{}\"", ns.addr),
    );
    let sidecar = start_sidecar(&config).await;
    let addr = sidecar.health_addr;
    assert_eventually!(
        http(addr, "GET", "/ready", None).await.0 == 200,
        10,
        "ready once a name server answered"
    );
    let (_, body) = http(addr, "GET", "/route", None).await;
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        doc["clusters"]["old"]["preferred_namesrv"],
        ns.addr.to_string()
    );
    let (_, body) = http(unreachable.health_addr, "GET", "/route", None).await;
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert!(
        doc["last_failure"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("no name server"),
        "{doc}"
    );
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rmq-sidecar-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).expect("tempdir");
    d
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[tokio::test]
async fn connections_to_a_cluster_the_pod_left_are_retired_once_idle() {
    let old_broker = FakeBroker::start("old-a", Duration::from_secs(3)).await;
    let new_broker = FakeBroker::start("new-a", Duration::ZERO).await;
    let old_ns =
        FakeNameServer::start(routes("T", fastjson_route("broker-a", old_broker.addr))).await;
    let new_ns =
        FakeNameServer::start(routes("T", fastjson_route("broker-b", new_broker.addr))).await;
    let config = sidecar_config(old_ns.addr, Some(new_ns.addr), "127.82.0.0/16", None)
        .replace("[upstream]\n", "[upstream]\nretire_idle_seconds = 1\n");
    let sidecar = start_sidecar(&config).await;
    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 1).await;
    let (_, old_local) = master_of(&route.expect("route"));

    let mut idle_old = FrameClient::connect(old_local).await;
    idle_old.call(&request(34, 1, &[]), b"{}").await;
    let mut pulling_old = FrameClient::connect(old_local).await;
    pulling_old.call(&request(34, 2, &[]), b"{}").await;

    // While old is still the target, idleness alone closes nothing.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (resp, _) = idle_old.call(&request(30, 3, &[("topic", "T")]), b"").await;
    assert_eq!(resp.ext("handledBy"), Some("old-a"));

    put_route(sidecar.admin_addr, "new").await;
    // A pull held by the old broker is in flight: that connection must survive until the
    // answer arrives (3 s), even though the app sends nothing meanwhile.
    pulling_old
        .send(&request(11, 4, &[("topic", "T")]), b"")
        .await;
    let f = pulling_old
        .next()
        .await
        .expect("the held pull is answered, not cut");
    assert_eq!((f.is_response(), f.opaque()), (true, 4));
    assert!(
        idle_old.closed().await,
        "idle connection to the old cluster is retired"
    );
    assert!(
        pulling_old.closed().await,
        "retired once its pull was answered and it went idle"
    );

    // Connections to the current target stay open however idle they are.
    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 5).await;
    let (_, new_local) = master_of(&route.expect("route"));
    let mut on_new = FrameClient::connect(new_local).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (resp, _) = on_new.call(&request(34, 6, &[]), b"{}").await;
    assert_eq!(resp.ext("handledBy"), Some("new-a"));
}

#[tokio::test]
async fn on_a_renaming_connection_only_frames_naming_a_broker_change() {
    // The new cluster's names are prefixed (new~) and it has no credentials: a request that
    // names no prefixed broker goes as it came (the rewriter now decides this from the
    // frame's bytes, without decoding it: benches/codec.rs measures that); one that does
    // has the name mapped.
    let broker = FakeBroker::start("new-a", Duration::ZERO).await;
    let ns = FakeNameServer::start(routes("T", fastjson_route("broker-a", broker.addr))).await;
    let config = sidecar_config(ns.addr, Some(ns.addr), "127.73.0.0/16", None)
        .replace("target = \"old\"", "target = \"new\"");
    let sidecar = start_sidecar(&config).await;
    let (_, route, _) = route_of(sidecar.namesrv_addr, "T", 1).await;
    let (name, local) = master_of(&route.expect("route"));
    assert_eq!(name, "new~broker-a");

    let mut app = FrameClient::connect(local).await;
    // A JSON header spelled as a client might (spaces, key order).
    let plain_header = br#"{"code": 11, "flag": 0, "language": "JAVA", "opaque": 1, "extFields": {"topic": "T", "queueId": "0"}, "version": 479}"#;
    let plain = encode_frame(SerializeType::Json, plain_header, b"");
    app.send_raw(&plain).await;
    let named = request(310, 2, &[("b", "T"), ("n", "new~broker-a")]);
    app.send(&named, b"body").await;
    assert_eventually!(
        broker.seen.lock().unwrap().len() == 2,
        5,
        "broker got both frames"
    );
    let seen = broker.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].2,
        plain.to_vec(),
        "a frame naming no broker was changed"
    );
    assert_eq!(
        seen[1].0.ext("n"),
        Some("broker-a"),
        "the prefixed name was not mapped"
    );
    assert_eq!(&seen[1].1[..], b"body");
}
