//! Broker listeners (`proxy::listeners`) through a running sidecar: while a broker refuses
//! connections its local listener is closed, so the app's connect is refused at once as it
//! would be by the broker itself; when the broker accepts again, so does the listener.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn a_listener_is_closed_while_its_broker_refuses_and_reopened_after() {
    let broker_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker_addr: SocketAddr = broker_listener.local_addr().unwrap();
    // The broker is not running yet: its port refuses.
    drop(broker_listener);
    let ns = FakeNameServer::start(HashMap::from([(
        "T".to_owned(),
        fastjson_route("broker-a", broker_addr),
    )]))
    .await;
    let sidecar = start_sidecar(&sidecar_config(ns.addr, None, "127.86.0.0/16", None)).await;
    let local = local_master(sidecar.namesrv_addr, "T").await;

    // The first connect is accepted (the sidecar cannot know yet) and closed at once ...
    let mut first = FrameClient::connect(local).await;
    assert!(first.closed().await);
    // ... after which the listener is closed: connects are refused, as by the broker.
    assert_eventually!(
        TcpStream::connect(local).await.is_err(),
        5,
        "the listener still accepts while its broker refuses"
    );
    let (_, metrics) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains(r#"rmq_sidecar_broker_listeners_down{target="old"} 2"#),
        "main and VIP listeners closed: {metrics}"
    );

    // The broker comes back on its port: the listener reopens and relays.
    let back = TcpListener::bind(broker_addr).await.unwrap();
    let _broker = FakeBroker::serve(back, "b", Duration::ZERO, None);
    assert_eventually!(
        TcpStream::connect(local).await.is_ok(),
        5,
        "the listener was not reopened once the broker accepted again"
    );
    let mut c = FrameClient::connect(local).await;
    let (h, _) = c.call(&request(310, 1, &[("b", "T")]), b"x").await;
    assert_eq!((h.code, h.ext("handledBy")), (0, Some("b")));
    let (_, metrics) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains(r#"rmq_sidecar_broker_listeners_down{target="old"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broker_that_dies_has_its_listener_closed_before_the_apps_connection() {
    // A broker the test holds: it accepts the sidecar's connection, then "dies" as a killed
    // process does: its connection is closed, and its listening socket a moment later (a
    // connect in between lands in the backlog and is reset when the socket goes).
    let broker_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker_addr: SocketAddr = broker_listener.local_addr().unwrap();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let (die_tx, die_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (conn, _) = broker_listener.accept().await.unwrap();
        accepted_tx.send(()).unwrap();
        let _ = die_rx.await;
        drop(conn);
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(broker_listener);
    });
    let ns = FakeNameServer::start(HashMap::from([(
        "T".to_owned(),
        fastjson_route("broker-a", broker_addr),
    )]))
    .await;
    let sidecar = start_sidecar(&sidecar_config(ns.addr, None, "127.87.0.0/16", None)).await;
    let local = local_master(sidecar.namesrv_addr, "T").await;
    let mut app = FrameClient::connect(local).await;
    tokio::time::timeout(Duration::from_secs(5), accepted_rx)
        .await
        .unwrap()
        .unwrap();

    die_tx.send(()).unwrap();
    assert!(app.closed().await);
    // The app reconnects at once, as a client does for its next request: refused, so
    // it sends to another broker instead of waiting on an accepted connection that the
    // sidecar can only close (a Java client waits for its 3 s request timeout there).
    assert!(
        TcpStream::connect(local).await.is_err(),
        "the app's reconnect was accepted after its broker died"
    );
}
