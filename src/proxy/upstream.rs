//! The sidecar's own client for one cluster's name servers. Requests are multiplexed
//! over one connection per name server with the sidecar's own opaques. Name servers are
//! tried in turn; the last one that answered is tried first next time.
//!
//! A dead or hung name server must cost the app's queries little: while another name
//! server remains to be tried, an attempt gets at most [`FAILOVER_AFTER`] (connect and
//! answer), well inside the Java client's own 3 s timeout; a name server that failed is
//! tried last for [`DOWN_FOR`]; and no lock is held across a connect, so concurrent
//! queries never queue behind one.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::codec::Decoder;

use super::Signer;
use crate::metrics::Metrics;
use crate::protocol::{FrameDecoder, Header, RawFrame};
use rmq_common::Target;

/// Longest an attempt may take while another name server remains to be tried.
pub const FAILOVER_AFTER: Duration = Duration::from_millis(1000);
/// How long a name server that failed is tried only after the others.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// Why no name server answered.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// The cluster has no name servers configured.
    #[error("cluster '{0}' has no name servers configured")]
    NotConfigured(Target),
    /// Every name server failed; one reason per address.
    #[error("no name server of cluster '{target}' answered: {}", .reasons.join("; "))]
    AllFailed {
        /// The cluster.
        target: Target,
        /// `addr: reason` for each attempt.
        reasons: Vec<String>,
    },
}

/// A successful answer and who gave it.
#[derive(Debug)]
pub struct NsAnswer {
    /// The response frame (carrying the sidecar's opaque).
    pub frame: RawFrame,
    /// The name server that answered.
    pub addr: String,
}

/// Client for one cluster's name servers.
#[derive(Debug)]
pub struct NameServerClient {
    target: Target,
    addrs: Vec<String>,
    preferred: AtomicUsize,
    conns: Vec<Mutex<Option<Arc<NsConn>>>>,
    /// Per name server: until when it counts as down (ms since `epoch`; 0 = up).
    down_until: Vec<AtomicU64>,
    epoch: Instant,
    next_opaque: AtomicI32,
    connect_timeout: Duration,
    timeout: Duration,
    max_frame: usize,
    signer: Arc<Signer>,
    metrics: Metrics,
    /// The cluster's namespace: topics in requests are wrapped in it.
    namespace: Option<crate::protocol::namespace::Namespace>,
}

#[derive(Debug)]
struct NsConn {
    tx: mpsc::Sender<Bytes>,
    pending: Arc<DashMap<i32, oneshot::Sender<RawFrame>>>,
    alive: Arc<AtomicBool>,
}

// === impl NameServerClient ===

impl NameServerClient {
    /// A client for `addrs` (may be empty: every call then fails with `NotConfigured`).
    pub fn new(
        target: Target,
        addrs: Vec<String>,
        connect_timeout: Duration,
        timeout: Duration,
        max_frame: usize,
        signer: Arc<Signer>,
        metrics: Metrics,
    ) -> Self {
        let conns = addrs.iter().map(|_| Mutex::new(None)).collect();
        let down_until = addrs.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            target,
            addrs,
            preferred: AtomicUsize::new(0),
            conns,
            down_until,
            epoch: Instant::now(),
            next_opaque: AtomicI32::new(1),
            connect_timeout,
            timeout,
            max_frame,
            signer,
            metrics,
            namespace: None,
        }
    }

    /// Wraps the topics of every request in `namespace` (a TDMQ 4.x cluster).
    pub fn with_namespace(
        mut self,
        namespace: Option<crate::protocol::namespace::Namespace>,
    ) -> Self {
        self.namespace = namespace;
        self
    }

    /// The configured addresses.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The address tried first.
    pub fn preferred(&self) -> Option<&str> {
        self.addrs
            .get(self.preferred.load(Ordering::Relaxed))
            .map(String::as_str)
    }

    /// Sends `header` + `body` (the opaque is replaced by the sidecar's own) and waits
    /// for the answer. A oneway request returns `Ok(None)` once written.
    pub async fn call(&self, header: &Header, body: &[u8]) -> Result<Option<NsAnswer>, NsError> {
        if self.addrs.is_empty() {
            return Err(NsError::NotConfigured(self.target));
        }
        let start = self.preferred.load(Ordering::Relaxed);
        let order = self.order(start);
        let mut reasons = Vec::new();
        for (n, &idx) in order.iter().enumerate() {
            let last = n + 1 == order.len();
            match self.call_one(idx, header, body, last).await {
                Ok(answer) => {
                    self.down_until[idx].store(0, Ordering::Relaxed);
                    if idx != start {
                        self.metrics
                            .namesrv_failovers
                            .with_label_values(&[self.target.as_str()])
                            .inc();
                        tracing::info!(
                            cluster = %self.target,
                            from = %self.addrs[start],
                            to = %self.addrs[idx],
                            "name server failover"
                        );
                    }
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(reason) => {
                    self.mark_down(idx);
                    tracing::debug!(cluster = %self.target, addr = %self.addrs[idx], %reason, "name server attempt failed");
                    reasons.push(format!("{}: {reason}", self.addrs[idx]));
                }
            }
        }
        Err(NsError::AllFailed {
            target: self.target,
            reasons,
        })
    }

    /// Name servers in the order to try them: from `start` round the list, those that
    /// failed within [`DOWN_FOR`] last.
    fn order(&self, start: usize) -> Vec<usize> {
        let now = self.now_ms();
        let (mut up, mut down): (Vec<usize>, Vec<usize>) = (0..self.addrs.len())
            .map(|i| (start + i) % self.addrs.len())
            .partition(|&i| self.down_until[i].load(Ordering::Relaxed) <= now);
        up.append(&mut down);
        up
    }

    fn mark_down(&self, idx: usize) {
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        self.down_until[idx].store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// One attempt at name server `idx`; `last` when no other remains to be tried (then
    /// it gets the full timeouts).
    async fn call_one(
        &self,
        idx: usize,
        header: &Header,
        body: &[u8],
        last: bool,
    ) -> Result<Option<NsAnswer>, String> {
        let budget = |full: Duration| if last { full } else { full.min(FAILOVER_AFTER) };
        let conn = self.connection(idx, budget(self.connect_timeout)).await?;
        let timeout = budget(self.timeout);
        let mut header = header.clone();
        header.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        // A namespaced cluster knows its topics by their wrapped names (signed as wrapped).
        if let Some(ns) = &self.namespace {
            crate::protocol::namespace::wrap_request_header(ns, &mut header);
        }
        // Name servers of a cluster with credentials get signed requests too (TDMQ's and
        // 5.x proxies check them; Apache name servers ignore them).
        let signed = self.signer.is_configured() && self.signer.sign(&mut header, body);
        let frame = header.encode_frame(body);
        if header.is_oneway() {
            conn.tx
                .send(frame)
                .await
                .map_err(|_| "connection closed".to_owned())?;
            return Ok(None);
        }
        let (tx, rx) = oneshot::channel();
        conn.pending.insert(header.opaque, tx);
        if conn.tx.send(frame).await.is_err() {
            conn.pending.remove(&header.opaque);
            return Err("connection closed".to_owned());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(frame)) => {
                self.signer.observe_server_version(frame.version());
                if signed && frame.code() != 0 {
                    if let Ok(h) = Header::decode(frame.serialize_type(), frame.header_bytes()) {
                        self.signer.note_answer(h.code, h.remark.as_deref());
                    }
                }
                Ok(Some(NsAnswer {
                    frame,
                    addr: self.addrs[idx].clone(),
                }))
            }
            Ok(Err(_)) => Err("connection closed before the answer".to_owned()),
            Err(_) => {
                conn.pending.remove(&header.opaque);
                // Like the Java client: a timed-out connection is not trusted again.
                conn.alive.store(false, Ordering::SeqCst);
                *self.conns[idx].lock().await = None;
                Err(format!("no answer within {} ms", timeout.as_millis()))
            }
        }
    }

    /// The open connection to name server `idx`, or a new one. The connect happens
    /// without the slot's lock held: a slow connect holds up no other query.
    async fn connection(
        &self,
        idx: usize,
        connect_timeout: Duration,
    ) -> Result<Arc<NsConn>, String> {
        if let Some(conn) = self.conns[idx].lock().await.as_ref() {
            if conn.alive.load(Ordering::SeqCst) {
                return Ok(conn.clone());
            }
        }
        let addr = &self.addrs[idx];
        let labels = [self.target.as_str(), "namesrv"];
        let connected = tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await;
        let stream = match connected {
            Ok(Ok(s)) => s,
            failed => {
                self.metrics
                    .upstream_connect_failures
                    .with_label_values(&labels)
                    .inc();
                return Err(match failed {
                    Ok(Err(e)) => format!("connect failed: {e}"),
                    _ => format!("connect timed out after {} ms", connect_timeout.as_millis()),
                });
            }
        };
        let mut slot = self.conns[idx].lock().await;
        if let Some(conn) = slot.as_ref() {
            // Another query connected meanwhile: use its connection, drop this one.
            if conn.alive.load(Ordering::SeqCst) {
                return Ok(conn.clone());
            }
        }
        let _ = stream.set_nodelay(true);
        self.metrics
            .upstream_connections_opened
            .with_label_values(&labels)
            .inc();
        self.metrics
            .upstream_connections_active
            .with_label_values(&labels)
            .inc();
        let conn = Arc::new(NsConn::spawn(
            stream,
            addr.clone(),
            self.max_frame,
            self.metrics.clone(),
            self.target,
        ));
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

// === impl NsConn ===

impl NsConn {
    fn spawn(
        stream: TcpStream,
        addr: String,
        max_frame: usize,
        metrics: Metrics,
        target: Target,
    ) -> Self {
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        let pending: Arc<DashMap<i32, oneshot::Sender<RawFrame>>> = Arc::new(DashMap::new());
        let alive = Arc::new(AtomicBool::new(true));

        let alive_w = alive.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
            alive_w.store(false, Ordering::SeqCst);
        });

        let alive_r = alive.clone();
        let pending_r = pending.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(8 * 1024);
            let mut decoder = FrameDecoder::new(max_frame);
            let reason = 'read: loop {
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            if frame.is_response() {
                                if let Some((_, waiter)) = pending_r.remove(&frame.opaque()) {
                                    let _ = waiter.send(frame);
                                }
                            }
                            // Name servers send no requests to clients; anything else is ignored.
                        }
                        Ok(None) => break,
                        Err(e) => break 'read format!("malformed frame: {e}"),
                    }
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break "closed by the name server".to_owned(),
                    Ok(_) => {}
                    Err(e) => break format!("read failed: {e}"),
                }
            };
            tracing::debug!(%addr, %reason, "name server connection ended");
            let labels = [target.as_str(), "namesrv"];
            let cause = if reason.starts_with("closed") {
                "upstream_closed"
            } else {
                "error"
            };
            metrics
                .upstream_connections_closed
                .with_label_values(&[target.as_str(), "namesrv", cause])
                .inc();
            metrics
                .upstream_connections_active
                .with_label_values(&labels)
                .dec();
            alive_r.store(false, Ordering::SeqCst);
            // Dropping the waiters tells every pending call that the connection is gone.
            pending_r.clear();
        });

        Self { tx, pending, alive }
    }
}

/// Reads frames from `stream` into `buf` until the response to `opaque` (the sidecar's own
/// requests to a broker: the credential check, redirected member lists, the gates' reads);
/// other frames are skipped. The error says why none came.
pub async fn read_answer(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
    opaque: i32,
) -> Result<RawFrame, String> {
    loop {
        if let Some(frame) = decoder.decode(buf).map_err(|e| e.to_string())? {
            if frame.is_response() && frame.opaque() == opaque {
                return Ok(frame);
            }
            continue;
        }
        match stream.read_buf(buf).await {
            Ok(0) => return Err("the broker closed the connection".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}
