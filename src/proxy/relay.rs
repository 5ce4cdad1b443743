//! One client connection to a broker listener, relayed over its own upstream connection
//! (the broker keys consumer-group membership by connection, so connections are never
//! shared). Frames flow both ways, including requests the broker sends to the client.
//! Frames that need no change are forwarded as the bytes they arrived as. There is no
//! idle or request timeout here: long-polling pulls are held 15-30 s by the broker, and
//! clients and brokers run their own idle timers. When one side closes, so does the other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::rename::FrameRewriter;
use super::RelayContext;
use crate::metrics::{code_group, response_code_label, Metrics};
use crate::protocol::code::request_name;
use crate::protocol::{FrameDecoder, FrameError, HeaderError, RawFrame};
use prometheus::IntCounter;
use rmq_common::Target;

/// How one direction of a relay ended.
#[derive(Debug, thiserror::Error)]
pub enum PumpEnd {
    /// The reading side closed cleanly between frames.
    #[error("closed")]
    Closed,
    /// The reading side closed in the middle of a frame.
    #[error("closed in the middle of a frame ({0} bytes pending)")]
    Truncated(usize),
    /// A frame was malformed or too large.
    #[error("{0}")]
    Frame(FrameError),
    /// A header that had to be rewritten could not be decoded.
    #[error("header could not be rewritten: {0}")]
    Rewrite(HeaderError),
    /// Reading failed.
    #[error("read failed: {0}")]
    Read(std::io::Error),
    /// Writing to the other side failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
}

/// Relays `client` (accepted on the listener of `upstream`) until either side closes.
pub async fn run(
    ctx: Arc<RelayContext>,
    client: TcpStream,
    peer: SocketAddr,
    cluster: Target,
    upstream: String,
) {
    let _guard = ctx.conns.open();
    let m = &ctx.metrics;
    let target = cluster.as_str();
    m.client_connections_opened
        .with_label_values(&["broker"])
        .inc();
    let client_active = m.client_connections_active.with_label_values(&["broker"]);
    client_active.inc();
    ctx.open_by_upstream
        .entry(upstream.clone())
        .or_insert((cluster, 0))
        .1 += 1;
    let cause = relay_connected(&ctx, client, peer, cluster, &upstream).await;
    if let Some(mut e) = ctx.open_by_upstream.get_mut(&upstream) {
        e.1 = e.1.saturating_sub(1);
    }
    client_active.dec();
    m.client_connections_closed
        .with_label_values(&["broker", cause])
        .inc();
    if cause != "upstream_unreachable" {
        m.upstream_connections_closed
            .with_label_values(&[target, "broker", cause])
            .inc();
        m.upstream_connections_active
            .with_label_values(&[target, "broker"])
            .dec();
    }
}

/// Connects upstream and relays; returns why the connection ended (a metric label).
async fn relay_connected(
    ctx: &Arc<RelayContext>,
    client: TcpStream,
    peer: SocketAddr,
    cluster: Target,
    upstream: &str,
) -> &'static str {
    let m = &ctx.metrics;
    let target = cluster.as_str();
    let connect = tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(upstream)).await;
    let broker = match connect {
        Ok(Ok(s)) => s,
        failed => {
            m.upstream_connect_failures
                .with_label_values(&[target, "broker"])
                .inc();
            match failed {
                Ok(Err(e)) => {
                    tracing::warn!(%peer, %cluster, %upstream, error = %e, "upstream broker connect failed; closing client connection")
                }
                _ => {
                    tracing::warn!(%peer, %cluster, %upstream, timeout_ms = ctx.connect_timeout.as_millis() as u64, "upstream broker connect timed out; closing client connection")
                }
            }
            return "upstream_unreachable";
        }
    };
    m.upstream_connections_opened
        .with_label_values(&[target, "broker"])
        .inc();
    m.upstream_connections_active
        .with_label_values(&[target, "broker"])
        .inc();
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    tracing::debug!(%peer, %cluster, %upstream, "relay opened");

    let runtime = ctx.cluster(cluster);
    let renamer = runtime.renamer.clone();
    let signer = runtime
        .signer
        .is_configured()
        .then(|| runtime.signer.clone());
    let rewriter = (renamer.is_active() || signer.is_some())
        .then(|| Arc::new(FrameRewriter::new(renamer, signer)));
    let (client_rd, client_wr) = client.into_split();
    let (broker_rd, broker_wr) = broker.into_split();
    let max = ctx.frame_max_bytes;

    let activity = Arc::new(Activity::new(m.clone(), cluster));
    let rw_up = rewriter.clone();
    let act_up = activity.clone();
    let up = pump(client_rd, broker_wr, max, move |f| {
        act_up.client_frame(&f);
        match &rw_up {
            Some(rw) => rw.client_to_broker(f),
            None => Ok(f.into_bytes()),
        }
    });
    let rw_down = rewriter;
    let act_down = activity.clone();
    let down = pump(broker_rd, client_wr, max, move |f| {
        act_down.broker_frame(&f);
        match &rw_down {
            Some(rw) => rw.broker_to_client(f),
            None => Ok(f.into_bytes()),
        }
    });
    let retire = retire_when_left_behind(ctx, cluster, &activity);

    // Returning drops both halves of both sockets: the other side is closed too.
    tokio::select! {
        end = up => end_of(ctx, peer, cluster, upstream, "client", end),
        end = down => end_of(ctx, peer, cluster, upstream, "broker", end),
        idle = retire => {
            tracing::info!(
                %peer, %cluster, %upstream, idle_seconds = idle.as_secs(),
                "closing connection to a cluster this pod has left: the app has stopped using it"
            );
            "retired"
        }
    }
}

/// Most requests remembered per connection for latency; beyond it, the oldest entries
/// are dropped (a broker that never answers must not grow memory).
const MAX_IN_FLIGHT: usize = 16_384;

/// When the app last spoke on a connection, and which of its requests await answers.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_client_ms: AtomicU64,
    /// opaque -> (request code, when it entered the sidecar)
    in_flight: Mutex<HashMap<i32, (i32, Instant)>>,
    metrics: Metrics,
    target: Target,
    // Resolved once per connection: these are touched by every frame.
    bytes_to_upstream: IntCounter,
    bytes_to_client: IntCounter,
}

impl Activity {
    fn new(metrics: Metrics, target: Target) -> Self {
        let bytes = |direction| {
            metrics
                .bytes
                .with_label_values(&[target.as_str(), direction])
        };
        Self {
            start: Instant::now(),
            last_client_ms: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
            bytes_to_upstream: bytes("to_upstream"),
            bytes_to_client: bytes("to_client"),
            metrics,
            target,
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (i32, Instant)>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client_frame(&self, f: &RawFrame) {
        let t = self.target.as_str();
        self.last_client_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.bytes_to_upstream.inc_by(f.len() as u64);
        if f.is_response() {
            return;
        }
        self.metrics
            .requests
            .with_label_values(&[t, "broker", request_name(f.code())])
            .inc();
        if !f.is_oneway() {
            let mut map = self.in_flight();
            if map.len() >= MAX_IN_FLIGHT {
                map.clear();
            }
            map.insert(f.opaque(), (f.code(), Instant::now()));
        }
    }

    fn broker_frame(&self, f: &RawFrame) {
        let t = self.target.as_str();
        self.bytes_to_client.inc_by(f.len() as u64);
        if !f.is_response() {
            self.metrics
                .broker_requests
                .with_label_values(&[t, request_name(f.code())])
                .inc();
            return;
        }
        let Some((code, started)) = self.in_flight().remove(&f.opaque()) else {
            return;
        };
        self.metrics
            .responses
            .with_label_values(&[
                t,
                "broker",
                request_name(code),
                response_code_label(f.code()),
            ])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[t, "broker", code_group(code)])
            .observe(started.elapsed().as_secs_f64());
    }

    fn pending(&self) -> usize {
        self.in_flight().len()
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_client_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Resolves when the pod uses this cluster for no role any more, nothing the app asked is pending,
/// and the app has sent nothing for `retire_idle`: the client has dropped this broker
/// (Java and Go clients heartbeat every broker they use every 30 s). Closing the
/// connection then lets the broker move the app's queues to other group members at
/// once instead of after its 120 s channel expiry. Also resolves, once nothing is in
/// flight, after `POST /drain`.
async fn retire_when_left_behind(
    ctx: &RelayContext,
    cluster: Target,
    activity: &Activity,
) -> Duration {
    let idle = ctx.retire_idle.unwrap_or(Duration::MAX);
    let tick = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if *ctx.draining.borrow() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = ctx.drain_requested() => {}
            }
        }
        // After `POST /drain`, every connection with nothing in flight is closed.
        if *ctx.draining.borrow() && activity.pending() == 0 {
            return activity.idle_for();
        }
        if ctx.retire_idle.is_some()
            && !ctx.route.borrow().uses(cluster)
            && activity.pending() == 0
            && activity.idle_for() >= idle
        {
            return activity.idle_for();
        }
    }
}

/// Logs how a relay ended, counts rejected frames, and names the cause.
fn end_of(
    ctx: &RelayContext,
    peer: SocketAddr,
    cluster: Target,
    upstream: &str,
    side: &str,
    end: PumpEnd,
) -> &'static str {
    match &end {
        PumpEnd::Closed => {
            tracing::debug!(%peer, %cluster, %upstream, closed_by = side, "relay closed");
            if side == "client" {
                "client_closed"
            } else {
                "upstream_closed"
            }
        }
        PumpEnd::Frame(_) | PumpEnd::Rewrite(_) | PumpEnd::Truncated(_) => {
            ctx.metrics
                .frames_rejected
                .with_label_values(&[end.reason()])
                .inc();
            tracing::warn!(%peer, %cluster, %upstream, from = side, reason = %end, "closing connection: bad frame");
            "bad_frame"
        }
        PumpEnd::Read(_) | PumpEnd::Write(_) => {
            tracing::debug!(%peer, %cluster, %upstream, side, reason = %end, "relay ended");
            "io_error"
        }
    }
}

// === impl PumpEnd ===

impl PumpEnd {
    /// Short reason label for `frames_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PumpEnd::Frame(e) => e.reason(),
            PumpEnd::Rewrite(_) => "bad_header",
            PumpEnd::Truncated(_) => "truncated",
            PumpEnd::Closed | PumpEnd::Read(_) | PumpEnd::Write(_) => "none",
        }
    }
}

/// Largest run of small frames gathered into one write.
const BATCH_BYTES: usize = 16 * 1024;

async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, batch: &mut BytesMut) -> std::io::Result<()> {
    if !batch.is_empty() {
        wr.write_all(batch).await?;
        batch.clear();
    }
    Ok(())
}

/// Reads frames from `rd`, passes each through `transform` and writes the result to `wr`.
pub async fn pump<R, W, F>(mut rd: R, mut wr: W, max_frame: usize, transform: F) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: Fn(RawFrame) -> Result<Bytes, HeaderError>,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Small frames decoded from one read leave in one write (one syscall, not one each);
    // large frames are written as they are, without a copy.
    let mut batch = BytesMut::with_capacity(BATCH_BYTES);
    let mut decoder = FrameDecoder::new(max_frame);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let out = match transform(frame) {
                        Ok(out) => out,
                        Err(e) => return PumpEnd::Rewrite(e),
                    };
                    if batch.len() + out.len() <= BATCH_BYTES {
                        batch.extend_from_slice(&out);
                        continue;
                    }
                    if let Err(e) = flush(&mut wr, &mut batch).await {
                        return PumpEnd::Write(e);
                    }
                    if let Err(e) = wr.write_all(&out).await {
                        return PumpEnd::Write(e);
                    }
                }
                Ok(None) => break,
                Err(e) => return PumpEnd::Frame(e),
            }
        }
        if let Err(e) = flush(&mut wr, &mut batch).await {
            return PumpEnd::Write(e);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => return PumpEnd::Closed,
            Ok(0) => return PumpEnd::Truncated(buf.len()),
            Ok(_) => {}
            Err(e) => return PumpEnd::Read(e),
        }
    }
}
