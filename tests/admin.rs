//! The operator endpoints of the admin API: config (secrets redacted), connections,
//! drain, shutdown refusal, log level; and what the health port refuses.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn config_connections_and_drain() {
    let broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", broker.addr),
    )]))
    .await;
    let dir = tempdir("admin");
    std::fs::write(dir.join("sk"), "never-show-this-secret").unwrap();
    let cfg = sidecar_config(ns.addr, None, "127.89.0.0/16", None)
        + &format!(
            "access_key = \"ak-visible\"\nsecret_key_file = \"{}\"\n",
            dir.join("sk").display()
        );
    let sidecar = start_sidecar(&cfg).await;
    let admin = sidecar.admin_addr;

    let (status, body) = http(admin, "GET", "/config", None).await;
    assert_eq!(status, 200);
    assert!(!body.contains("never-show-this-secret"), "{body}");
    let cfg: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["clusters"]["old"]["namesrv"][0], ns.addr.to_string());
    assert!(cfg["clusters"]["old"]["credentials"]
        .as_str()
        .unwrap()
        .contains("SecretKey: file"));
    assert_eq!(cfg["listen"]["broker_bind"], "127.89.0.0/16");

    // One relay open to the broker, one name-server connection.
    let mut c = FrameClient::connect(sidecar.namesrv_addr).await;
    let (_, route) = c.call(&request(105, 1, &[("topic", "T")]), b"").await;
    let v: Value = serde_json::from_slice(&route).unwrap();
    let local: std::net::SocketAddr = v["brokerDatas"][0]["brokerAddrs"]["0"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut app = FrameClient::connect(local).await;
    app.call(&request(34, 2, &[]), b"{}").await;
    let (_, body) = http(admin, "GET", "/connections", None).await;
    let conns: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(conns["by_listener"]["broker"], 1, "{conns}");
    assert_eq!(conns["by_listener"]["namesrv"], 1, "{conns}");
    assert_eq!(conns["upstreams"][0]["upstream"], broker.addr.to_string());
    assert_eq!(conns["upstreams"][0]["open"], 1);

    // Shutdown is off by default; the health port refuses mutations.
    let (status, body) = http(admin, "POST", "/shutdown", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("enable_shutdown"));
    let (status, _) = http(sidecar.health_addr, "POST", "/drain", None).await;
    assert_eq!(status, 404);

    // The log filter of an in-process sidecar is fixed: reads work, changes are refused.
    let (status, body) = http(admin, "GET", "/log-level", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        admin,
        "PUT",
        "/log-level",
        Some("{\"filter\":\"not a = valid filter ===\"}"),
    )
    .await;
    assert_eq!(status, 400);

    // Drain: idle connections close, new ones are refused.
    let (status, body) = http(admin, "POST", "/drain", None).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        app.closed().await,
        "idle broker connection closed by the drain"
    );
    assert!(
        c.closed().await,
        "name-server connection closed by the drain"
    );
    assert_eventually!(
        tokio::net::TcpStream::connect(sidecar.namesrv_addr)
            .await
            .is_err(),
        5,
        "no new app connections"
    );
    assert_eventually!(
        tokio::net::TcpStream::connect(local).await.is_err(),
        5,
        "broker listener closed"
    );
    let (_, body) = http(admin, "GET", "/metrics", None).await;
    assert!(
        body.contains(r#"rmq_sidecar_admin_mutations_total{endpoint="drain",outcome="applied"} 1"#),
        "{body}"
    );
    assert!(body
        .contains(r#"rmq_sidecar_admin_mutations_total{endpoint="shutdown",outcome="refused"} 1"#));
    std::fs::remove_dir_all(&dir).ok();
}

/// The handlers answer requests held in memory: nothing is bound or connected.
#[tokio::test]
async fn handlers_answer_in_memory_from_the_endpoint_table() {
    use bytes::Bytes;
    use rocketmq_sidecar::admin::{self, Port, ENDPOINTS};
    use rocketmq_sidecar::config::Config;
    use rocketmq_sidecar::App;

    let env: HashMap<String, String> = HashMap::new();
    // Name servers that are never contacted (no server runs there): the gates, which
    // would read them before a switch, are off here and tested in tests/gates.rs.
    let cfg = Config::from_toml_str(
        "[gates]\nenabled = false\n[clusters.old]\nnamesrv = \"127.0.0.1:1\"\n[clusters.new]\nnamesrv = \"127.0.0.1:2\"\n",
        &env,
    )
    .unwrap();
    let core = App::new(cfg).core().unwrap();
    let state = core.admin_state();
    let loopback: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let call = |port: Port, method: &str, path: &str, body: &str| {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(Bytes::from(body.to_owned()))
            .unwrap();
        let state = state.clone();
        async move {
            let r = admin::handle(&state, port, loopback, req).await;
            let status = r.status().as_u16();
            let allow = r
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, allow, String::from_utf8_lossy(&body).into_owned())
        }
    };

    // GET / is the table.
    let (status, _, body) = call(Port::Admin, "GET", "/", "").await;
    assert_eq!(status, 200);
    let index: Value = serde_json::from_str(&body).unwrap();
    let listed: Vec<(String, String)> = index["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let table: Vec<(String, String)> = ENDPOINTS
        .iter()
        .map(|e| (e.method.to_owned(), e.path.to_owned()))
        .collect();
    assert_eq!(listed, table);

    // 405 names what is allowed; 404 says where the list is.
    let (status, allow, body) = call(Port::Admin, "DELETE", "/route", "").await;
    assert_eq!(
        (status, allow.as_deref()),
        (405, Some("GET, PUT")),
        "{body}"
    );
    let (status, _, body) = call(Port::Admin, "GET", "/nope", "").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("GET / on the admin port lists them"),
        "{body}"
    );

    // The health port: reads only, admin paths do not exist there.
    let (status, allow, body) = call(Port::Health, "PUT", "/route", "{}").await;
    assert_eq!((status, allow.as_deref()), (405, Some("GET")), "{body}");
    assert!(body.contains("read-only"), "{body}");
    let (status, _, _) = call(Port::Health, "GET", "/config", "").await;
    assert_eq!(status, 404);
    let (status, _, body) = call(Port::Health, "GET", "/route", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["target"],
        "old"
    );

    // A refused switch changes nothing; a valid one switches, persisted nowhere (no
    // state dir) but published.
    for bad in [
        r#"{"target":"sideways"}"#,
        r#"["new"]"#,
        "not json",
        r#"{"target":"new","x":1}"#,
    ] {
        let (status, _, body) = call(Port::Admin, "PUT", "/route", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(
            state.route.current().whole(),
            Some(rocketmq_sidecar::Target::Old)
        );
    }
    let (status, _, body) = call(Port::Admin, "PUT", "/route", r#"{"target":"new"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state.route.current().whole(),
        Some(rocketmq_sidecar::Target::New)
    );
    assert_eq!(state.route.current().generation, 1);

    // Mutations from elsewhere than loopback are refused without a token.
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/drain")
        .body(Bytes::new())
        .unwrap();
    let remote: std::net::SocketAddr = "10.1.2.3:5555".parse().unwrap();
    let r = admin::handle(&state, Port::Admin, remote, req).await;
    assert_eq!(r.status().as_u16(), 403);
    assert!(!*state.ctx.draining.borrow(), "a refused drain drained");
    let (body, _) = state.ctx.metrics.encode();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(
            r#"rmq_sidecar_admin_mutations_total{endpoint="drain",outcome="unauthorized"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"rmq_sidecar_admin_mutations_total{endpoint="route",outcome="invalid"} 4"#),
        "{text}"
    );
}
