//! The name-server role: the app's NAMESRV_ADDR points here. Every request is sent to the
//! name servers of the cluster the pod is switched to *at the time of the request*, so a
//! switch takes effect at the app's next route poll. Route answers (105), cluster info
//! (106) and system topic lists (304) have every broker address replaced by the local
//! listener for it (opened on first sight) and broker names mapped; every other code is
//! relayed unchanged. Answers go out as JSON with compact standard JSON bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rmq_common::serve::{self, AcceptConfig, RateLimitedLog, LOG_EVERY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Decoder;

use super::listeners::ListenerRegistry;
use super::{Cluster, RelayContext};
use crate::health::Health;
use crate::metrics::{code_group, response_code_label};
use crate::protocol::code::request_name;
use crate::protocol::code::{request, response};
use crate::protocol::route::{self, RouteMapper};
use crate::protocol::{FrameDecoder, Header, RawFrame};
use crate::routing::RouteSwitch;
use rmq_common::Target;

/// Everything the name-server role needs.
#[derive(Debug)]
pub struct NameServerRole {
    ctx: Arc<RelayContext>,
    listeners: Arc<ListenerRegistry>,
    route: Arc<RouteSwitch>,
    health: Arc<Health>,
    /// One permit per request being answered.
    inflight: Arc<Semaphore>,
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
    ) -> Self {
        Self {
            ctx,
            listeners,
            route,
            health,
            inflight: Arc::new(Semaphore::new(max_inflight)),
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
        let mut decoder = FrameDecoder::new(self.ctx.frame_max_bytes);
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
            let read = tokio::select! {
                r = rd.read_buf(&mut buf) => r,
                // Draining: stop reading (a partly read request is dropped, not a bad
                // frame); answers already being worked on still go out.
                _ = self.ctx.drain_requested() => break 'conn None,
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
                tracing::warn!(%peer, %reason, "closing name-server connection: bad frame");
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
        let target = self.route.current().target;
        let t = target.as_str();
        let code = header.code;
        m.requests
            .with_label_values(&[t, "namesrv", request_name(code)])
            .inc();
        let started = std::time::Instant::now();
        let (reply, body) = self.handle(target, header, frame).await?;
        let response_code = reply.code;
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
        if code == request::GET_ROUTEINFO_BY_TOPIC && response_code == response::SUCCESS {
            m.route_answers.with_label_values(&[t]).inc();
        }
        Some(reply.encode_frame(&body))
    }

    /// Answers one request (header and body of the reply); `None` for oneway requests.
    async fn handle(
        &self,
        target: Target,
        header: Header,
        frame: RawFrame,
    ) -> Option<(Header, Bytes)> {
        let cluster = self.ctx.cluster(target).clone();
        let body = frame.body();
        let answer = match cluster.namesrv.call(&header, &body).await {
            Ok(Some(answer)) => answer,
            Ok(None) => return None,
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(%target, code = header.code, error = %message, "name-server request failed");
                self.health.failed(target, message.clone());
                if header.is_oneway() {
                    return None;
                }
                let reply = Header::response_to(
                    &header,
                    response::SYSTEM_ERROR,
                    Some(format!("rmq-sidecar: {message}")),
                );
                return Some((reply, Bytes::new()));
            }
        };
        self.health.answered(target, &answer.addr, header.code);
        if target == self.route.current().target {
            self.health.set_ready();
        }
        let upstream = answer.frame;
        let mut reply = match Header::decode(upstream.serialize_type(), upstream.header_bytes()) {
            Ok(h) => h,
            Err(e) => {
                let reply = Header::response_to(
                    &header,
                    response::SYSTEM_ERROR,
                    Some(format!(
                        "rmq-sidecar: name server {} sent a bad header: {e}",
                        answer.addr
                    )),
                );
                return Some((reply, Bytes::new()));
            }
        };
        reply.opaque = header.opaque;
        let rewritable = matches!(
            header.code,
            request::GET_ROUTEINFO_BY_TOPIC
                | request::GET_BROKER_CLUSTER_INFO
                | request::GET_SYSTEM_TOPIC_LIST_FROM_NS
        );
        if !rewritable || reply.code != response::SUCCESS || upstream.body().is_empty() {
            return Some((reply, upstream.body()));
        }
        match self
            .rewrite_body(target, &cluster, header.code, &upstream.body())
            .await
        {
            Ok(body) => Some((reply, Bytes::from(body))),
            Err(message) => {
                tracing::warn!(%target, code = header.code, error = %message, "cannot rewrite name-server answer; the app keeps its previous route");
                let reply = Header::response_to(
                    &header,
                    response::SYSTEM_ERROR,
                    Some(format!("rmq-sidecar: {message}")),
                );
                Some((reply, Bytes::new()))
            }
        }
    }

    async fn rewrite_body(
        &self,
        target: Target,
        cluster: &Cluster,
        code: i32,
        body: &[u8],
    ) -> Result<Vec<u8>, String> {
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
        Ok(route::to_compact_json(&value))
    }
}
