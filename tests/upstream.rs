//! The sidecar's own name-server client (`proxy::upstream`) through a running sidecar: a
//! hung name server first in the list must not hold the app's route queries past the Java
//! client's own 3 s timeout, concurrent queries must not queue behind one connect, and once
//! it failed it is tried last.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;
use tokio::net::TcpListener;

/// What a Java client waits for a name server's answer before it gives up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_hung_name_server_first_in_the_list_does_not_hold_queries() {
    // Accepts and never answers: every request to it would wait for the full timeout.
    let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    let broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let good = FakeNameServer::start(HashMap::from([(
        "T".to_owned(),
        fastjson_route("broker-a", broker.addr),
    )]))
    .await;
    // A long per-name-server timeout: waiting for it would take 10 s per query.
    let config = sidecar_config(good.addr, None, "127.85.0.0/16", None)
        .replace(
            &format!("namesrv = \"{}\"", good.addr),
            &format!("namesrv = \"{hung_addr};{}\"", good.addr),
        )
        .replace("namesrv_timeout_ms = 1000", "namesrv_timeout_ms = 10000");
    assert!(config.contains(&hung_addr.to_string()), "{config}");
    let sidecar = start_sidecar(&config).await;

    // Twenty queries at once, each on its own connection, as twenty clients would send them.
    let queries: Vec<_> = (0..20)
        .map(|i| {
            let ns = sidecar.namesrv_addr;
            tokio::spawn(async move {
                let mut c = FrameClient::connect(ns).await;
                let asked = Instant::now();
                let (h, _) = c.call(&request(105, i, &[("topic", "T")]), b"").await;
                (h.code, asked.elapsed())
            })
        })
        .collect();
    for q in queries {
        let (code, took) = q.await.unwrap();
        assert_eq!(code, 0, "answered by the second name server");
        assert!(
            took < CLIENT_TIMEOUT,
            "a query waited {took:?}: the client would have given up"
        );
    }
    // Once it failed, the hung one is tried last: the next query does not go there first.
    let seen_before = good.seen.lock().unwrap().len();
    let mut c = FrameClient::connect(sidecar.namesrv_addr).await;
    let asked = Instant::now();
    let (h, _) = c.call(&request(105, 99, &[("topic", "T")]), b"").await;
    assert_eq!(h.code, 0);
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "the hung name server was tried first again ({:?})",
        asked.elapsed()
    );
    assert_eq!(good.seen.lock().unwrap().len(), seen_before + 1);
    let (_, route) = http(sidecar.admin_addr, "GET", "/route", None).await;
    assert!(
        route.contains(&format!("\"preferred_namesrv\": \"{}\"", good.addr)),
        "{route}"
    );
    holder.abort();
}
