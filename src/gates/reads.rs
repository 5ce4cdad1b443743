//! What the gates read from a cluster, and the reader that asks the real servers.
//!
//! [`ClusterReads`] is the gates' whole view of a cluster; the gates are written against
//! it, so their decisions are tested with recorded answers. [`BrokerReads`] asks the
//! cluster's name servers (through the sidecar's own name-server client) and brokers on
//! the sidecar's own connections, one per broker, never the app's; every request is
//! signed when the cluster has credentials, and each has a timeout.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmq_common::Target;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::acl::sign_request;
use crate::protocol::admin::{
    self, AdminBodyError, BrokerQueues, ConsumerConnection, Queue, QueueStat,
};
use crate::protocol::code::{request, response};
use crate::protocol::route;
use crate::protocol::{FrameDecoder, Header};
use crate::proxy::upstream::read_answer;
use crate::proxy::RelayContext;

/// Version ordinal the sidecar's own requests carry (V4_9_8, as the credential check).
const OWN_VERSION: i32 = 409;

/// A read that did not give an answer the gate can use.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// No connection, no answer in time, or the connection broke.
    #[error("{what} at {addr}: {reason}")]
    Unreachable {
        /// What was asked.
        what: String,
        /// Where.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error code.
    #[error("{what} at {addr}: answered code {code}: {remark}")]
    Refused {
        /// What was asked.
        what: String,
        /// Where.
        addr: String,
        /// Response code.
        code: i32,
        /// Its remark (credentials scrubbed).
        remark: String,
    },
    /// The answer's body could not be read.
    #[error("{what} at {addr}: {source}")]
    Body {
        /// What was asked.
        what: String,
        /// Where.
        addr: String,
        /// Why.
        source: AdminBodyError,
    },
}

/// What the gates ask a cluster. `addr` is a broker's master address from
/// [`ClusterReads::topic_queues`].
#[allow(async_fn_in_trait)]
pub trait ClusterReads {
    /// The brokers and queue counts of `topic` on `cluster`; `None` when it does not exist.
    async fn topic_queues(
        &self,
        cluster: Target,
        topic: &str,
    ) -> Result<Option<Vec<BrokerQueues>>, ReadError>;
    /// The groups online for `topic` on that broker or with offsets on it there.
    async fn consume_by_who(
        &self,
        cluster: Target,
        addr: &str,
        topic: &str,
    ) -> Result<BTreeSet<String>, ReadError>;
    /// The members of `group` connected to that broker; `None` when none is.
    async fn online(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
    ) -> Result<Option<ConsumerConnection>, ReadError>;
    /// The client ids that broker gives `group`'s members for their rebalance.
    async fn consumer_ids(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
    ) -> Result<BTreeSet<String>, ReadError>;
    /// `group`'s committed offset on one queue; `None` when none is stored.
    async fn committed_offset(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
        topic: &str,
        queue: &Queue,
    ) -> Result<Option<i64>, ReadError>;
    /// The end of one queue.
    async fn max_offset(
        &self,
        cluster: Target,
        addr: &str,
        topic: &str,
        queue: &Queue,
    ) -> Result<i64, ReadError>;
    /// Commits `group`'s offset on one queue.
    async fn commit_offset(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
        topic: &str,
        queue: &Queue,
        offset: i64,
    ) -> Result<(), ReadError>;
    /// `group`'s figures on every queue it has offsets on, on that broker.
    async fn consume_stats(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
    ) -> Result<Vec<QueueStat>, ReadError>;
    /// Whether a pod could use `cluster` now: one of its name servers answers, and every
    /// master broker of `topics`' routes there (the addresses the app will be sent to)
    /// accepts a connection. `Ok` says what was reached.
    async fn reach(&self, cluster: Target, topics: &[String]) -> Result<String, ReadError>;
}

/// One open connection to a broker.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// Reads the real clusters for one gate evaluation (connections close when it is dropped).
pub struct BrokerReads {
    ctx: Arc<RelayContext>,
    timeout: Duration,
    conns: tokio::sync::Mutex<HashMap<String, Conn>>,
    opaque: AtomicI32,
}

impl std::fmt::Debug for BrokerReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerReads")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl BrokerReads ===

impl BrokerReads {
    /// A reader whose every request waits at most `timeout`.
    pub fn new(ctx: Arc<RelayContext>, timeout: Duration) -> Self {
        Self {
            ctx,
            timeout,
            conns: tokio::sync::Mutex::new(HashMap::new()),
            opaque: AtomicI32::new(1),
        }
    }

    /// Sends `header` (signed for `cluster` when it has credentials) to `addr` and returns
    /// the answer's header and body; an answer code other than SUCCESS or one of `accept`
    /// is an error.
    async fn call(
        &self,
        cluster: Target,
        addr: &str,
        what: &str,
        mut header: Header,
        accept: &[i32],
    ) -> Result<(Header, Bytes), ReadError> {
        let unreachable = |reason: String| ReadError::Unreachable {
            what: what.to_owned(),
            addr: addr.to_owned(),
            reason,
        };
        let signer = &self.ctx.cluster(cluster).signer;
        header.version = OWN_VERSION;
        header.opaque = self.opaque.fetch_add(1, Ordering::Relaxed);
        if signer.is_configured() {
            let creds = signer.store().get().ok_or_else(|| {
                unreachable("the cluster's credentials could not be loaded".to_owned())
            })?;
            sign_request(&mut header, &[], &creds, signer.rule());
        }
        let frame = header.encode_frame(&[]);
        // Held across the exchange on purpose: one evaluation reads one request at a time
        // (a gate's reads depend on each other), and the reader is that evaluation's own.
        let mut conns = self.conns.lock().await;
        let exchange = async {
            if !conns.contains_key(addr) {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect failed: {e}"))?;
                let _ = stream.set_nodelay(true);
                conns.insert(
                    addr.to_owned(),
                    Conn {
                        stream,
                        buf: BytesMut::with_capacity(4096),
                        decoder: FrameDecoder::new(self.ctx.frame_max_bytes),
                    },
                );
            }
            let conn = conns
                .get_mut(addr)
                .ok_or_else(|| "connection vanished".to_owned())?;
            conn.stream
                .write_all(&frame)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            let f = read_answer(
                &mut conn.stream,
                &mut conn.buf,
                &mut conn.decoder,
                header.opaque,
            )
            .await?;
            let h =
                Header::decode(f.serialize_type(), f.header_bytes()).map_err(|e| e.to_string())?;
            Ok((h, f.body()))
        };
        let answer = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(reason)) => {
                conns.remove(addr);
                return Err(unreachable(reason));
            }
            Err(_) => {
                conns.remove(addr);
                return Err(unreachable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )));
            }
        };
        drop(conns);
        let (h, body) = answer;
        if h.code == response::SUCCESS || accept.contains(&h.code) {
            return Ok((h, body));
        }
        Err(ReadError::Refused {
            what: what.to_owned(),
            addr: addr.to_owned(),
            code: h.code,
            remark: signer.scrub(h.remark.as_deref().unwrap_or("")),
        })
    }

    /// `name` as `cluster` knows it (wrapped in its namespace, if it has one).
    fn wrap(&self, cluster: Target, name: &str) -> String {
        match &self.ctx.cluster(cluster).namespace {
            Some(ns) => ns.wrap(name).into_owned(),
            None => name.to_owned(),
        }
    }

    /// `name` as the app knows it.
    fn unwrap(&self, cluster: Target, name: &str) -> String {
        match &self.ctx.cluster(cluster).namespace {
            Some(ns) => ns.unwrap(name).into_owned(),
            None => name.to_owned(),
        }
    }

    fn body_error(what: &str, addr: &str) -> impl FnOnce(AdminBodyError) -> ReadError {
        let (what, addr) = (what.to_owned(), addr.to_owned());
        move |source| ReadError::Body { what, addr, source }
    }
}

impl ClusterReads for BrokerReads {
    async fn reach(&self, cluster: Target, topics: &[String]) -> Result<String, ReadError> {
        let what = "the cluster's brokers";
        // The brokers the app will be sent to: its topics' routes there (through a 5.x
        // Proxy, the Proxy itself; a cluster list would name brokers behind it).
        let mut masters: Vec<(String, String)> = Vec::new();
        for topic in topics {
            for b in self.topic_queues(cluster, topic).await?.unwrap_or_default() {
                if let Some(addr) = b.master {
                    if !masters.iter().any(|(_, a)| *a == addr) {
                        masters.push((b.broker_name, addr));
                    }
                }
            }
        }
        if masters.is_empty() {
            // None of the pod's topics there (or none recorded yet): a name server that
            // answers at all is what can be checked.
            let ns = &self.ctx.cluster(cluster).namesrv;
            let mut header = Header::request(request::GET_BROKER_CLUSTER_INFO, 0);
            header.version = OWN_VERSION;
            let unreachable = |reason: String| ReadError::Unreachable {
                what: "GET_BROKER_CLUSTER_INFO".to_owned(),
                addr: ns.addrs().join(";"),
                reason,
            };
            return match tokio::time::timeout(self.timeout, ns.call(&header, &[])).await {
                Ok(Ok(Some(a))) => Ok(format!(
                    "name server {} answered; no route of the pod's topics there to try brokers of",
                    a.addr
                )),
                Ok(Ok(None)) => Err(unreachable("no answer".into())),
                Ok(Err(e)) => Err(unreachable(e.to_string())),
                Err(_) => Err(unreachable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                ))),
            };
        }
        // Every master at once, each with the read timeout: a connect proves the address
        // the apps will be sent to takes connections (it is closed at once).
        let mut tries = tokio::task::JoinSet::new();
        for (name, addr) in masters.iter().cloned() {
            let limit = self.timeout;
            tries.spawn(async move {
                let outcome = match tokio::time::timeout(limit, TcpStream::connect(&addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("connect failed: {e}")),
                    Err(_) => Err(format!("no connection within {} ms", limit.as_millis())),
                };
                (name, addr, outcome)
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tries.join_next().await {
            match joined {
                Ok((_, _, Ok(()))) => {}
                Ok((name, addr, Err(reason))) => failed.push((name, addr, reason)),
                Err(e) => failed.push((String::new(), String::new(), e.to_string())),
            }
        }
        failed.sort();
        if let Some((name, addr, reason)) = failed.first() {
            let reason = format!(
                "master of broker {name}: {reason} ({} of {} masters unreachable)",
                failed.len(),
                masters.len()
            );
            return Err(ReadError::Unreachable {
                what: what.to_owned(),
                addr: addr.clone(),
                reason,
            });
        }
        Ok(format!(
            "name servers answered; the {} master broker(s) of the pod's topics there accept connections",
            masters.len()
        ))
    }

    async fn topic_queues(
        &self,
        cluster: Target,
        topic: &str,
    ) -> Result<Option<Vec<BrokerQueues>>, ReadError> {
        let what = format!("route of {topic}");
        let mut header = Header::request(request::GET_ROUTEINFO_BY_TOPIC, 0);
        header.set_ext("topic", topic);
        let ns = &self.ctx.cluster(cluster).namesrv;
        let answer = tokio::time::timeout(self.timeout, ns.call(&header, &[])).await;
        let addr = ns.addrs().join(";");
        let answer = match answer {
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) => {
                return Err(ReadError::Unreachable {
                    what,
                    addr,
                    reason: "no answer".to_owned(),
                })
            }
            Ok(Err(e)) => {
                return Err(ReadError::Unreachable {
                    what,
                    addr,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(ReadError::Unreachable {
                    what,
                    addr,
                    reason: format!("no answer within {} ms", self.timeout.as_millis()),
                })
            }
        };
        match answer.frame.code() {
            response::SUCCESS => {}
            response::TOPIC_NOT_EXIST => return Ok(None),
            code => {
                let remark =
                    Header::decode(answer.frame.serialize_type(), answer.frame.header_bytes())
                        .ok()
                        .and_then(|h| h.remark)
                        .unwrap_or_default();
                return Err(ReadError::Refused {
                    what,
                    addr: answer.addr,
                    code,
                    remark,
                });
            }
        }
        let value = route::parse_lenient(&answer.frame.body()).map_err(|e| ReadError::Body {
            what: what.clone(),
            addr: answer.addr.clone(),
            source: AdminBodyError::Shape {
                what: "route",
                reason: e.to_string(),
            },
        })?;
        Ok(Some(admin::route_queues(&value)))
    }

    async fn consume_by_who(
        &self,
        cluster: Target,
        addr: &str,
        topic: &str,
    ) -> Result<BTreeSet<String>, ReadError> {
        let what = format!("QUERY_TOPIC_CONSUME_BY_WHO {topic}");
        let (_, body) = self
            .call(
                cluster,
                addr,
                &what,
                admin::consume_by_who(&self.wrap(cluster, topic)),
                &[],
            )
            .await?;
        let groups = admin::parse_group_list(&body).map_err(Self::body_error(&what, addr))?;
        Ok(groups.iter().map(|g| self.unwrap(cluster, g)).collect())
    }

    async fn online(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
    ) -> Result<Option<ConsumerConnection>, ReadError> {
        let what = format!("GET_CONSUMER_CONNECTION_LIST {group}");
        let accept = [response::CONSUMER_NOT_ONLINE];
        let (h, body) = self
            .call(
                cluster,
                addr,
                &what,
                admin::consumer_connections(&self.wrap(cluster, group)),
                &accept,
            )
            .await?;
        if h.code == response::CONSUMER_NOT_ONLINE {
            return Ok(None);
        }
        let mut c =
            admin::parse_consumer_connection(&body).map_err(Self::body_error(&what, addr))?;
        c.topics = c.topics.iter().map(|t| self.unwrap(cluster, t)).collect();
        Ok(Some(c).filter(|c| !c.client_ids.is_empty()))
    }

    async fn consumer_ids(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
    ) -> Result<BTreeSet<String>, ReadError> {
        let what = format!("GET_CONSUMER_LIST_BY_GROUP {group}");
        // "no consumer for this group" is code 1: no member at all.
        let (h, body) = self
            .call(
                cluster,
                addr,
                &what,
                admin::consumer_ids(&self.wrap(cluster, group)),
                &[response::SYSTEM_ERROR],
            )
            .await?;
        if h.code == response::SYSTEM_ERROR {
            return Ok(BTreeSet::new());
        }
        admin::parse_consumer_ids(&body).map_err(Self::body_error(&what, addr))
    }

    async fn committed_offset(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
        topic: &str,
        queue: &Queue,
    ) -> Result<Option<i64>, ReadError> {
        let what = format!("QUERY_CONSUMER_OFFSET {group} {topic}:{}", queue.queue_id);
        let accept = [response::QUERY_NOT_FOUND];
        let (h, _) = self
            .call(
                cluster,
                addr,
                &what,
                admin::query_offset(
                    &self.wrap(cluster, group),
                    &self.wrap(cluster, topic),
                    queue,
                ),
                &accept,
            )
            .await?;
        if h.code == response::QUERY_NOT_FOUND {
            return Ok(None);
        }
        Ok(admin::answer_offset(&h))
    }

    async fn max_offset(
        &self,
        cluster: Target,
        addr: &str,
        topic: &str,
        queue: &Queue,
    ) -> Result<i64, ReadError> {
        let what = format!("GET_MAX_OFFSET {topic}:{}", queue.queue_id);
        let (h, _) = self
            .call(
                cluster,
                addr,
                &what,
                admin::max_offset(&self.wrap(cluster, topic), queue),
                &[],
            )
            .await?;
        admin::answer_offset(&h).ok_or_else(|| ReadError::Body {
            what,
            addr: addr.to_owned(),
            source: AdminBodyError::Shape {
                what: "max offset",
                reason: "no offset in the answer".to_owned(),
            },
        })
    }

    async fn commit_offset(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
        topic: &str,
        queue: &Queue,
        offset: i64,
    ) -> Result<(), ReadError> {
        let what = format!("UPDATE_CONSUMER_OFFSET {group} {topic}:{}", queue.queue_id);
        let header = admin::update_offset(
            &self.wrap(cluster, group),
            &self.wrap(cluster, topic),
            queue,
            offset,
        );
        self.call(cluster, addr, &what, header, &[])
            .await
            .map(|_| ())
    }

    async fn consume_stats(
        &self,
        cluster: Target,
        addr: &str,
        group: &str,
    ) -> Result<Vec<QueueStat>, ReadError> {
        let what = format!("GET_CONSUME_STATS {group}");
        let (_, body) = self
            .call(
                cluster,
                addr,
                &what,
                admin::consume_stats(&self.wrap(cluster, group)),
                &[],
            )
            .await?;
        let mut stats = admin::parse_consume_stats(&body).map_err(Self::body_error(&what, addr))?;
        for q in &mut stats {
            q.topic = self.unwrap(cluster, &q.topic);
        }
        Ok(stats)
    }
}
