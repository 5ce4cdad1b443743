//! Relay overhead: synchronous request/response round trips (1 KiB body, like a small
//! SEND_MESSAGE_V2) straight to an echo broker versus through the `rmq-sidecar` binary.
//! The echo broker, the sidecar and the load generator are three processes, as a broker,
//! a pod's sidecar and its app would be. Rounds are interleaved so both paths see the
//! same machine state; then pipelined throughput. Run: `cargo bench --bench relay`.
//! Reports medians, p99s and the ratio sidecar/direct; absolute numbers depend on the
//! machine, so publish them with it.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
#[allow(clippy::unwrap_used)]
mod fakes;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ROUNDS: usize = 10;
const PER_ROUND: usize = 2000;

async fn round_trips(
    client: &mut fakes::FrameClient,
    n: usize,
    opaque: &mut i32,
    out: &mut Vec<f64>,
) {
    let body = vec![b'x'; 1024];
    for _ in 0..n {
        *opaque += 1;
        let req = fakes::request(310, *opaque, &[("a", "PG"), ("b", "TopicTest"), ("e", "0")]);
        let t = Instant::now();
        client.call(&req, &body).await;
        out.push(t.elapsed().as_nanos() as f64);
    }
}

async fn pipelined_mb_per_s(addr: SocketAddr, frames: usize, body: usize) -> f64 {
    let s = TcpStream::connect(addr).await.unwrap();
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let payload = vec![b'y'; body];
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..frames {
            let req = fakes::request(310, i as i32, &[("b", "TopicTest")]);
            wr.write_all(&req.encode_frame(&payload)).await.unwrap();
        }
        wr
    });
    let mut buf = BytesMut::new();
    for _ in 0..frames {
        fakes::read_frame(&mut rd, &mut buf).await.unwrap();
    }
    let _wr = writer.await.unwrap();
    (frames * body) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Runs this bench binary again as a separate echo-broker process; returns its address.
fn spawn_echo_process() -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env("RMQ_BENCH_ECHO", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("RMQ_BENCH_ECHO").is_some() {
        rt.block_on(async {
            println!("{}", fakes::echo_broker().await);
            std::future::pending::<()>().await;
        });
        return;
    }
    let (mut echo, broker) = spawn_echo_process();
    rt.block_on(run(broker));
    let _ = echo.kill();
    let _ = echo.wait();
}

async fn run(broker: SocketAddr) {
    let ns = fakes::FakeNameServer::start(HashMap::from([(
        "T".to_owned(),
        fakes::fastjson_route("broker-a", broker),
    )]))
    .await;
    let (p1, p2, p3) = (fakes::free_port(), fakes::free_port(), fakes::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmq-sidecar"))
        .env("RMQ_SIDECAR_OLD_NAMESRV", ns.addr.to_string())
        .env("RMQ_SIDECAR_LISTEN", format!("127.0.0.1:{p1}"))
        .env("RMQ_SIDECAR_ADMIN", format!("127.0.0.1:{p2}"))
        .env("RMQ_SIDECAR_METRICS", format!("127.0.0.1:{p3}"))
        .env("RMQ_SIDECAR_BROKER_BIND", "127.91.0.0/16")
        .env("RMQ_SIDECAR_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/release/rmq-sidecar");
    let ns_listen: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let local = loop {
        if let Ok(s) = TcpStream::connect(ns_listen).await {
            drop(s);
            let mut c = fakes::FrameClient::connect(ns_listen).await;
            let (h, body) = c
                .call(&fakes::request(105, 1, &[("topic", "T")]), b"")
                .await;
            if h.code == 0 {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                break v["brokerDatas"][0]["brokerAddrs"]["0"]
                    .as_str()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap();
            }
        }
        assert!(Instant::now() < deadline, "sidecar did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut direct = fakes::FrameClient::connect(broker).await;
    let mut relayed = fakes::FrameClient::connect(local).await;
    let (mut d, mut r) = (Vec::new(), Vec::new());
    let mut opaque = 0;
    // Warm-up, then interleaved rounds.
    round_trips(&mut direct, 500, &mut opaque, &mut Vec::new()).await;
    round_trips(&mut relayed, 500, &mut opaque, &mut Vec::new()).await;
    for _ in 0..ROUNDS {
        round_trips(&mut direct, PER_ROUND, &mut opaque, &mut d).await;
        round_trips(&mut relayed, PER_ROUND, &mut opaque, &mut r).await;
    }
    let ds = support::summarize(&mut d);
    let rs = support::summarize(&mut r);
    println!("sync round trip, 1 KiB body, {} samples each", d.len());
    println!(
        "  direct   median {:>8.1} us   p99 {:>8.1} us",
        ds.median_ns / 1e3,
        ds.p99_ns / 1e3
    );
    println!(
        "  sidecar  median {:>8.1} us   p99 {:>8.1} us",
        rs.median_ns / 1e3,
        rs.p99_ns / 1e3
    );
    println!(
        "  ratio    median {:>8.2}x     p99 {:>8.2}x",
        rs.median_ns / ds.median_ns,
        rs.p99_ns / ds.p99_ns
    );
    for body in [1024usize, 65536] {
        let frames = if body > 4096 { 4000 } else { 40000 };
        let dm = pipelined_mb_per_s(broker, frames, body).await;
        let rm = pipelined_mb_per_s(local, frames, body).await;
        println!(
            "pipelined {frames} x {body} B: direct {dm:.0} MB/s, sidecar {rm:.0} MB/s, ratio {:.2}",
            rm / dm
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
