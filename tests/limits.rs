//! The caps of `[limits]` through a running sidecar: connections past a listener's cap are
//! closed at once and counted while open ones carry on; name-server requests past the
//! in-flight cap are answered SYSTEM_BUSY and counted; admin bodies past 64 KiB get 413
//! and change nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rocketmq_sidecar::protocol::code::response;
use support::*;
use tokio::net::TcpListener;

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn namesrv_connections_past_the_cap_are_refused_and_open_ones_carry_on() {
    let broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", broker.addr),
    )]))
    .await;
    let cfg = sidecar_config(ns.addr, None, "127.91.0.0/16", None)
        + "[limits]\nnamesrv_connections = 2\n";
    let sidecar = start_sidecar(&cfg).await;
    let route = request(105, 1, &[("topic", "T")]);

    let mut a = FrameClient::connect(sidecar.namesrv_addr).await;
    let mut b = FrameClient::connect(sidecar.namesrv_addr).await;
    for c in [&mut a, &mut b] {
        assert_eq!(c.call(&route, &[]).await.0.code, response::SUCCESS);
    }
    let mut refused = FrameClient::connect(sidecar.namesrv_addr).await;
    assert!(refused.closed().await, "a third connection was kept open");
    // The open ones still work.
    assert_eq!(a.call(&route, &[]).await.0.code, response::SUCCESS);
    let (_, text) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert_eq!(
        metric(
            &text,
            r#"rmq_sidecar_connections_refused_total{listener="namesrv"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"rmq_sidecar_connections_refused_total{listener="broker"}"#
        ),
        Some(0.0),
        "families the alerts use are there at 0 before any event"
    );
    // Closing one frees its place.
    drop(b);
    assert_eventually!(
        {
            let mut c = FrameClient::connect(sidecar.namesrv_addr).await;
            c.send(&route, &[]).await;
            c.next().await.is_some()
        },
        5,
        "a freed place is given to a new connection"
    );
}

#[tokio::test]
async fn namesrv_requests_past_the_inflight_cap_get_system_busy() {
    // A name server that accepts and never answers: every request stays in flight until
    // the sidecar's per-name-server timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let cfg = sidecar_config(silent_addr, None, "127.92.0.0/16", None)
        .replace("namesrv_timeout_ms = 1000", "namesrv_timeout_ms = 3000")
        + "[limits]\nnamesrv_inflight = 2\n";
    let sidecar = start_sidecar(&cfg).await;
    let mut c = FrameClient::connect(sidecar.namesrv_addr).await;
    for opaque in [1, 2] {
        c.send(&request(105, opaque, &[("topic", "T")]), &[]).await;
    }
    // Let both reach the role before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let (busy, _) = c.call(&request(105, 3, &[("topic", "T")]), &[]).await;
    assert_eq!(busy.code, response::SYSTEM_BUSY, "{busy:?}");
    assert!(
        busy.remark.as_deref().unwrap_or("").contains("[OVERLOAD]"),
        "{busy:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "SYSTEM_BUSY must not wait for the held requests"
    );
    // The held two are answered (SYSTEM_ERROR after the timeout); then requests are
    // accepted again.
    let mut answered = 0;
    while answered < 2 {
        let f = c.next().await.expect("answers to the held requests");
        if f.is_response() && [1, 2].contains(&f.opaque()) {
            assert_eq!(header_of(&f).code, response::SYSTEM_ERROR);
            answered += 1;
        }
    }
    c.send(&request(105, 4, &[("topic", "T")]), &[]).await;
    let (_, text) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert_eq!(
        metric(
            &text,
            r#"rmq_sidecar_namesrv_requests_refused_total{listener="namesrv"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let f = c.next().await.expect("an answer once places are free");
    assert_eq!(
        header_of(&f).code,
        response::SYSTEM_ERROR,
        "served (timed out upstream), not refused"
    );
    held.abort();
}

#[tokio::test]
async fn an_admin_body_over_64_kib_gets_413_and_changes_nothing() {
    let ns = FakeNameServer::start(HashMap::new()).await;
    let cfg = sidecar_config(ns.addr, Some(ns.addr), "127.93.0.0/16", None);
    let sidecar = start_sidecar(&cfg).await;
    let padding = " ".repeat(70 * 1024);
    let body = format!("{{\"target\":\"new\"{padding}}}");
    let (status, answer) = http(sidecar.admin_addr, "PUT", "/route", Some(&body)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("larger than 65536 bytes"), "{answer}");
    let (_, route) = http(sidecar.admin_addr, "GET", "/route", None).await;
    let route: serde_json::Value = serde_json::from_str(&route).unwrap();
    assert_eq!(route["target"], "old", "a refused body switched the route");
}

#[tokio::test]
async fn health_connections_past_the_cap_are_refused() {
    let ns = FakeNameServer::start(HashMap::new()).await;
    let cfg =
        sidecar_config(ns.addr, None, "127.94.0.0/16", None) + "[limits]\nhealth_connections = 3\n";
    let sidecar = start_sidecar(&cfg).await;
    // Three idle connections hold every place (a scraper that never sends a request).
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(
            tokio::net::TcpStream::connect(sidecar.health_addr)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = FrameClient::connect(sidecar.health_addr).await;
    assert!(
        extra.closed().await,
        "a fourth health connection was served"
    );
    // The admin port is a listener of its own and is not affected.
    let (status, _) = http(sidecar.admin_addr, "GET", "/live", None).await;
    assert_eq!(status, 200);
    let (_, text) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert!(
        metric(
            &text,
            r#"rmq_sidecar_connections_refused_total{listener="health"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    drop(idle);
    assert_eventually!(
        live(sidecar.health_addr).await,
        5,
        "the health port serves again once the idle connections close"
    );
}

/// `GET /live` answered 200 (any failure, a refused connection included, is false).
async fn live(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(request).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn an_unfinished_frame_is_cut_and_a_held_pull_is_not() {
    // The broker holds pulls 3 s, longer than the partial-frame bound of 1 s.
    let broker = FakeBroker::start("old-a", Duration::from_secs(3)).await;
    let ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", broker.addr),
    )]))
    .await;
    let cfg = sidecar_config(ns.addr, None, "127.95.0.0/16", None)
        + "[limits]\npartial_frame_seconds = 1\nnamesrv_frame_max_bytes = 2048\n";
    let sidecar = start_sidecar(&cfg).await;
    let local = local_master(sidecar.namesrv_addr, "T").await;

    // A held pull on one connection: its request is complete, its answer comes after 3 s.
    let mut puller = FrameClient::connect(local).await;
    let pull = request(11, 1, &[("topic", "T"), ("queueId", "0")]);
    puller.send(&pull, b"").await;
    // A frame announced and never finished, on the broker listener and on the name server.
    let announce = |n: i32| {
        let mut b = (n + 4).to_be_bytes().to_vec();
        b.extend(16i32.to_be_bytes());
        b.extend(b"{\"code\":10");
        b
    };
    let mut stalled_broker = FrameClient::connect(local).await;
    stalled_broker.send_raw(&announce(200)).await;
    let mut stalled_ns = FrameClient::connect(sidecar.namesrv_addr).await;
    stalled_ns.send_raw(&announce(200)).await;
    assert!(
        stalled_broker.closed().await,
        "an unfinished frame held its broker connection"
    );
    assert!(
        stalled_ns.closed().await,
        "an unfinished frame held its name-server connection"
    );
    let answer = puller
        .next()
        .await
        .expect("the held pull is answered, not cut");
    assert_eq!(
        (answer.opaque(), header_of(&answer).ext("handledBy")),
        (1, Some("old-a"))
    );

    // Route requests are small: a 4 KiB frame closes its name-server connection.
    let mut big = FrameClient::connect(sidecar.namesrv_addr).await;
    big.send(&request(105, 2, &[("topic", &"T".repeat(4096))]), b"")
        .await;
    assert!(
        big.closed().await,
        "a 4 KiB frame was accepted on the name-server port"
    );
    let (_, text) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert_eq!(
        metric(
            &text,
            r#"rmq_sidecar_frames_rejected_total{reason="stalled"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"rmq_sidecar_frames_rejected_total{reason="too_large"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn incomplete_frames_of_all_connections_share_one_budget() {
    let broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", broker.addr),
    )]))
    .await;
    // Frames up to 1 MiB; 1 MiB held in incomplete frames across every connection.
    let cfg = "frame_max_bytes = 1048576\n".to_owned()
        + &sidecar_config(ns.addr, None, "127.96.0.0/16", None)
        + "[limits]\npartial_frame_budget_bytes = 1048576\n";
    let sidecar = start_sidecar(&cfg).await;
    let local = local_master(sidecar.namesrv_addr, "T").await;
    let gauge = r#"rmq_sidecar_incomplete_frame_bytes "#;
    let held = |text: &str| metric(text, gauge).unwrap_or(-1.0);

    // Two sends of 900 KiB, each trickled in up to 600 KiB: the first is held...
    let body = vec![b'x'; 900 * 1024];
    let frame = |opaque| request(310, opaque, &[("b", "T")]).encode_frame(&body);
    let (a_frame, b_frame) = (frame(1), frame(2));
    let mut a = FrameClient::connect(local).await;
    a.send_raw(&a_frame[..600 * 1024]).await;
    assert_eventually!(
        held(&http(sidecar.admin_addr, "GET", "/metrics", None).await.1) >= 600.0 * 1024.0,
        5,
        "the first incomplete frame was never counted"
    );
    // ...the second would take both past 1 MiB: its connection is closed.
    let mut b = FrameClient::connect(local).await;
    b.send_raw(&b_frame[..600 * 1024]).await;
    assert!(b.closed().await, "a frame past the shared budget was kept");
    // The first finishes and is answered; the budget is free again.
    a.send_raw(&a_frame[600 * 1024..]).await;
    let answer = a
        .next()
        .await
        .expect("the held frame is relayed and answered");
    assert_eq!(answer.opaque(), 1);
    let (_, text) = http(sidecar.admin_addr, "GET", "/metrics", None).await;
    assert_eq!(held(&text), 0.0, "{text}");
    assert_eq!(
        metric(
            &text,
            r#"rmq_sidecar_frames_rejected_total{reason="over_budget"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // A whole frame of the same size on a new connection goes through.
    let mut c = FrameClient::connect(local).await;
    let (h, _) = c.call(&request(310, 3, &[("b", "T")]), &body).await;
    assert_eq!(h.code, response::SUCCESS);
}
