//! In-process fakes for fast tests: a frame-level client, a fake name server and a fake
//! broker, plus a helper that starts the sidecar on ephemeral ports.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rocketmq_sidecar::app::Running;
use rocketmq_sidecar::config::Config;
use rocketmq_sidecar::protocol::code::FLAG_RESPONSE;
use rocketmq_sidecar::protocol::{FrameDecoder, Header, RawFrame};
use rocketmq_sidecar::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

/// Polls `cond` every 20 ms until it is true or `secs` pass.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $secs:expr, $($msg:tt)+) => {{
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs($secs);
        loop {
            if $cond { break; }
            if std::time::Instant::now() > deadline { panic!($($msg)+); }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// Reads one frame from a socket half.
pub async fn read_frame(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Option<RawFrame> {
    let mut dec = FrameDecoder::default();
    loop {
        if let Some(f) = dec.decode(buf).expect("valid frame") {
            return Some(f);
        }
        if rd.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// A broker for benchmarks: answers every request at once with SUCCESS and the fields of a
/// send's answer, everything one read brought in one write; records nothing.
pub async fn echo_broker() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.into_split();
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                let mut decoder = FrameDecoder::default();
                loop {
                    // Answer every complete request read so far in one write, then read on.
                    while let Ok(Some(f)) = decoder.decode(&mut buf) {
                        let h = header_of(&f);
                        let mut resp = Header::response_to(&h, 0, None);
                        resp.set_ext("msgId", "7F00000100002A9F0000000000000000");
                        resp.set_ext("queueId", "0");
                        resp.set_ext("queueOffset", "0");
                        out.extend_from_slice(&resp.encode_frame(b""));
                    }
                    if !out.is_empty() {
                        if wr.write_all(&out).await.is_err() {
                            break;
                        }
                        out.clear();
                    }
                    if !matches!(rd.read_buf(&mut buf).await, Ok(n) if n > 0) {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Decoded header of a frame.
pub fn header_of(f: &RawFrame) -> Header {
    Header::decode(f.serialize_type(), f.header_bytes()).expect("header")
}

/// A request header with ext fields.
pub fn request(code: i32, opaque: i32, ext: &[(&str, &str)]) -> Header {
    let mut h = Header::request(code, opaque);
    h.version = 409;
    for (k, v) in ext {
        h.set_ext(k, *v);
    }
    h
}

/// A remoting client speaking raw frames, as an app's client would.
pub struct FrameClient {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl FrameClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (rd, wr) = s.into_split();
        Self {
            rd,
            wr,
            buf: BytesMut::new(),
        }
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("write");
    }

    /// Sends a frame.
    pub async fn send(&mut self, h: &Header, body: &[u8]) {
        self.send_raw(&h.encode_frame(body)).await;
    }

    /// Next frame, or `None` when the connection closed.
    pub async fn next(&mut self) -> Option<RawFrame> {
        tokio::time::timeout(
            Duration::from_secs(10),
            read_frame(&mut self.rd, &mut self.buf),
        )
        .await
        .expect("a frame within 10 s")
    }

    /// Sends a request and waits for the response with the same opaque.
    pub async fn call(&mut self, h: &Header, body: &[u8]) -> (Header, Bytes) {
        self.send(h, body).await;
        loop {
            let f = self.next().await.expect("response before close");
            if f.is_response() && f.opaque() == h.opaque {
                return (header_of(&f), f.body());
            }
        }
    }

    /// True when the peer closed the connection within 5 s.
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.rd.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// What a fake server saw: one entry per request frame.
pub type Seen = Arc<Mutex<Vec<(Header, Bytes, Vec<u8>)>>>;

/// A fake name server answering GET_ROUTEINFO_BY_TOPIC with fixed bodies per topic.
pub struct FakeNameServer {
    pub addr: SocketAddr,
    pub seen: Seen,
}

impl FakeNameServer {
    /// Starts one that answers `routes[topic]` (raw body text, e.g. fastjson form) and 17
    /// for other topics; every other code gets SUCCESS with body "echo:<code>".
    pub async fn start(routes: HashMap<String, String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Seen = Arc::default();
        let seen2 = seen.clone();
        let routes = Arc::new(routes);
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let seen = seen2.clone();
                let routes = routes.clone();
                tokio::spawn(async move {
                    let (mut rd, mut wr) = s.into_split();
                    let mut buf = BytesMut::new();
                    while let Some(f) = read_frame(&mut rd, &mut buf).await {
                        let h = header_of(&f);
                        seen.lock()
                            .unwrap()
                            .push((h.clone(), f.body(), f.bytes().to_vec()));
                        if h.is_oneway() {
                            continue;
                        }
                        let mut resp = Header::response_to(&h, 0, None);
                        resp.version = 479;
                        let body: Vec<u8> = if h.code == 105 {
                            match routes.get(h.ext("topic").unwrap_or("")) {
                                Some(b) => b.clone().into_bytes(),
                                None => {
                                    resp.code = 17;
                                    resp.remark = Some("No topic route info in name server".into());
                                    Vec::new()
                                }
                            }
                        } else if h.code == 106 {
                            cluster_info(&routes)
                        } else {
                            format!("echo:{}", h.code).into_bytes()
                        };
                        if wr.write_all(&resp.encode_frame(&body)).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }
}

/// GET_BROKER_CLUSTER_INFO built from the brokers of every route (non-standard JSON).
fn cluster_info(routes: &HashMap<String, String>) -> Vec<u8> {
    let mut table = serde_json::Map::new();
    for body in routes.values() {
        let route =
            rocketmq_sidecar::protocol::route::parse_lenient(body.as_bytes()).expect("route");
        for bd in route["brokerDatas"].as_array().into_iter().flatten() {
            table.insert(
                bd["brokerName"].as_str().unwrap_or("").to_owned(),
                bd.clone(),
            );
        }
    }
    let names: Vec<_> = table.keys().cloned().collect();
    serde_json::to_vec(
        &serde_json::json!({"brokerAddrTable": table, "clusterAddrTable": {"C": names}}),
    )
    .expect("json")
}

/// A fake broker. Answers every request with SUCCESS and ext `handledBy=<name>`; holds
/// PULL_MESSAGE (11) for `pull_hold` before answering. Each accepted connection can be
/// given frames to push (broker -> client requests) through `push`.
pub struct FakeBroker {
    pub addr: SocketAddr,
    pub seen: Seen,
    pub connections: Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>,
    /// Responses the client sent back to pushed requests.
    pub client_replies: Seen,
}

impl FakeBroker {
    /// Starts a broker named `name` on an ephemeral port.
    pub async fn start(name: &'static str, pull_hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, name, pull_hold, None)
    }

    /// Starts a broker that authenticates every request like a 5.x broker with ACL 2.0:
    /// code 16 with "User:<ak> is not found." or "check signature failed.".
    pub async fn start_acl(
        name: &'static str,
        access_key: &'static str,
        secret_key: &'static str,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(
            listener,
            name,
            Duration::ZERO,
            Some((access_key, secret_key)),
        )
    }

    /// Serves on `listener`.
    pub fn serve(
        listener: TcpListener,
        name: &'static str,
        pull_hold: Duration,
        acl: Option<(&'static str, &'static str)>,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let seen: Seen = Arc::default();
        let replies: Seen = Arc::default();
        let connections: Arc<Mutex<Vec<mpsc::Sender<Bytes>>>> = Arc::default();
        let (seen2, replies2, conns2) = (seen.clone(), replies.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (mut rd, mut wr) = s.into_split();
                let (tx, mut rx) = mpsc::channel::<Bytes>(16);
                conns2.lock().unwrap().push(tx.clone());
                tokio::spawn(async move {
                    while let Some(b) = rx.recv().await {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                });
                let (seen, replies) = (seen2.clone(), replies2.clone());
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    while let Some(f) = read_frame(&mut rd, &mut buf).await {
                        let h = header_of(&f);
                        if f.is_response() {
                            replies
                                .lock()
                                .unwrap()
                                .push((h, f.body(), f.bytes().to_vec()));
                            continue;
                        }
                        seen.lock()
                            .unwrap()
                            .push((h.clone(), f.body(), f.bytes().to_vec()));
                        if h.is_oneway() {
                            continue;
                        }
                        let tx = tx.clone();
                        if let Some(refusal) =
                            acl.and_then(|(ak, sk)| acl_refusal(&h, &f.body(), ak, sk))
                        {
                            let mut resp = Header::response_to(&h, 16, Some(refusal));
                            resp.version = 479;
                            let _ = tx.send(resp.encode_frame(b"")).await;
                            continue;
                        }
                        tokio::spawn(async move {
                            if h.code == 11 {
                                tokio::time::sleep(pull_hold).await;
                            }
                            let mut resp = Header::response_to(&h, 0, None);
                            resp.version = 409;
                            resp.set_ext("handledBy", name);
                            let body: &[u8] = if h.code == 41 {
                                // LOCK_BATCH_MQ: answer with what was asked for.
                                b"{\"lockOKMQSet\":[{\"brokerName\":\"broker-a\",\"queueId\":0,\"topic\":\"T\"}]}"
                            } else if h.code == 38 {
                                // GET_CONSUMER_LIST_BY_GROUP: one other member.
                                b"{\"consumerIdList\":[\"10.9.9.9@other\"]}"
                            } else {
                                b""
                            };
                            let _ = tx.send(resp.encode_frame(body)).await;
                        });
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            connections,
            client_replies: replies,
        }
    }

    /// Sends a broker -> client request on every open connection.
    pub async fn push(&self, h: &Header, body: &[u8]) {
        let conns = self.connections.lock().unwrap().clone();
        for c in conns {
            let _ = c.send(h.encode_frame(body)).await;
        }
    }

    /// Requests seen with `code`.
    pub fn seen_code(&self, code: i32) -> Vec<(Header, Bytes, Vec<u8>)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _, _)| h.code == code)
            .cloned()
            .collect()
    }
}

/// What a 5.x broker with ACL 2.0 would answer to `h`, or `None` if it authenticates.
pub fn acl_refusal(h: &Header, body: &[u8], ak: &str, sk: &str) -> Option<String> {
    use rocketmq_sidecar::acl::{signature, SecretKey, UniqueKeyRule};
    let ext = h.ext_fields.clone().unwrap_or_default();
    let Some(given) = h.ext("AccessKey") else {
        return Some("username cannot be null.".into());
    };
    if given != ak {
        return Some(format!("User:{given} is not found."));
    }
    let expected = signature(
        &ext,
        body,
        &SecretKey::new(sk),
        UniqueKeyRule::ByRequestVersion,
        h.version,
    );
    (h.ext("Signature") != Some(expected.as_str())).then(|| "check signature failed.".into())
}

/// A TopicRouteData body in fastjson's non-standard form (bare integer keys).
pub fn fastjson_route(broker_name: &str, addr: SocketAddr) -> String {
    format!(
        "{{\"brokerDatas\":[{{\"brokerAddrs\":{{0:\"{addr}\"}},\"brokerName\":\"{broker_name}\",\"cluster\":\"C\",\"enableActingMaster\":false}}],\"filterServerTable\":{{}},\"queueDatas\":[{{\"brokerName\":\"{broker_name}\",\"perm\":6,\"readQueueNums\":4,\"topicSysFlag\":0,\"writeQueueNums\":4}}]}}"
    )
}

/// Config text for a sidecar on ephemeral ports. The migration gates are off: the fake
/// brokers answer no admin query, and these tests are about the relay; the gates are
/// tested on recorded answers (`src/gates/tests.rs`), through the admin API
/// (`tests/gates.rs`) and on the real servers (`tests/interop/test_gates.py`).
pub fn sidecar_config(
    old_ns: SocketAddr,
    new_ns: Option<SocketAddr>,
    bind_ip: &str,
    state_dir: Option<&Path>,
) -> String {
    let mut s = format!(
        "target = \"old\"\ndrain_seconds = 1\n[listen]\nnamesrv = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nhealth = \"127.0.0.1:0\"\nbroker_bind = \"{bind_ip}\"\n[upstream]\nnamesrv_timeout_ms = 1000\nconnect_timeout_ms = 1000\n[gates]\nenabled = false\n[clusters.old]\nnamesrv = \"{old_ns}\"\n"
    );
    if let Some(n) = new_ns {
        s.push_str(&format!("[clusters.new]\nnamesrv = \"{n}\"\n"));
    }
    if let Some(d) = state_dir {
        s = format!("state_dir = \"{}\"\n{s}", d.display());
    }
    s
}

/// Starts a sidecar from config text.
pub async fn start_sidecar(config: &str) -> Running {
    let env: HashMap<String, String> = HashMap::new();
    let cfg = Config::from_toml_str(config, &env).expect("valid config");
    App::new(cfg).start().await.expect("sidecar starts")
}

/// `PUT /route` with `{"target": target}`: (status, body).
pub async fn put_route(addr: SocketAddr, target: &str) -> (u16, String) {
    let body = format!("{{\"target\":\"{target}\"}}");
    http(addr, "PUT", "/route", Some(&body)).await
}

/// Minimal HTTP/1.1 client for the admin API: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A free loopback port (released at once; a small race with other binders remains).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Asks the name server at `ns` for `topic`'s route and returns the master's address.
pub async fn local_master(ns: SocketAddr, topic: &str) -> SocketAddr {
    let mut c = FrameClient::connect(ns).await;
    let (h, body) = c.call(&request(105, 1, &[("topic", topic)]), b"").await;
    assert_eq!(h.code, 0, "{:?}", h.remark);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("route JSON");
    v["brokerDatas"][0]["brokerAddrs"]["0"]
        .as_str()
        .expect("master address")
        .parse()
        .expect("ip:port")
}

/// A fresh temporary directory.
pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d = std::env::temp_dir().join(format!("rmq-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tempdir");
    d
}

/// Lays out a Secret volume as the kubelet does: `..<version>/<files>`, `..data ->
/// ..<version>`, `<name> -> ..data/<name>`; a new version is a new directory and an
/// atomic swap of the `..data` symlink.
pub fn kubelet_write(root: &Path, version: &str, files: &[(&str, &str)]) {
    let data = root.join(format!("..{version}"));
    std::fs::create_dir_all(&data).expect("mkdir");
    for (name, content) in files {
        std::fs::write(data.join(name), content).expect("write");
    }
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, root.join("..data")).expect("swap");
    for (name, _) in files {
        let link = root.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("symlink");
        }
    }
}

/// Marks a header as a response (for hand-built frames).
pub fn as_response(mut h: Header) -> Header {
    h.flag |= FLAG_RESPONSE;
    h
}
