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
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use super::rename::FrameRewriter;
use super::roles::{RoleFilter, Upward};
use super::RelayContext;
use crate::metrics::{code_group, response_code_label, Metrics};
use crate::protocol::code::{request, request_name, response};
use crate::protocol::{FrameDecoder, FrameError, Header, HeaderError, OutFrame, RawFrame};
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
    /// An incomplete frame was not finished in time.
    #[error("an incomplete frame ({0} bytes) was not finished in time")]
    Stalled(usize),
    /// An incomplete frame would have taken the bytes held in incomplete frames across
    /// every connection past their budget.
    #[error("an incomplete frame ({0} bytes) would go past the budget of incomplete frames of all connections ({1} bytes)")]
    OverBudget(usize, usize),
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
            ctx.upstream_refused(upstream);
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
    let namespace = runtime.namespace.clone();
    let rewriter = (renamer.is_active() || signer.is_some() || namespace.is_some())
        .then(|| Arc::new(FrameRewriter::new(renamer, signer.clone(), namespace)));
    let roles = Arc::new(RoleFilter::new(
        cluster,
        m.clone(),
        ctx.transactional.clone(),
        ctx.client_ids.clone(),
        ctx.usage.clone(),
    ));
    // The app's write half outlives the pumps (dropping it sends the app a FIN): after
    // the broker closed, the app's side is closed only once `after_broker_closed` is done.
    let (client_rd, mut client_wr) = client.into_split();
    let (broker_rd, broker_wr) = broker.into_split();
    let max = ctx.frame_max_bytes;
    // The app's side counts against the budget of incomplete frames (a hostile or broken
    // client is what it guards against); the broker's answers (large pulls) never do.
    let limits = PumpLimits {
        max_frame: max,
        partial_frame: ctx.partial_frame,
        budget: None,
    };
    let app_limits = PumpLimits {
        budget: Some(ctx.partial_budget.clone()),
        ..limits.clone()
    };
    // Frames the sidecar itself sends on this connection: to the broker (UNREGISTER_CLIENT
    // when a role leaves this cluster) and to the app (answers given here, redirected
    // answers, NOTIFY_CONSUMER_IDS_CHANGED).
    let (to_broker, to_broker_rx) = mpsc::channel::<Bytes>(INJECTED_QUEUE);
    let (to_client, to_client_rx) = mpsc::channel::<Injected>(INJECTED_QUEUE);

    let activity = Arc::new(Activity::new(m.clone(), cluster));
    let rw_up = rewriter.clone();
    let act_up = activity.clone();
    let roles_up = roles.clone();
    let route_up = ctx.route.clone();
    let redirect_ctx = ctx.clone();
    let answer_tx = to_client.clone();
    let up = pump(
        client_rd,
        broker_wr,
        app_limits,
        Some(to_broker_rx),
        move |f| {
            act_up.client_frame(&f);
            let targets = route_up.borrow().targets();
            // Only a member-list request asks; every other frame skips the route lookup.
            let refreshed = f.code() == request::GET_CONSUMER_LIST_BY_GROUP
                && redirect_ctx.consumers_refreshed();
            let f = match roles_up.client_to_broker(f, targets, refreshed, max)? {
                Upward::Forward(f) => f,
                Upward::Answer(bytes) => {
                    let _ = answer_tx.try_send(Injected::Answer(bytes));
                    return Ok(None);
                }
                Upward::Redirect(target, f) => {
                    let (ctx, tx) = (redirect_ctx.clone(), answer_tx.clone());
                    let roles = roles_up.clone();
                    tokio::spawn(async move {
                        let mut answer = redirect(&ctx, target, f).await;
                        if let Ok(frame) = RawFrame::parse(answer.clone(), usize::MAX) {
                            if frame.code() == response::SUCCESS {
                                if let Some(with_me) = roles.with_own_member(&frame) {
                                    answer = with_me;
                                }
                            }
                        }
                        let _ = tx.send(Injected::Answer(answer)).await;
                    });
                    return Ok(None);
                }
            };
            match &rw_up {
                Some(rw) => rw.client_to_broker(f).map(Some),
                None => Ok(Some(OutFrame::Whole(f.into_bytes()))),
            }
        },
    );
    let rw_down = rewriter;
    let act_down = activity.clone();
    let roles_down = roles.clone();
    let down = pump_to_client(
        broker_rd,
        &mut client_wr,
        limits,
        to_client_rx,
        &activity,
        move |f| {
            act_down.broker_frame(&f);
            if roles_down.is_own_answer(&f) {
                return Ok(None);
            }
            if let Some(with_me) = roles_down.member_list_answer(&f) {
                // A member list names no broker: renaming and signing do not apply.
                return Ok(Some(OutFrame::Whole(with_me)));
            }
            match &rw_down {
                Some(rw) => rw.broker_to_client(f).map(Some),
                None => Ok(Some(OutFrame::Whole(f.into_bytes()))),
            }
        },
    );
    let retire = retire_when_left_behind(ctx, cluster, &activity);
    tokio::pin!(up, down, retire);
    let mut route_rx = ctx.route.clone();
    let mut before = route_rx.borrow_and_update().targets();
    let mut notify_rx = ctx.consumer_notify.subscribe();
    notify_rx.borrow_and_update();

    // Returning drops both halves of both sockets: the other side is closed too.
    loop {
        tokio::select! {
            end = &mut up => return end_of(ctx, peer, cluster, upstream, "client", end),
            end = &mut down => {
                if matches!(end, PumpEnd::Closed | PumpEnd::Truncated(_) | PumpEnd::Read(_)) {
                    after_broker_closed(ctx, upstream).await;
                }
                return end_of(ctx, peer, cluster, upstream, "broker", end);
            }
            idle = &mut retire => {
                tracing::info!(
                    %peer, %cluster, %upstream, idle_seconds = idle.as_secs(),
                    "closing connection to a cluster this pod has left: the app has stopped using it"
                );
                return "retired";
            }
            Ok(()) = route_rx.changed() => {
                let now = route_rx.borrow_and_update().targets();
                let change = roles.on_route_change(before, now);
                before = now;
                // The app first: told to rebalance, it lets this cluster's queues go and
                // persists their offsets. The broker hears the unregister a moment later, so
                // the members that take the queues over start from those offsets, not from
                // older ones (every message in between would be consumed twice).
                for frame in change.to_client {
                    let _ = to_client.try_send(Injected::Request(frame));
                }
                let mut unregisters = Vec::new();
                for mut header in change.to_broker {
                    if let Some(ns) = &ctx.cluster(cluster).namespace {
                        crate::protocol::namespace::wrap_request_header(ns, &mut header);
                    }
                    if let Some(signer) = &signer {
                        signer.sign(&mut header, &[]);
                    }
                    let group = header.ext("consumerGroup").or(header.ext("producerGroup")).unwrap_or("").to_owned();
                    tracing::info!(%peer, %cluster, %upstream, %group, delay_ms = UNREGISTER_AFTER.as_millis() as u64, "a role left this cluster: unregistering the app's group from the broker");
                    unregisters.push(header.encode_frame(&[]));
                }
                if !unregisters.is_empty() {
                    let tx = to_broker.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(UNREGISTER_AFTER).await;
                        for frame in unregisters {
                            let _ = tx.try_send(frame);
                        }
                    });
                }
            }
            Ok(()) = notify_rx.changed() => {
                notify_rx.borrow_and_update();
                if let Some(frame) = roles.notify_client() {
                    let _ = to_client.try_send(Injected::Request(frame));
                }
            }
        }
    }
}

/// Longest the probe of a broker that closed a connection may take.
const CLOSED_PROBE: Duration = Duration::from_millis(500);
/// How long a probe connection to a broker that closed a connection must stay quiet for
/// the broker to count as alive.
const PROBE_SETTLE: Duration = Duration::from_millis(50);
/// Longest a relay waits for the listeners of a broker that refuses connections to close.
const LISTENER_CLOSE_WAIT: Duration = Duration::from_millis(100);

/// After a broker closed an app's connection, and before the sidecar closes the app's side:
/// a broker that now refuses connections (it died, or is restarting) has its listeners
/// closed first, so the app's reconnect is refused at once, as it would be by the broker,
/// and the client sends to another broker. Closed afterwards, the listener would accept
/// that reconnect, take the request and drop it, and a Java client would wait for its
/// request timeout (3 s) first. A broker that still accepts only closed this connection.
async fn after_broker_closed(ctx: &RelayContext, upstream: &str) {
    let limit = CLOSED_PROBE.min(ctx.connect_timeout);
    let down = match tokio::time::timeout(limit, TcpStream::connect(upstream)).await {
        // A broker being killed can keep its listening socket a moment longer than its
        // connections: the probe lands in that socket's backlog and is reset right after.
        // A live broker says nothing on a new connection, so quiet means alive.
        Ok(Ok(probe)) => {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(PROBE_SETTLE, probe.peek(&mut byte)).await {
                Err(_) | Ok(Ok(1..)) => return,
                Ok(Ok(_)) => "its new connection was closed at once".to_owned(),
                Ok(Err(e)) => format!("its new connection failed: {e}"),
            }
        }
        Ok(Err(e)) => format!("connect failed: {e}"),
        Err(_) => format!("no connection within {} ms", limit.as_millis()),
    };
    tracing::info!(%upstream, reason = %down, "broker closed a connection and now refuses connections: closing its listeners before the app's connection");
    ctx.upstream_refused_and_closed(upstream, LISTENER_CLOSE_WAIT)
        .await;
}

/// How long after telling the app to rebalance the sidecar unregisters its groups from a
/// cluster a role left (the app persists the offsets of the queues it lets go meanwhile).
pub const UNREGISTER_AFTER: Duration = Duration::from_secs(2);

/// Frames the sidecar queues per connection, at most (role changes and answers given here
/// are rare; a full queue drops the frame and the client retries).
const INJECTED_QUEUE: usize = 64;

/// A frame the sidecar writes to the app itself.
#[derive(Debug)]
enum Injected {
    /// The answer to one of the app's requests (counted as its response).
    Answer(Bytes),
    /// A request to the app, as a broker would send it.
    Request(Bytes),
}

/// Sends `frame` (a request of the app) to a broker of `target` on a connection of the
/// sidecar's own, signed if the cluster has credentials, and returns the answer with the
/// app's opaque; SYSTEM_ERROR with the reason if no answer came.
async fn redirect(ctx: &RelayContext, target: Target, frame: RawFrame) -> Bytes {
    let (opaque, code) = (frame.opaque(), frame.code());
    let failed = |why: String| {
        ctx.metrics
            .role_filter
            .with_label_values(&[target.as_str(), "redirect_failed"])
            .inc();
        tracing::warn!(%target, code, reason = %why, "request for the consumers' cluster could not be redirected");
        let mut reply = Header::request(response::SYSTEM_ERROR, opaque);
        reply.flag = crate::protocol::code::FLAG_RESPONSE;
        reply.remark = Some(format!("rmq-sidecar: {why}"));
        reply.encode_frame(&[])
    };
    let mut header = match Header::decode(frame.serialize_type(), frame.header_bytes()) {
        Ok(h) => h,
        Err(e) => return failed(format!("the request's header: {e}")),
    };
    let Some(addr) = ctx.broker_of(target) else {
        return failed(format!("no broker of cluster '{target}' is known yet"));
    };
    let cluster = ctx.cluster(target);
    let body = frame.body();
    if let Some(ns) = &cluster.namespace {
        crate::protocol::namespace::wrap_request_header(ns, &mut header);
    }
    if cluster.signer.is_configured() {
        cluster.signer.sign(&mut header, &body);
    }
    let timeout = ctx.connect_timeout.max(Duration::from_secs(3));
    let exchange = async {
        let mut stream = TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        stream
            .write_all_buf(&mut header.encode_split(body).into_buf())
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let mut buf = BytesMut::with_capacity(4096);
        let mut decoder = FrameDecoder::new(ctx.frame_max_bytes);
        super::upstream::read_answer(&mut stream, &mut buf, &mut decoder, opaque).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => {
            tracing::debug!(%target, %addr, code, "request answered by the consumers' cluster");
            answer.into_bytes()
        }
        Ok(Err(e)) => failed(format!("{addr}: {e}")),
        Err(_) => failed(format!(
            "{addr}: no answer within {} ms",
            timeout.as_millis()
        )),
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
        PumpEnd::Frame(_)
        | PumpEnd::Rewrite(_)
        | PumpEnd::Truncated(_)
        | PumpEnd::Stalled(_)
        | PumpEnd::OverBudget(..) => {
            ctx.metrics
                .frames_rejected
                .with_label_values(&[end.reason()])
                .inc();
            if let Some(suppressed) = ctx.bad_frame_log() {
                tracing::warn!(%peer, %cluster, %upstream, from = side, reason = %end, suppressed, "closing connection: bad frame");
            }
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
            PumpEnd::Stalled(_) => "stalled",
            PumpEnd::OverBudget(..) => "over_budget",
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

/// Writes one frame: a split frame (a new head before the body it arrived with) in
/// vectored writes, partial writes continued where they stopped.
async fn write_frame<W: AsyncWrite + Unpin>(wr: &mut W, out: OutFrame) -> std::io::Result<()> {
    match out {
        OutFrame::Whole(bytes) => wr.write_all(&bytes).await,
        split => wr.write_all_buf(&mut split.into_buf()).await,
    }
}

/// Reads frames from `rd`, passes each through `transform` and writes what it returns to
/// `wr` (`None`: nothing to send). Frames from `inject` are written between frames.
pub async fn pump<R, W, F>(
    mut rd: R,
    mut wr: W,
    limits: PumpLimits,
    mut inject: Option<mpsc::Receiver<Bytes>>,
    transform: F,
) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: Fn(RawFrame) -> Result<Option<OutFrame>, HeaderError>,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Small frames decoded from one read leave in one write (one syscall, not one each);
    // large frames are written as they are, without a copy (a changed one as its new head
    // and its original body, in one vectored write).
    let mut batch = BytesMut::with_capacity(BATCH_BYTES);
    let mut decoder = FrameDecoder::new(limits.max_frame);
    // When the incomplete frame at the head of `buf` began to arrive.
    let mut partial_since: Option<tokio::time::Instant> = None;
    // This direction's share of the budget of incomplete frames (given back when it ends).
    let mut claim = limits.budget.as_deref().map(PartialBudget::claim);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let out = match transform(frame) {
                        Ok(Some(out)) => out,
                        Ok(None) => continue,
                        Err(e) => return PumpEnd::Rewrite(e),
                    };
                    if batch.len() + out.len() <= BATCH_BYTES {
                        out.copy_into(&mut batch);
                        continue;
                    }
                    if let Err(e) = flush(&mut wr, &mut batch).await {
                        return PumpEnd::Write(e);
                    }
                    if let Err(e) = write_frame(&mut wr, out).await {
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
        // What is left in `buf` is one incomplete frame: it counts against the budget of
        // every connection's incomplete frames until it is complete.
        if let Some(claim) = claim.as_mut() {
            if !claim.hold(buf.len()) {
                return PumpEnd::OverBudget(buf.len(), claim.limit());
            }
        }
        // Only an incomplete frame has a deadline: a complete request waiting for its
        // answer (a held long-poll) is never cut.
        let stall = if buf.is_empty() {
            partial_since = None;
            None
        } else {
            Some(
                *partial_since.get_or_insert_with(tokio::time::Instant::now) + limits.partial_frame,
            )
        };
        let read = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            Some(frame) = recv_some(&mut inject) => {
                if let Err(e) = wr.write_all(&frame).await {
                    return PumpEnd::Write(e);
                }
                continue;
            }
            _ = sleep_until_some(stall) => return PumpEnd::Stalled(buf.len()),
        };
        match read {
            Ok(0) if buf.is_empty() => return PumpEnd::Closed,
            Ok(0) => return PumpEnd::Truncated(buf.len()),
            Ok(_) => {}
            Err(e) => return PumpEnd::Read(e),
        }
    }
}

/// What bounds one direction of a relay.
#[derive(Debug, Clone)]
pub struct PumpLimits {
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Longest an incomplete frame may take to finish.
    pub partial_frame: Duration,
    /// The budget of incomplete frames shared by every app connection (`None`: unbounded,
    /// the broker's side).
    pub budget: Option<Arc<PartialBudget>>,
}

/// Bytes held in incomplete frames by every app connection together, and their cap
/// (`limits.partial_frame_budget_bytes`): a few connections that each announce a large
/// frame and trickle it in cannot take the pod's memory between them.
#[derive(Debug)]
pub struct PartialBudget {
    held: std::sync::atomic::AtomicUsize,
    /// The cap, in bytes.
    pub limit: usize,
    /// `rmq_sidecar_incomplete_frame_bytes`, set on every change.
    gauge: Option<prometheus::IntGauge>,
}

/// One direction's share of a [`PartialBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BudgetClaim<'a> {
    budget: &'a PartialBudget,
    held: usize,
}

// === impl PartialBudget ===

impl PartialBudget {
    /// A budget of `limit` bytes, nothing held; `gauge` (if any) follows what is held.
    pub fn new(limit: usize, gauge: Option<prometheus::IntGauge>) -> Self {
        Self {
            held: std::sync::atomic::AtomicUsize::new(0),
            limit,
            gauge,
        }
    }

    fn report(&self, held: usize) {
        if let Some(g) = &self.gauge {
            g.set(i64::try_from(held).unwrap_or(i64::MAX));
        }
    }

    /// A claim holding nothing yet.
    pub fn claim(&self) -> BudgetClaim<'_> {
        BudgetClaim {
            budget: self,
            held: 0,
        }
    }

    /// Bytes held now by every claim together.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }
}

// === impl BudgetClaim ===

impl BudgetClaim<'_> {
    /// The budget's cap, in bytes.
    pub fn limit(&self) -> usize {
        self.budget.limit
    }

    /// Makes this claim hold `bytes`. False (and the claim unchanged) when growing to it
    /// would take every claim together past the budget's limit; shrinking always succeeds.
    pub fn hold(&mut self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        if bytes == self.held {
            return true;
        }
        if bytes < self.held {
            let shrink = self.held - bytes;
            let before = self.budget.held.fetch_sub(shrink, Ordering::Relaxed);
            self.budget.report(before - shrink);
            self.held = bytes;
            return true;
        }
        let grow = bytes - self.held;
        let before = self.budget.held.fetch_add(grow, Ordering::Relaxed);
        if before + grow > self.budget.limit {
            self.budget.held.fetch_sub(grow, Ordering::Relaxed);
            return false;
        }
        self.budget.report(before + grow);
        self.held = bytes;
        true
    }
}

impl Drop for BudgetClaim<'_> {
    fn drop(&mut self) {
        self.hold(0);
    }
}

async fn recv_some(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `deadline`, or never when there is none (the stall bound of a connection
/// that holds an incomplete frame).
pub(crate) async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// [`pump`] towards the app: frames the sidecar writes itself (answers given here are
/// counted as responses to the app's requests) are interleaved between the broker's.
async fn pump_to_client<R, W, F>(
    rd: R,
    wr: W,
    limits: PumpLimits,
    mut injected: mpsc::Receiver<Injected>,
    activity: &Arc<Activity>,
    transform: F,
) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: Fn(RawFrame) -> Result<Option<OutFrame>, HeaderError>,
{
    let (tx, rx) = mpsc::channel::<Bytes>(INJECTED_QUEUE);
    let activity = activity.clone();
    let forward = async move {
        while let Some(item) = injected.recv().await {
            let bytes = match item {
                Injected::Answer(bytes) => {
                    if let Ok(f) = RawFrame::parse(bytes.clone(), usize::MAX) {
                        activity.broker_frame(&f);
                    }
                    bytes
                }
                Injected::Request(bytes) => bytes,
            };
            if tx.send(bytes).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        end = pump(rd, wr, limits, Some(rx), transform) => end,
        _ = forward => PumpEnd::Closed,
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use crate::protocol::{encode_frame, SerializeType};

    /// Takes at most `per_call` bytes per write, like a socket with a full send buffer.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        vectored_calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.per_call);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.vectored_calls += 1;
            let mut left = self.per_call;
            for b in bufs {
                let n = b.len().min(left);
                self.out.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            let written = self.per_call - left;
            Poll::Ready(Ok(written))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn changed_frames_leave_as_new_head_and_original_body_through_partial_writes() {
        // Two large frames (vectored path) around two small ones (batched).
        let bodies: Vec<Vec<u8>> = vec![
            (0..100_000u32).map(|i| (i % 251) as u8).collect(),
            b"small".to_vec(),
            Vec::new(),
            (0..40_000u32).map(|i| (i % 13) as u8).collect(),
        ];
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let old = format!("{{\"code\":{i},\"opaque\":{i}}}");
            input.extend_from_slice(&encode_frame(SerializeType::Json, old.as_bytes(), body));
            let new = format!("{{\"code\":{i},\"opaque\":{i},\"extFields\":{{\"n\":\"x\"}}}}");
            expected.extend_from_slice(&encode_frame(SerializeType::Json, new.as_bytes(), body));
        }
        let mut wr = Trickle {
            out: Vec::new(),
            per_call: 997,
            vectored_calls: 0,
        };
        let limits = PumpLimits {
            max_frame: 1 << 20,
            partial_frame: Duration::from_secs(5),
            budget: None,
        };
        let end = pump(&input[..], &mut wr, limits, None, |f: RawFrame| {
            let new = format!(
                "{{\"code\":{},\"opaque\":{},\"extFields\":{{\"n\":\"x\"}}}}",
                f.code(),
                f.opaque()
            );
            Ok(Some(OutFrame::with_header(
                SerializeType::Json,
                new.as_bytes(),
                f.body(),
            )))
        })
        .await;
        assert!(matches!(end, PumpEnd::Closed), "{end}");
        assert_eq!(wr.out.len(), expected.len());
        assert!(wr.out == expected, "the bytes written differ");
        // 140 kB at 997 bytes a call: the large frames went out in vectored writes.
        assert!(wr.vectored_calls >= 140_000 / 997, "{}", wr.vectored_calls);
    }
}
