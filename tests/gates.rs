//! The migration gates through the admin API and the pod annotation, in memory: what a
//! refusal answers and leaves unchanged, dry run, force, the metrics, and an annotation
//! that waits (pending) until it passes or is forced. The clusters here answer nothing (a
//! closed port), so every gate that has something to check fails closed; the gates'
//! decisions on real answers are in `src/gates/tests.rs`, on real servers in
//! `tests/interop/test_gates.py`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use rmq_common::RoleTargets;
use rocketmq_sidecar::admin::{self, AdminState, Port};
use rocketmq_sidecar::annotation::AnnotationWatch;
use rocketmq_sidecar::config::Config;
use rocketmq_sidecar::App;
use serde_json::Value;

/// A sidecar core whose old cluster answers nothing (127.0.0.1:1) and whose new cluster
/// is a fake name server listing one fake broker (so the target is reachable, and knows
/// no topic the tests use).
async fn core(extra: &str) -> std::sync::Arc<AdminState> {
    let broker = support::FakeBroker::start("new-a", std::time::Duration::ZERO).await;
    let routes = HashMap::from([(
        "Elsewhere".to_owned(),
        support::fastjson_route("new-a", broker.addr),
    )]);
    let ns = support::FakeNameServer::start(routes).await;
    core_with(extra, &ns.addr.to_string())
}

fn core_with(extra: &str, new_namesrv: &str) -> std::sync::Arc<AdminState> {
    let env: HashMap<String, String> = HashMap::new();
    let cfg = Config::from_toml_str(
        &format!("{extra}\n[clusters.old]\nnamesrv = \"127.0.0.1:1\"\n[clusters.new]\nnamesrv = \"{new_namesrv}\"\n"),
        &env,
    )
    .unwrap();
    App::new(cfg).core().unwrap().admin_state()
}

async fn call(state: &AdminState, method: &str, path: &str, body: &str) -> (u16, Value) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::from(body.to_owned()))
        .unwrap();
    let loopback = "127.0.0.1:40000".parse().unwrap();
    let r = admin::handle(state, Port::Admin, loopback, req).await;
    let status = r.status().as_u16();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn metric(state: &AdminState, line_start: &str) -> f64 {
    let (text, _) = state.ctx.metrics.encode();
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("{line_start} not exported"))
        .parse()
        .unwrap()
}

/// A 409 from `gate` whose error names every one of `needles`; the route is still old and
/// the refusal was counted once.
fn assert_refused(state: &AdminState, status: u16, doc: &Value, gate: &str, needles: &[&str]) {
    assert_eq!(status, 409, "{doc}");
    assert_eq!(doc["refused_by"], serde_json::json!([gate]));
    let error = doc["error"].as_str().unwrap();
    assert!(needles.iter().all(|n| error.contains(n)), "{error}");
    assert_eq!(
        state.route.current().targets(),
        RoleTargets::both(rmq_common::Target::Old)
    );
    let counted = format!("rmq_sidecar_gate_refusals_total{{gate=\"{gate}\"}}");
    assert_eq!(metric(state, &counted), 1.0);
}

#[tokio::test]
async fn a_refused_switch_changes_nothing_and_says_why() {
    let state = core("").await;
    // Nothing produced yet: nothing to check, the switch passes.
    let (status, doc) = call(
        &state,
        "PUT",
        "/route",
        r#"{"consumer":"new","dry_run":true}"#,
    )
    .await;
    assert_eq!(
        (status, &doc["would_switch"]),
        (200, &Value::Bool(true)),
        "{doc}"
    );

    state.ctx.usage.record_send("Orders", "orders-producer");
    let (status, doc) = call(&state, "PUT", "/route", r#"{"producer":"new"}"#).await;
    assert_refused(
        &state,
        status,
        &doc,
        "consumers_on_target",
        &["fails closed", "127.0.0.1:1"],
    );
    // GET /route shows what the gates saw (checks[0]: new answered, target_reachable).
    let (_, route) = call(&state, "GET", "/route", "").await;
    assert_eq!(route["gates"]["enabled"], true);
    assert_eq!(route["gates"]["last"]["allowed"], false);
    assert_eq!(
        route["gates"]["last"]["checks"][1]["producer"]["topics"][0]["topic"],
        "Orders"
    );

    // A dry run: same verdict, nothing changes, no refusal counted.
    let (status, doc) = call(
        &state,
        "PUT",
        "/route",
        r#"{"producer":"new","dry_run":true}"#,
    )
    .await;
    assert_eq!(
        (status, &doc["would_switch"]),
        (200, &Value::Bool(false)),
        "{doc}"
    );
    assert_eq!(
        metric(
            &state,
            r#"rmq_sidecar_gate_refusals_total{gate="consumers_on_target"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            r#"rmq_sidecar_gate_evaluations_total{outcome="dry_run"}"#
        ),
        2.0
    );

    // Bad options are refused before anything is read.
    let (status, doc) = call(
        &state,
        "PUT",
        "/route",
        r#"{"producer":"new","force":"yes"}"#,
    )
    .await;
    assert_eq!(status, 400, "{doc}");

    // Forced: applied, counted, and the evaluation says what was overridden.
    let (status, doc) = call(
        &state,
        "PUT",
        "/route",
        r#"{"producer":"new","force":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["roles"]["producer"]["target"], "new");
    assert_eq!(doc["gates"]["last"]["force"], true);
    assert_eq!(
        doc["gates"]["last"]["refused_by"],
        serde_json::json!(["consumers_on_target"])
    );
    assert_eq!(
        metric(
            &state,
            r#"rmq_sidecar_gate_forced_total{gate="consumers_on_target"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_switch_to_a_cluster_that_does_not_answer_is_refused_and_changes_nothing() {
    // Nothing recorded: no other gate has anything to check, yet the consumers would
    // stall on a cluster whose name server refuses connections.
    let state = core_with("", "127.0.0.1:2");
    let (status, doc) = call(&state, "PUT", "/route", r#"{"consumer":"new"}"#).await;
    assert_refused(
        &state,
        status,
        &doc,
        "target_reachable",
        &["new is unreachable", "127.0.0.1:2"],
    );
    // A name server that answers, but the pod's topic there is on a broker that refuses
    // connections.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let routes = HashMap::from([(
        "Elsewhere".to_owned(),
        support::fastjson_route("new-a", dead_addr),
    )]);
    let ns = support::FakeNameServer::start(routes).await;
    let state = core_with("", &ns.addr.to_string());
    state
        .ctx
        .usage
        .record_send("Elsewhere", "elsewhere-producer");
    let (status, doc) = call(&state, "PUT", "/route", r#"{"target":"new"}"#).await;
    assert_eq!(status, 409, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("master of broker new-a") && error.contains(&dead_addr.to_string()),
        "{error}"
    );
    assert_eq!(
        state.route.current().targets(),
        RoleTargets::both(rmq_common::Target::Old)
    );
}

#[tokio::test]
async fn gates_can_be_turned_off() {
    let state = core("[gates]\nenabled = false\n").await;
    state.ctx.usage.record_send("Orders", "orders-producer");
    let (status, doc) = call(&state, "PUT", "/route", r#"{"producer":"new"}"#).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["gates"]["enabled"], false);
    assert!(doc["gates"]["last"].is_null());
}

#[tokio::test]
async fn a_refused_annotation_waits_until_forced() {
    let state = core("[gates]\nretry_seconds = 1\n").await;
    state.ctx.usage.record_send("Orders", "orders-producer");
    let dir = support::tempdir("gates-annotation");
    let file = dir.join("annotations");
    std::fs::write(
        &file,
        "rocketmq-sidecar/route=\"producer=new,consumer=old\"\n",
    )
    .unwrap();
    let watch = AnnotationWatch::new(file.clone(), "rocketmq-sidecar/route".to_owned());
    let metrics = &state.ctx.metrics;
    let target = watch.read_once(metrics).unwrap();
    watch
        .apply(target, &state.route, metrics, &state.gates, &state.ctx)
        .await;
    let status = watch.status();
    let pending = status.pending.expect("refused, so pending");
    assert_eq!(pending.target, target);
    assert_eq!(pending.attempts, 1);
    assert!(
        pending.reason.contains("consumers_on_target"),
        "{}",
        pending.reason
    );
    assert_eq!(
        state.route.current().targets(),
        RoleTargets::both(rmq_common::Target::Old)
    );
    assert_eq!(
        metric(
            &state,
            r#"rmq_sidecar_annotation_updates_total{outcome="refused"}"#
        ),
        1.0
    );
    // Within the retry interval nothing is evaluated again.
    watch
        .apply(target, &state.route, metrics, &state.gates, &state.ctx)
        .await;
    assert_eq!(watch.status().pending.unwrap().attempts, 1);

    // Forced by the pod annotation: applied, and nothing is pending any more.
    std::fs::write(
        &file,
        "rocketmq-sidecar/route=\"producer=new,consumer=old\"\nrocketmq-sidecar/route-force=\"true\"\n",
    )
    .unwrap();
    let target = watch.read_once(metrics).unwrap();
    assert!(watch.status().force);
    watch
        .apply(target, &state.route, metrics, &state.gates, &state.ctx)
        .await;
    assert_eq!(state.route.current().targets(), target);
    assert!(watch.status().pending.is_none());
    assert_eq!(
        metric(
            &state,
            r#"rmq_sidecar_gate_forced_total{gate="consumers_on_target"}"#
        ),
        1.0
    );
}
