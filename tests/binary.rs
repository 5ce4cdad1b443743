//! The `rmq-sidecar` binary: exit codes, `check`, and graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rmq-sidecar");

/// A sidecar process, killed when the test ends early (a failed assertion included).
struct Guarded(Option<Child>);

impl std::ops::Deref for Guarded {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Guarded {
    fn output(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

/// Where a spawned sidecar listens.
struct Ports {
    namesrv: SocketAddr,
    admin: SocketAddr,
    health: SocketAddr,
}

/// Starts the binary on free loopback ports with `env` on top; stdout/stderr are piped
/// when `capture`, else discarded.
fn spawn_with(bind: &str, env: &[(&str, String)], capture: bool) -> (Guarded, Ports) {
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let output = || {
        if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let mut cmd = Command::new(BIN);
    cmd.env("RMQ_SIDECAR_LISTEN", format!("127.0.0.1:{p1}"))
        .env("RMQ_SIDECAR_ADMIN", format!("127.0.0.1:{p2}"))
        .env("RMQ_SIDECAR_METRICS", format!("127.0.0.1:{p3}"))
        .env("RMQ_SIDECAR_BROKER_BIND", bind)
        .stdout(output())
        .stderr(output());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map(|c| Guarded(Some(c))).unwrap();
    let addr = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    (
        child,
        Ports {
            namesrv: addr(p1),
            admin: addr(p2),
            health: addr(p3),
        },
    )
}

fn spawn(ns: SocketAddr, drain: u64) -> (Guarded, SocketAddr, SocketAddr) {
    let env = [
        ("RMQ_SIDECAR_OLD_NAMESRV", ns.to_string()),
        ("RMQ_SIDECAR_DRAIN_SECONDS", drain.to_string()),
    ];
    let (child, ports) = spawn_with("127.81.0.0/16", &env, false);
    (child, ports.namesrv, ports.health)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn check_rejects_bad_config_with_exit_64_and_names_the_key() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .env("RMQ_SIDECAR_OLD_NAMESRV", "10.0.0.1:9876")
        .env("RMQ_SIDECAR_BROKER_BIND", "10.0.0.0/8")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen.broker_bind") && err.contains("RMQ_SIDECAR_BROKER_BIND"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .env("RMQ_SIDECAR_OLD_NAMESRV", "10.0.0.1:9876")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_keeps_serving_until_the_app_disconnects() {
    let ns = FakeNameServer::start(HashMap::new()).await;
    let (mut child, ns_listen, health) = spawn(ns.addr, 30);
    assert_eventually!(http_ok(health, "/ready").await, 10, "sidecar ready");
    let mut app = FrameClient::connect(ns_listen).await;
    let (h, _) = app.call(&request(206, 1, &[]), b"").await;
    assert_eq!(h.code, 0);

    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "still running while the app is connected"
    );
    // New connections are still served while draining (an app flushing offsets).
    let mut late = FrameClient::connect(ns_listen).await;
    let (h, _) = late.call(&request(206, 2, &[]), b"").await;
    assert_eq!(h.code, 0);
    let (h, _) = app.call(&request(206, 3, &[]), b"").await;
    assert_eq!(h.code, 0);

    drop(app);
    drop(late);
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "exits 0 once the last connection closed");
}

#[tokio::test]
async fn second_sigterm_exits_at_once() {
    let ns = FakeNameServer::start(HashMap::new()).await;
    let (mut child, ns_listen, health) = spawn(ns.addr, 600);
    assert_eventually!(http_ok(health, "/ready").await, 10, "sidecar ready");
    let _app = FrameClient::connect(ns_listen).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(child.try_wait().unwrap(), None);
    signal(&child, "TERM");
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(code, Some(130));
}

async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => http(addr, "GET", path, None).await.0 == 200,
        _ => false,
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    const SECRET: &str = "Zk9-very-secret-key-771";
    const AK: &str = "role-for-log-test";
    // Keys swapped by the operator: the broker's "User:<ak> is not found." remark then
    // echoes the secret, which must be scrubbed before it is logged.
    let broker = FakeBroker::start_acl("new-a", AK, SECRET).await;
    let ns = FakeNameServer::start(HashMap::from([(
        "T".to_owned(),
        fastjson_route("broker-a", broker.addr),
    )]))
    .await;
    let env = [
        ("RMQ_SIDECAR_OLD_NAMESRV", ns.addr.to_string()),
        ("RMQ_SIDECAR_NEW_NAMESRV", ns.addr.to_string()),
        ("RMQ_SIDECAR_TARGET", "new".to_owned()),
        ("RMQ_SIDECAR_NEW_ACCESS_KEY", SECRET.to_owned()),
        ("RMQ_SIDECAR_NEW_SECRET_KEY", AK.to_owned()),
        ("RMQ_SIDECAR_LOG", "trace".to_owned()),
        ("RMQ_SIDECAR_DRAIN_SECONDS", "0".to_owned()),
    ];
    let (mut child, ports) = spawn_with("127.87.0.0/16", &env, true);
    let admin = ports.admin;
    assert_eventually!(http_ok(admin, "/live").await, 10, "sidecar up");
    let (_, check) = http(admin, "POST", "/credentials/check", None).await;
    assert!(
        check.contains("unknown_access_key") && check.contains("look swapped"),
        "{check}"
    );
    let mut c = FrameClient::connect(ports.namesrv).await;
    let (h, body) = c.call(&request(105, 1, &[("topic", "T")]), b"").await;
    assert_eq!(h.code, 0);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let local: SocketAddr = v["brokerDatas"][0]["brokerAddrs"]["0"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut app = FrameClient::connect(local).await;
    let (resp, _) = app.call(&request(310, 2, &[("b", "T")]), b"m").await;
    assert_eq!(resp.code, 16);
    let (_, route) = http(admin, "GET", "/route", None).await;
    drop(app);
    drop(c);
    signal(&child, "TERM");
    let out = tokio::task::spawn_blocking(move || {
        let _ = wait_exit(&mut child, Duration::from_secs(10));
        let _ = child.kill();
        child.output()
    })
    .await
    .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("refused a signed request"),
        "the refusal is logged: {log}"
    );
    for (what, text) in [("log", &log), ("GET /route", &route), ("check", &check)] {
        assert!(!text.contains(SECRET), "the secret appears in the {what}");
    }
}

#[tokio::test]
async fn log_level_changes_at_runtime_and_shutdown_endpoint_when_enabled() {
    let ns = FakeNameServer::start(HashMap::new()).await;
    let env = [
        ("RMQ_SIDECAR_OLD_NAMESRV", ns.addr.to_string()),
        ("RMQ_SIDECAR_ENABLE_SHUTDOWN", "true".to_owned()),
        ("RMQ_SIDECAR_DRAIN_SECONDS", "1".to_owned()),
    ];
    let (mut child, ports) = spawn_with("127.90.0.0/16", &env, false);
    let admin = ports.admin;
    assert_eventually!(http_ok(admin, "/live").await, 10, "sidecar up");
    let (status, body) = http(
        admin,
        "PUT",
        "/log-level",
        Some("{\"filter\":\"debug,hyper=info\"}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = http(admin, "GET", "/log-level", None).await;
    assert!(body.contains("debug,hyper=info"), "{body}");
    let (status, _) = http(
        admin,
        "PUT",
        "/log-level",
        Some("{\"filter\":\"=broken[\"}"),
    )
    .await;
    assert_eq!(status, 400);
    let (_, body) = http(admin, "GET", "/log-level", None).await;
    assert!(
        body.contains("debug,hyper=info"),
        "an invalid filter changes nothing: {body}"
    );

    let (status, body) = http(admin, "POST", "/shutdown", None).await;
    assert_eq!(status, 202, "{body}");
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[test]
fn check_runs_the_validation_run_runs() {
    // A log filter that does not parse: `check` used to accept it and `run` to refuse it.
    let dir = std::env::temp_dir().join(format!("rmq-check-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "log = \"x=y=z==\"\n[clusters.old]\nnamesrv = \"127.0.0.1:9876\"\n",
    )
    .unwrap();
    let mut outputs = Vec::new();
    for args in [vec!["check", "--config"], vec!["--config"]] {
        let out = Command::new(BIN).args(&args).arg(&config).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains("log:") && err.contains("x=y=z=="),
            "{args:?}: {err}"
        );
        outputs.push(err);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "check and run must refuse with the same message"
    );
    std::fs::remove_dir_all(&dir).ok();
}
