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
