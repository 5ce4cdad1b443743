//! `/metrics`: the counters move as the traffic does, under the right target and code,
//! on both the admin and the health port; labels stay bounded and carry no secrets.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

/// Parses the text exposition format into (name{labels} -> value).
fn scrape_text(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(addr: SocketAddr) -> (String, HashMap<String, f64>) {
    let (status, body) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    (body.clone(), scrape_text(&body))
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_follow_the_traffic_and_the_switch() {
    let old_broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let new_broker = FakeBroker::start("new-a", Duration::ZERO).await;
    let old_ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", old_broker.addr),
    )]))
    .await;
    let new_ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", new_broker.addr),
    )]))
    .await;
    let sidecar = start_sidecar(&sidecar_config(
        old_ns.addr,
        Some(new_ns.addr),
        "127.88.0.0/16",
        None,
    ))
    .await;

    let old_local = local_master(sidecar.namesrv_addr, "T").await;
    let mut app = FrameClient::connect(old_local).await;
    for i in 0..5 {
        app.call(&request(310, 10 + i, &[("b", "T")]), b"0123456789")
            .await;
    }
    let (_, m) = scrape(sidecar.health_addr).await;
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_requests_total{code="SEND_MESSAGE_V2",peer="broker",target="old"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_responses_total{code="SEND_MESSAGE_V2",peer="broker",response_code="0",target="old"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_request_duration_seconds_count{group="send",peer="broker",target="old"}"#
        ),
        5.0
    );
    assert_eq!(
        value(&m, r#"rmq_sidecar_route_answers_total{cluster="old"}"#),
        1.0
    );
    for role in ["producer", "consumer"] {
        let series = format!(r#"rmq_sidecar_route_target{{role="{role}",target="old"}}"#);
        assert_eq!(value(&m, &series), 1.0, "{series}");
    }
    assert_eq!(
        value(&m, r#"rmq_sidecar_broker_listeners{target="old"}"#),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_upstream_connections_active{peer="broker",target="old"}"#
        ),
        1.0
    );
    assert!(
        value(
            &m,
            r#"rmq_sidecar_bytes_total{direction="to_upstream",target="old"}"#
        ) >= 5.0 * 10.0
    );

    // Switch; sends on a new connection count under new.
    let (status, _) = put_route(sidecar.admin_addr, "new").await;
    assert_eq!(status, 200);
    put_route(sidecar.admin_addr, "nowhere").await;
    let new_local = local_master(sidecar.namesrv_addr, "T").await;
    let mut app_new = FrameClient::connect(new_local).await;
    for i in 0..3 {
        app_new
            .call(
                &request(310, 20 + i, &[("b", "T"), ("n", "new~broker-a")]),
                b"x",
            )
            .await;
    }
    // Bad frame on the name-server port.
    let mut bad = FrameClient::connect(sidecar.namesrv_addr).await;
    bad.send_raw(&[0, 0, 0, 4, 9, 0, 0, 0]).await;
    assert!(bad.closed().await);

    let (text, m) = scrape(sidecar.admin_addr).await;
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_requests_total{code="SEND_MESSAGE_V2",peer="broker",target="new"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_requests_total{code="SEND_MESSAGE_V2",peer="broker",target="old"}"#
        ),
        5.0
    );
    for role in ["producer", "consumer"] {
        let new = format!(r#"rmq_sidecar_route_target{{role="{role}",target="new"}}"#);
        let old = format!(r#"rmq_sidecar_route_target{{role="{role}",target="old"}}"#);
        assert_eq!(value(&m, &new), 1.0, "{new}");
        assert_eq!(value(&m, &old), 0.0, "{old}");
        let moved = format!(r#"rmq_sidecar_role_switches_total{{role="{role}",target="new"}}"#);
        assert_eq!(value(&m, &moved), 1.0, "{moved}");
    }
    assert_eq!(value(&m, r#"rmq_sidecar_route_generation"#), 1.0);
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_switch_requests_total{outcome="applied"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_switch_requests_total{outcome="invalid"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_frames_rejected_total{reason="unknown_serialize_type"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"rmq_sidecar_requests_total{code="GET_ROUTEINFO_BY_TOPIC",peer="namesrv",target="new"}"#
        ),
        1.0
    );

    // Bounded labels: only these label names, and no address or topic in any value.
    let allowed = [
        "target",
        "peer",
        "code",
        "response_code",
        "group",
        "direction",
        "listener",
        "cause",
        "reason",
        "cluster",
        "outcome",
        "endpoint",
        "version",
        "role",
        "action",
        "gate",
        "le",
    ];
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
    {
        let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once("=\"").unwrap();
            assert!(allowed.contains(&name), "unexpected label {name} in {line}");
            assert!(
                !value.contains("127.") && value != "T",
                "unbounded value {value} in {line}"
            );
        }
    }
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.starts_with("rmq_sidecar_")),
        "one prefix"
    );
}

#[test]
fn a_scrape_storm_reuses_one_encoding_and_a_fresh_encode_sees_every_change() {
    let metrics =
        rocketmq_sidecar::metrics::Metrics::new(prometheus::Registry::new()).expect("metrics");
    let series = r#"rmq_sidecar_heap_trims_total{outcome="released"}"#;
    let started = std::time::Instant::now();
    let (first, _) = metrics.encode_for_scrape();
    metrics.heap_trims.with_label_values(&["released"]).inc();
    let (second, _) = metrics.encode_for_scrape();
    let (fresh, _) = metrics.encode();
    let fresh = scrape_text(&String::from_utf8_lossy(&fresh));
    assert_eq!(value(&fresh, series), 1.0, "encode() must see the change");
    if started.elapsed() < rocketmq_sidecar::metrics::SCRAPE_REUSE {
        assert_eq!(
            first, second,
            "a scrape within the reuse window encoded again"
        );
    }
    assert_eq!(
        value(&scrape_text(&String::from_utf8_lossy(&first)), series),
        0.0
    );
}
