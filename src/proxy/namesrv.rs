//! The name-server role: the app's NAMESRV_ADDR points here. Every request is sent to the
//! name servers of the cluster the pod is switched to *at the time of the request*, so a
//! switch takes effect at the app's next route poll. Route answers (105), cluster info
//! (106) and system topic lists (304) have every broker address replaced by the local
//! listener for it (opened on first sight) and broker names mapped; every other code is
//! relayed unchanged. Answers go out as JSON with compact standard JSON bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rmq_common::serve::{self, AcceptConfig, RateLimitedLog, LOG_EVERY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Decoder;

use super::listeners::ListenerRegistry;
use super::relay::sleep_until_some;
use super::{Cluster, RelayContext};
use crate::health::Health;
use crate::metrics::{code_group, response_code_label};
use crate::protocol::code::request_name;
use crate::protocol::code::{request, response};
use crate::protocol::route::{self, RouteMapper};
use crate::protocol::{FrameDecoder, Header, RawFrame};
use crate::routing::RouteSwitch;
use rmq_common::{Role, RoleTargets, Target};
use serde_json::Value;

/// How long after the first route answer of a consumer switch the app's consumers are
/// told to rebalance (the client refreshes every topic's route in one sweep).
const NOTIFY_AFTER_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything the name-server role needs.
#[derive(Debug)]
pub struct NameServerRole {
    ctx: Arc<RelayContext>,
    listeners: Arc<ListenerRegistry>,
    route: Arc<RouteSwitch>,
    health: Arc<Health>,
    /// Largest frame accepted from the app.
    max_frame: usize,
    /// One permit per request being answered.
    inflight: Arc<Semaphore>,
    /// The consumer generation whose first route refresh already triggered a notify.
    notified_consumer_generation: AtomicU64,
    max_inflight: usize,
    busy_log: Mutex<RateLimitedLog>,
}

struct Mapper<'a> {
    cluster: &'a Cluster,
    locals: &'a HashMap<String, String>,
}

impl RouteMapper for Mapper<'_> {
    fn local_addr(&self, upstream: &str) -> Option<String> {
        self.locals.get(upstream).cloned()
    }

    fn client_name(&self, name: &str) -> String {
        self.cluster.renamer.to_client(name)
    }
}

// === impl NameServerRole ===

impl NameServerRole {
    /// The role, answering at most `max_inflight` requests at once.
    pub fn new(
        ctx: Arc<RelayContext>,
        listeners: Arc<ListenerRegistry>,
        route: Arc<RouteSwitch>,
        health: Arc<Health>,
        max_inflight: usize,
        max_frame: usize,
    ) -> Self {
        Self {
            max_frame,
            ctx,
            listeners,
            route,
            health,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            notified_consumer_generation: AtomicU64::new(0),
            max_inflight,
            busy_log: Mutex::new(RateLimitedLog::new(LOG_EVERY)),
        }
    }

    /// Accepts app connections on `listener` until `POST /drain`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, max_connections: usize) {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let config = AcceptConfig {
            name: "namesrv",
            local,
            max_connections,
        };
        let observer = self.ctx.metrics.accept_observer("namesrv");
        let ctx = self.ctx.clone();
        serve::serve(
            listener,
            config,
            observer,
            async move { ctx.drain_requested().await },
            |stream, peer| self.clone().serve_connection(stream, peer),
        )
        .await;
    }

    async fn serve_connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _guard = self.ctx.conns.open();
        let m = &self.ctx.metrics;
        m.client_connections_opened
            .with_label_values(&["namesrv"])
            .inc();
        let active = m.client_connections_active.with_label_values(&["namesrv"]);
        active.inc();
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = BytesMut::with_capacity(4096);
        let mut decoder = FrameDecoder::new(self.max_frame);
        // When the incomplete frame at the head of `buf` began to arrive.
        let mut partial_since: Option<tokio::time::Instant> = None;
        // (what happened, metric label); None = closed cleanly by the app
        let reason: Option<(String, &'static str)> = 'conn: loop {
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        if frame.is_response() {
                            continue; // a name server sends no requests; stray answers are dropped
                        }
                        let header =
                            match Header::decode(frame.serialize_type(), frame.header_bytes()) {
                                Ok(h) => h,
                                Err(e) => {
                                    break 'conn Some((format!("bad header: {e}"), "bad_header"))
                                }
                            };
                        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
                            if let Some(busy) = self.refuse_busy(&header, peer) {
                                let _ = tx.send(busy).await;
                            }
                            continue;
                        };
                        let this = self.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            if let Some(answer) = this.handle_measured(header, frame).await {
                                let _ = tx.send(answer).await;
                            }
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(e) => break 'conn Some((e.to_string(), e.reason())),
                }
            }
            let stall_deadline = if buf.is_empty() {
                partial_since = None;
                None
            } else {
                Some(
                    *partial_since.get_or_insert_with(tokio::time::Instant::now)
                        + self.ctx.partial_frame,
                )
            };
            let read = tokio::select! {
                r = rd.read_buf(&mut buf) => r,
                // Draining: stop reading (a partly read request is dropped, not a bad
                // frame); answers already being worked on still go out.
                _ = self.ctx.drain_requested() => break 'conn None,
                _ = sleep_until_some(stall_deadline) => {
                    let what = format!(
                        "an incomplete frame ({} bytes) was not finished within {} s",
                        buf.len(),
                        self.ctx.partial_frame.as_secs()
                    );
                    break 'conn Some((what, "stalled"));
                }
            };
            match read {
                Ok(0) if buf.is_empty() => break None,
                Ok(0) => {
                    let what = format!(
                        "closed in the middle of a frame ({} bytes pending)",
                        buf.len()
                    );
                    break Some((what, "truncated"));
                }
                Ok(_) => {}
                Err(e) => break Some((format!("read failed: {e}"), "io_error")),
            }
        };
        active.dec();
        match reason {
            Some((reason, "io_error")) => {
                m.client_connections_closed
                    .with_label_values(&["namesrv", "io_error"])
                    .inc();
                tracing::debug!(%peer, %reason, "name-server connection ended");
                writer.abort();
            }
            Some((reason, label)) => {
                m.frames_rejected.with_label_values(&[label]).inc();
                m.client_connections_closed
                    .with_label_values(&["namesrv", "bad_frame"])
                    .inc();
                if let Some(suppressed) = self.ctx.bad_frame_log() {
                    tracing::warn!(%peer, %reason, suppressed, "closing name-server connection: bad frame");
                }
                writer.abort();
            }
            None => {
                m.client_connections_closed
                    .with_label_values(&["namesrv", "client_closed"])
                    .inc();
                drop(tx);
                // Let answers still in flight reach the app before the socket closes.
                let _ = writer.await;
            }
        }
    }

    /// Answers SYSTEM_BUSY (as a broker whose thread pool is full does) to a request that
    /// found every in-flight place taken; `None` for a oneway request.
    fn refuse_busy(&self, header: &Header, peer: SocketAddr) -> Option<Bytes> {
        self.ctx
            .metrics
            .namesrv_requests_refused
            .with_label_values(&["namesrv"])
            .inc();
        if let Some(suppressed) = self
            .busy_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow()
        {
            tracing::warn!(%peer, code = header.code, max_inflight = self.max_inflight, suppressed, "name-server request refused: too many in flight; answered SYSTEM_BUSY");
        }
        if header.is_oneway() {
            return None;
        }
        let reply = Header::response_to(
            header,
            response::SYSTEM_BUSY,
            Some(format!(
                "[OVERLOAD] rmq-sidecar: {} name-server requests in flight; try again",
                self.max_inflight
            )),
        );
        Some(reply.encode_frame(&[]))
    }

    /// [`Self::handle`] with request, response and latency metrics.
    async fn handle_measured(&self, header: Header, frame: RawFrame) -> Option<Bytes> {
        let m = &self.ctx.metrics;
        let targets = self.route.current().targets();
        // Requests are labelled with the consumers' cluster when the roles are apart (the
        // cluster of every answer that is not composed).
        let t = targets.whole().unwrap_or(targets.consumer).as_str();
        let code = header.code;
        m.requests
            .with_label_values(&[t, "namesrv", request_name(code)])
            .inc();
        let started = std::time::Instant::now();
        let (reply, body) = self.handle(targets, header, frame).await?;
        let response_code = reply.code;
        if code == request::GET_ROUTEINFO_BY_TOPIC && response_code == response::SUCCESS {
            self.notify_after_refresh();
        }
        m.responses
            .with_label_values(&[
                t,
                "namesrv",
                request_name(code),
                response_code_label(response_code),
            ])
            .inc();
        m.request_duration
            .with_label_values(&[t, "namesrv", code_group(code)])
            .observe(started.elapsed().as_secs_f64());
        Some(reply.encode_frame(&body))
    }

    /// After a consumer switch, the first route answer starts the client's refresh of all
    /// its routes; a second later (when it has them all) its consumers are told to
    /// rebalance, so they take the new queues at once instead of at their next 20 s
    /// rebalance.
    fn notify_after_refresh(&self) {
        let generation = self.route.current().consumer.generation;
        // From now on the app's tables hold the consumers' cluster's brokers.
        self.ctx
            .consumer_route_refreshed
            .fetch_max(generation, Ordering::SeqCst);
        if generation == 0
            || self
                .notified_consumer_generation
                .fetch_max(generation, Ordering::SeqCst)
                >= generation
        {
            return;
        }
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(NOTIFY_AFTER_REFRESH).await;
            tracing::info!(
                generation,
                "route refreshed after a consumer switch: telling the app's consumers to rebalance"
            );
            ctx.consumer_notify.send_modify(|n| *n += 1);
        });
    }

    /// Answers one request (header and body of the reply); `None` for oneway requests.
    /// With both roles on one cluster every request goes there. With the roles apart,
    /// route (105) and cluster-info (106) answers are composed from both clusters (see
    /// [`Self::compose`]); every other request goes to the consumers' cluster.
    async fn handle(
        &self,
        targets: RoleTargets,
        header: Header,
        frame: RawFrame,
    ) -> Option<(Header, Bytes)> {
        let body = frame.body();
        let composed = matches!(
            header.code,
            request::GET_ROUTEINFO_BY_TOPIC | request::GET_BROKER_CLUSTER_INFO
        );
        let target = match targets.whole() {
            Some(t) => t,
            None if composed => return self.compose(targets, &header, &body).await,
            None => targets.consumer,
        };
        let reply = match self.ask(target, &header, &body).await {
            Ok(Some(fetched)) => fetched,
            Ok(None) => return None,
            Err(message) => return Some(error_reply(&header, &message)),
        };
        match reply {
            Fetched::Rewritten(reply, value) => {
                if header.code == request::GET_ROUTEINFO_BY_TOPIC {
                    self.ctx
                        .metrics
                        .route_answers
                        .with_label_values(&[target.as_str()])
                        .inc();
                }
                Some((reply, Bytes::from(route::to_compact_json(&value))))
            }
            Fetched::AsIs(reply, body) => Some((reply, body)),
        }
    }

    /// A route or cluster-info answer composed from the producers' and the consumers'
    /// clusters: each side rewritten to local listeners, a route's queues restricted to
    /// the role the pod plays on that cluster (WRITE on the producers', READ on the
    /// consumers'), then merged. A side that fails or does not have the topic is left out
    /// and reported (log, `GET /route`, metric); when neither side has it, the consumers'
    /// answer is relayed (a `TOPIC_NOT_EXIST` keeps the client's cached route).
    async fn compose(
        &self,
        targets: RoleTargets,
        header: &Header,
        body: &[u8],
    ) -> Option<(Header, Bytes)> {
        let (producer, consumer) = tokio::join!(
            self.ask(targets.producer, header, body),
            self.ask(targets.consumer, header, body)
        );
        let is_route = header.code == request::GET_ROUTEINFO_BY_TOPIC;
        let topic = header.ext("topic").unwrap_or("").to_owned();
        let mut found: [Option<Value>; 2] = [None, None];
        let mut fallback: Option<(Header, Bytes)> = None;
        for (role, answer) in [(Role::Producer, producer), (Role::Consumer, consumer)] {
            let cluster = targets.get(role);
            let missing = match answer {
                Ok(Some(Fetched::Rewritten(reply, mut value))) => {
                    if is_route {
                        let keep = match role {
                            Role::Producer => route::perm::WRITE,
                            Role::Consumer => route::perm::READ,
                        };
                        route::restrict_perm(&mut value, keep);
                        self.ctx
                            .metrics
                            .route_answers
                            .with_label_values(&[cluster.as_str()])
                            .inc();
                    }
                    found[role_index(role)] = Some(value);
                    fallback.get_or_insert((reply, Bytes::new()));
                    continue;
                }
                Ok(Some(Fetched::AsIs(reply, body))) => {
                    let reason = format!(
                        "answered code {}{}",
                        reply.code,
                        reply
                            .remark
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                    if role == Role::Consumer || fallback.is_none() {
                        fallback = Some((reply, body));
                    }
                    reason
                }
                Ok(None) => return None,
                Err(message) => {
                    if fallback.is_none() {
                        fallback = Some(error_reply(header, &message));
                    }
                    message
                }
            };
            self.partial(role, cluster, header.code, &topic, missing);
        }
        let [producer, consumer] = found;
        let merged = if is_route {
            route::compose_routes(producer, consumer)
        } else {
            route::compose_cluster_info(producer, consumer)
        };
        match (merged, fallback) {
            (Some(value), Some((mut reply, _))) => {
                reply.code = response::SUCCESS;
                reply.remark = None;
                Some((reply, Bytes::from(route::to_compact_json(&value))))
            }
            (_, Some(answer)) => Some(answer),
            (_, None) => Some(error_reply(header, "no cluster answered")),
        }
    }

    /// Records that `cluster` (where the pod's `role` goes) gave nothing for a composed
    /// answer: counted every time, logged and listed in `GET /route` when new.
    fn partial(&self, role: Role, cluster: Target, code: i32, topic: &str, reason: String) {
        self.ctx
            .metrics
            .route_partial_answers
            .with_label_values(&[cluster.as_str(), role.as_str()])
            .inc();
        let what = if code == request::GET_ROUTEINFO_BY_TOPIC {
            format!("route of {topic}")
        } else {
            "cluster info".to_owned()
        };
        if self.health.partial_answer(cluster, role, &what, &reason) {
            tracing::warn!(%cluster, %role, %what, %reason, "composed answer without this cluster: the {role}s get only what the other cluster has");
        }
    }

    /// Sends `header` + `body` to `target`'s name servers. `Ok(None)` for a oneway
    /// request; a successful route, cluster-info or system-topic answer comes back
    /// rewritten to local listeners, anything else as the upstream sent it. `Err` says why
    /// no name server answered (or why the answer could not be rewritten).
    async fn ask(
        &self,
        target: Target,
        header: &Header,
        body: &[u8],
    ) -> Result<Option<Fetched>, String> {
        let cluster = self.ctx.cluster(target).clone();
        let answer = match cluster.namesrv.call(header, body).await {
            Ok(Some(answer)) => answer,
            Ok(None) => return Ok(None),
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(%target, code = header.code, error = %message, "name-server request failed");
                self.health.failed(target, message.clone());
                return Err(message);
            }
        };
        self.health.answered(target, &answer.addr, header.code);
        self.health.check_ready(&self.route.current().targets());
        let upstream = answer.frame;
        let mut reply = Header::decode(upstream.serialize_type(), upstream.header_bytes())
            .map_err(|e| format!("name server {} sent a bad header: {e}", answer.addr))?;
        reply.opaque = header.opaque;
        let rewritable = matches!(
            header.code,
            request::GET_ROUTEINFO_BY_TOPIC
                | request::GET_BROKER_CLUSTER_INFO
                | request::GET_SYSTEM_TOPIC_LIST_FROM_NS
        );
        if !rewritable || reply.code != response::SUCCESS || upstream.body().is_empty() {
            return Ok(Some(Fetched::AsIs(reply, upstream.body())));
        }
        match self
            .rewrite_value(target, &cluster, header.code, &upstream.body())
            .await
        {
            Ok(value) => Ok(Some(Fetched::Rewritten(reply, value))),
            Err(message) => {
                tracing::warn!(%target, code = header.code, error = %message, "cannot rewrite name-server answer; the app keeps its previous route");
                Err(message)
            }
        }
    }

    async fn rewrite_value(
        &self,
        target: Target,
        cluster: &Cluster,
        code: i32,
        body: &[u8],
    ) -> Result<Value, String> {
        let mut value = route::parse_lenient(body).map_err(|e| e.to_string())?;
        let mut locals = HashMap::new();
        for upstream in route::broker_addresses(&value) {
            let local = self
                .listeners
                .ensure(target, &upstream)
                .await
                .map_err(|e| e.to_string())?;
            locals.insert(upstream, local.to_string());
        }
        let mapper = Mapper {
            cluster,
            locals: &locals,
        };
        match code {
            request::GET_ROUTEINFO_BY_TOPIC => route::rewrite_topic_route(&mut value, &mapper),
            request::GET_BROKER_CLUSTER_INFO => route::rewrite_cluster_info(&mut value, &mapper),
            _ => route::rewrite_topic_list(&mut value, &mapper),
        }
        .map_err(|e| e.to_string())?;
        Ok(value)
    }
}

/// A name server's answer, as the role got it.
enum Fetched {
    /// A successful route, cluster-info or topic-list answer, rewritten.
    Rewritten(Header, Value),
    /// Any other answer, relayed as it came.
    AsIs(Header, Bytes),
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Producer => 0,
        Role::Consumer => 1,
    }
}

/// SYSTEM_ERROR with the sidecar's reason: the client keeps its previous route.
fn error_reply(header: &Header, message: &str) -> (Header, Bytes) {
    let reply = Header::response_to(
        header,
        response::SYSTEM_ERROR,
        Some(format!("rmq-sidecar: {message}")),
    );
    (reply, Bytes::new())
}
