//! `load`: the remoting load generator of `benches/compare.py`, which runs it against a
//! broker directly, through haproxy (TCP mode) and through the sidecar (no rewrite,
//! renaming, signing) side by side. It speaks the protocol as a producer does: each request
//! is a SEND_MESSAGE_V2 (code 310) with the Java client's header fields and a body of the
//! given size. Subcommands (arguments are `key=value`):
//!
//! ```text
//! load serve                     echo broker + name server (route of BenchTopic -> the echo
//!                                broker); prints "broker=ADDR namesrv=ADDR", runs until killed
//! load route namesrv=ADDR [topic=BenchTopic]
//!                                prints the master address the name server answers
//! load run addr=ADDR [conns=1] [depth=1] [body=1024] [seconds=5] [topic=BenchTopic]
//!                                N connections, each keeping `depth` requests in flight
//!                                (depth=1: synchronous sends); prints one JSON line:
//!                                msgs, msgs_per_s, mb_per_s, p50/p99/p999 latency (us), errors
//! load hold addr=ADDR conns=N    opens N connections, sends one request on each and reads its
//!                                answer (so a proxy has opened its upstream side too), prints
//!                                "held N", keeps them open until stdin closes, then closes them
//! load scrape addr=ADDR [path=/metrics] [rate=1000] [seconds=5]
//!                                HTTP/1.1 GETs on one keep-alive connection at `rate` per
//!                                second (a scrape storm); prints "answered N"
//! ```
//!
//! Frames are encoded once per in-flight slot and reused (a slot's opaque is free again once
//! its answer came), so the generator spends its CPU on the socket, not on JSON.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
#[allow(clippy::unwrap_used)]
mod fakes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rocketmq_sidecar::protocol::Header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

const DEFAULT_TOPIC: &str = "BenchTopic";

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    let command = it.next().unwrap_or_default();
    let kv = it
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    (command, kv)
}

fn get<T: std::str::FromStr>(kv: &HashMap<String, String>, key: &str, default: T) -> T {
    kv.get(key)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v}: not a valid value"))
        })
        .unwrap_or(default)
}

/// A SEND_MESSAGE_V2 header as the Java client 4.9 writes it (short field names).
fn send_header(opaque: i32, topic: &str) -> Header {
    let born = "1764500000000";
    fakes::request(
        310,
        opaque,
        &[
            ("a", "BenchProducerGroup"),
            ("b", topic),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "0"),
            ("f", "0"),
            ("g", born),
            ("h", "0"),
            (
                "i",
                "UNIQ_KEY\u{1}7F0000010000000000000000000000\u{2}WAIT\u{1}true\u{2}",
            ),
            ("j", "0"),
            ("k", "false"),
            ("m", "false"),
        ],
    )
}

#[derive(Default)]
struct Totals {
    latencies_ns: Vec<u64>,
    errors: u64,
    bytes: u64,
    /// Requests written whose answer did not come within 5 s of the end.
    unanswered: u64,
    /// When the last answer came (the run's end for throughput).
    last_answer: Option<Instant>,
}

async fn one_connection(
    addr: SocketAddr,
    depth: usize,
    body: usize,
    topic: String,
    until: Instant,
    totals: Arc<Mutex<Totals>>,
) {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = s.into_split();
    let payload = vec![b'm'; body];
    let frames: Vec<Bytes> = (0..depth)
        .map(|slot| send_header(slot as i32, &topic).encode_frame(&payload))
        .collect();
    let (free_tx, mut free_rx) = mpsc::unbounded_channel::<usize>();
    for slot in 0..depth {
        free_tx.send(slot).unwrap();
    }
    let started: Arc<std::sync::Mutex<Vec<Instant>>> =
        Arc::new(std::sync::Mutex::new(vec![Instant::now(); depth]));
    let inflight = Arc::new(AtomicUsize::new(0));
    let (started_w, inflight_w) = (started.clone(), inflight.clone());
    let writer = tokio::spawn(async move {
        while let Some(slot) = free_rx.recv().await {
            if Instant::now() >= until {
                break;
            }
            started_w.lock().unwrap()[slot] = Instant::now();
            inflight_w.fetch_add(1, Ordering::SeqCst);
            if wr.write_all(&frames[slot]).await.is_err() {
                break;
            }
        }
        // The write half stays open until the answers are in: a broker may drop the
        // answers of a connection it sees half-closed.
        wr
    });
    let mut local = Totals::default();
    let mut buf = BytesMut::new();
    loop {
        if Instant::now() >= until && inflight.load(Ordering::SeqCst) == 0 {
            break;
        }
        // Never wait past the end by more than 5 s (an answer that never comes).
        let wait = until.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        let Ok(Some(f)) = tokio::time::timeout(wait, fakes::read_frame(&mut rd, &mut buf)).await
        else {
            break;
        };
        let h = fakes::header_of(&f);
        let slot = h.opaque as usize;
        if slot >= depth {
            continue;
        }
        let took = started.lock().unwrap()[slot].elapsed();
        local.latencies_ns.push(took.as_nanos() as u64);
        local.bytes += body as u64;
        if h.code != 0 {
            local.errors += 1;
        }
        inflight.fetch_sub(1, Ordering::SeqCst);
        local.last_answer = Some(Instant::now());
        // After the end the writer is gone and the slot stays unused.
        let _ = free_tx.send(slot);
    }
    local.unanswered = inflight.load(Ordering::SeqCst) as u64;
    drop(free_tx);
    let _ = writer.await;
    let mut t = totals.lock().await;
    t.latencies_ns.extend(local.latencies_ns);
    t.errors += local.errors;
    t.bytes += local.bytes;
    t.unanswered += local.unanswered;
    t.last_answer = t.last_answer.max(local.last_answer);
}

async fn run(kv: HashMap<String, String>) {
    let addr: SocketAddr = get(&kv, "addr", "127.0.0.1:10911".parse().unwrap());
    let conns: usize = get(&kv, "conns", 1);
    let depth: usize = get(&kv, "depth", 1);
    let body: usize = get(&kv, "body", 1024);
    let seconds: f64 = get(&kv, "seconds", 5.0);
    let topic: String = get(&kv, "topic", DEFAULT_TOPIC.to_owned());
    let totals = Arc::new(Mutex::new(Totals::default()));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(one_connection(
                addr,
                depth,
                body,
                topic.clone(),
                until,
                totals.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut t = totals.lock().await;
    let secs = t.last_answer.map_or(0.0, |at| (at - t0).as_secs_f64());
    t.latencies_ns.sort_unstable();
    let n = t.latencies_ns.len();
    let at = |q: f64| {
        if n == 0 {
            0.0
        } else {
            t.latencies_ns[((n as f64 - 1.0) * q).round() as usize] as f64 / 1e3
        }
    };
    println!(
        "{{\"msgs\":{n},\"secs\":{secs:.3},\"msgs_per_s\":{:.1},\"mb_per_s\":{:.2},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"errors\":{},\"unanswered\":{}}}",
        n as f64 / secs,
        t.bytes as f64 / secs / 1e6,
        at(0.5),
        at(0.99),
        at(0.999),
        t.errors,
        t.unanswered
    );
}

async fn hold(kv: HashMap<String, String>) {
    let addr: SocketAddr = get(&kv, "addr", "127.0.0.1:10911".parse().unwrap());
    let conns: usize = get(&kv, "conns", 1000);
    let frame = send_header(1, DEFAULT_TOPIC).encode_frame(b"hello");
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        wr.write_all(&frame).await.unwrap();
        let mut buf = BytesMut::new();
        fakes::read_frame(&mut rd, &mut buf)
            .await
            .expect("an answer on every held connection");
        held.push((rd, wr));
    }
    println!("held {}", held.len());
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    drop(held);
}

async fn scrape(kv: HashMap<String, String>) {
    let addr: SocketAddr = get(&kv, "addr", "127.0.0.1:9879".parse().unwrap());
    let path: String = get(&kv, "path", "/metrics".to_owned());
    let rate: f64 = get(&kv, "rate", 1000.0);
    let seconds: f64 = get(&kv, "seconds", 5.0);
    let request = format!("GET {path} HTTP/1.1\r\nHost: sidecar\r\n\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut answered, mut buf) = (0u64, Vec::new());
    while Instant::now() < until {
        tick.tick().await;
        s.write_all(request.as_bytes()).await.unwrap();
        // Read one whole answer: headers, then Content-Length bytes of body.
        let body_len = loop {
            let mut chunk = [0u8; 16384];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break end + 4 + len;
            }
        };
        while buf.len() < body_len {
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..body_len);
        answered += 1;
    }
    println!("answered {answered}");
}

fn main() {
    let (command, kv) = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match command.as_str() {
        "serve" => rt.block_on(async {
            let broker = fakes::echo_broker().await;
            let ns = fakes::FakeNameServer::start(HashMap::from([(
                DEFAULT_TOPIC.to_owned(),
                fakes::fastjson_route("bench-broker-a", broker),
            )]))
            .await;
            println!("broker={broker} namesrv={}", ns.addr);
            std::future::pending::<()>().await;
        }),
        "route" => rt.block_on(async {
            let ns: SocketAddr = get(&kv, "namesrv", "127.0.0.1:9876".parse().unwrap());
            let topic: String = get(&kv, "topic", DEFAULT_TOPIC.to_owned());
            println!("{}", fakes::local_master(ns, &topic).await);
        }),
        "run" => rt.block_on(run(kv)),
        "hold" => rt.block_on(hold(kv)),
        "scrape" => rt.block_on(scrape(kv)),
        // `cargo bench` runs every bench target with no arguments: nothing to do alone.
        _ => eprintln!(
            "load: run by benches/compare.py (see its docstring); usage in benches/load.rs"
        ),
    }
}
