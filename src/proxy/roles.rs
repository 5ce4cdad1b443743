//! What one relay connection to a cluster lets through for the roles the pod plays on
//! that cluster, so that no cluster learns a role the pod does not play there.
//!
//! A client heartbeats every broker in its tables, and with the roles apart its tables hold
//! both clusters' brokers (the route is composed from both). Towards a cluster:
//! - **HEART_BEAT**: consumer groups only if the pod's consumers use this cluster; producer
//!   groups only if its producers do, or if the group sent transactional half messages on
//!   this connection (the broker must still reach it with CHECK_TRANSACTION_STATE until
//!   the app stops using the group). The heartbeat itself always goes (the connection
//!   stays known and alive).
//! - **LOCK_BATCH_MQ** from a pod whose consumers are elsewhere is answered here with
//!   nothing locked: an orderly consumer that still holds queues of this cluster must not
//!   keep them locked from the members that stay.
//! - **GET_CONSUMER_LIST_BY_GROUP** is answered by the consumers' cluster whatever broker
//!   the client picked (the Java client asks a random broker of the topic's route, which
//!   may be one where the pod only produces). Right after the consumers moved, until the
//!   app fetches a route, it is answered by the cluster they left without the app in it
//!   (a placeholder if nobody else is left: a Java client will not rebalance over an empty
//!   list): the app then lets that cluster's queues go at once. An answer that does not list the app yet (it joins a
//!   cluster's group only at its next heartbeat) gets it added, so it takes its queues and
//!   heartbeats at once.
//! - Offsets (14/15), unlock (42) and send-back (36) name a queue or message of the broker
//!   they are sent to, so they go there unchanged.
//!
//! When a role leaves this cluster the sidecar sends UNREGISTER_CLIENT for each of the
//! client's groups of that role on this connection (the broker drops the connection from
//! the group and rebalances the members that stay, within seconds instead of after its
//! 120 s channel expiry) and NOTIFY_CONSUMER_IDS_CHANGED to the client (it rebalances at
//! once). Requests the sidecar sends carry negative opaques; their answers are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use rmq_common::{Role, RoleTargets, Target};

use super::usage::Usage;
use crate::metrics::Metrics;
use crate::protocol::code::{request, response, sysflag};
use crate::protocol::header::{json_ext_int, json_ext_str};
use crate::protocol::{heartbeat, Header, HeaderError, RawFrame, SerializeType};

/// Most groups remembered per connection (a client has a handful).
const MAX_GROUPS: usize = 256;

/// What to do with a frame from the app.
#[derive(Debug)]
pub enum Upward {
    /// Send this frame on (renaming and signing follow).
    Forward(RawFrame),
    /// Answer the app with these bytes; nothing goes to the broker.
    Answer(Bytes),
    /// Send the request to the consumers' cluster instead, and its answer to the app.
    Redirect(Target, RawFrame),
}

/// What the filter of one connection has seen, and the requests it sent itself.
#[derive(Debug, Default)]
struct Seen {
    client_id: Option<String>,
    consumers: BTreeSet<String>,
    producers: BTreeSet<String>,
    /// Producer groups that sent transactional half messages on this connection.
    transactional: BTreeSet<String>,
    /// Opaques of requests the sidecar sent on this connection, awaiting their answers.
    own: BTreeSet<i32>,
    /// The app's GET_CONSUMER_LIST_BY_GROUP on this connection awaiting answers: opaque ->
    /// whether the app is to be listed (its consumers' cluster) or not (a cluster they left).
    member_lists: BTreeMap<i32, bool>,
}

/// Producer groups kept heartbeating a cluster for their transactions, over every
/// connection: (cluster, group) -> connections that keep it (shown in `GET /route`).
pub type TransactionalGroups = Arc<DashMap<(Target, String), usize>>;

/// Every client id the app's heartbeats carried, over every connection (bounded).
pub type ClientIds = Arc<Mutex<BTreeSet<String>>>;

/// The role filter of one relay connection to `cluster`.
#[derive(Debug)]
pub struct RoleFilter {
    cluster: Target,
    seen: Mutex<Seen>,
    next_opaque: AtomicI32,
    metrics: Metrics,
    kept: TransactionalGroups,
    client_ids: ClientIds,
    usage: Arc<Usage>,
}

// === impl RoleFilter ===

impl RoleFilter {
    /// A filter for a connection to `cluster`; transactional groups it keeps are counted
    /// in `kept`.
    pub fn new(
        cluster: Target,
        metrics: Metrics,
        kept: TransactionalGroups,
        client_ids: ClientIds,
        usage: Arc<Usage>,
    ) -> Self {
        Self {
            cluster,
            seen: Mutex::new(Seen::default()),
            next_opaque: AtomicI32::new(-1),
            metrics,
            kept,
            client_ids,
            usage,
        }
    }

    /// The pod's client id when it runs exactly one client instance (the case to add it to
    /// a member list the broker has not updated yet).
    pub fn sole_client_id(&self) -> Option<String> {
        let ids = self.client_ids.lock().unwrap_or_else(|p| p.into_inner());
        (ids.len() == 1)
            .then(|| ids.iter().next().cloned())
            .flatten()
    }

    fn keep(&self, group: &str, kept: bool) {
        let key = (self.cluster, group.to_owned());
        if kept {
            *self.kept.entry(key).or_insert(0) += 1;
        } else if let Some(mut n) = self.kept.get_mut(&key) {
            *n = n.saturating_sub(1);
            let gone = *n == 0;
            drop(n);
            if gone {
                self.kept.remove_if(&key, |_, n| *n == 0);
            }
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, action: &str) {
        self.metrics
            .role_filter
            .with_label_values(&[self.cluster.as_str(), action])
            .inc();
    }

    /// A frame from the app, given where each role goes now.
    /// `refreshed`: whether the app has fetched a route since its consumers last moved (only
    /// member-list requests use it; callers may pass anything for other frames).
    pub fn client_to_broker(
        &self,
        frame: RawFrame,
        targets: RoleTargets,
        refreshed: bool,
        max_frame: usize,
    ) -> Result<Upward, HeaderError> {
        if frame.is_response() {
            return Ok(Upward::Forward(frame));
        }
        let consumers_here = targets.consumer == self.cluster;
        let producers_here = targets.producer == self.cluster;
        match frame.code() {
            request::HEART_BEAT => Ok(Upward::Forward(self.heartbeat(
                frame,
                consumers_here,
                producers_here,
                max_frame,
            )?)),
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 => {
                self.note_send(&frame);
                self.note_transaction(&frame)?;
                Ok(Upward::Forward(frame))
            }
            request::SEND_BATCH_MESSAGE | request::SEND_REPLY_MESSAGE_V2 => {
                self.note_send(&frame);
                Ok(Upward::Forward(frame))
            }
            request::LOCK_BATCH_MQ if !consumers_here && !frame.is_oneway() => {
                self.count("lock_refused");
                let header = Header::decode(frame.serialize_type(), frame.header_bytes())?;
                let reply = Header::response_to(&header, response::SUCCESS, None);
                Ok(Upward::Answer(
                    reply.encode_frame(heartbeat::empty_lock_answer()),
                ))
            }
            request::GET_CONSUMER_LIST_BY_GROUP if !consumers_here && !frame.is_oneway() => {
                if refreshed {
                    self.count("consumer_list_redirected");
                    return Ok(Upward::Redirect(targets.consumer, frame));
                }
                // The consumers just moved and the app has not fetched a route since: it is
                // balancing this cluster's queues. Its list is this cluster's without it: it
                // lets those queues go at once (persisting their offsets) instead of pulling
                // them beside the members that take them over.
                self.count("consumer_list_without_app");
                self.expect_member_list(frame.opaque(), false);
                Ok(Upward::Forward(frame))
            }
            request::GET_CONSUMER_LIST_BY_GROUP if !frame.is_oneway() => {
                self.expect_member_list(frame.opaque(), true);
                Ok(Upward::Forward(frame))
            }
            _ => Ok(Upward::Forward(frame)),
        }
    }

    /// An answer to the app's GET_CONSUMER_LIST_BY_GROUP with the app's own client id added
    /// when the broker does not list it yet; `None` for any other frame (relayed as it is).
    ///
    /// A client that just learned the consumers' cluster's brokers is not a member there
    /// until its next heartbeat (up to 30 s), and a member list without it leaves it
    /// nothing to rebalance to; listed, it takes queues, which makes it heartbeat every
    /// broker at once: the broker then counts it and tells every member to rebalance.
    pub fn member_list_answer(&self, frame: &RawFrame) -> Option<Bytes> {
        if !frame.is_response() || frame.code() != response::SUCCESS {
            return None;
        }
        let listed = self.seen().member_lists.remove(&frame.opaque())?;
        if listed {
            return self.with_own_member(frame);
        }
        let id = self
            .seen()
            .client_id
            .clone()
            .or_else(|| self.sole_client_id())?;
        let body = heartbeat::without_member(&frame.body(), &id)?;
        Some(frame.with_body(&body))
    }

    fn expect_member_list(&self, opaque: i32, listed: bool) {
        let mut seen = self.seen();
        if seen.member_lists.len() < MAX_GROUPS {
            seen.member_lists.insert(opaque, listed);
        }
    }

    /// `answer` (a GET_CONSUMER_LIST_BY_GROUP answer) with the app's own client id added.
    pub fn with_own_member(&self, answer: &RawFrame) -> Option<Bytes> {
        let id = self.sole_client_id()?;
        let body = heartbeat::with_member(&answer.body(), &id)?;
        self.count("consumer_list_joined");
        Some(answer.with_body(&body))
    }

    /// Whether a frame from the broker answers a request the sidecar sent (then it is
    /// dropped, not relayed).
    pub fn is_own_answer(&self, frame: &RawFrame) -> bool {
        if !frame.is_response() || frame.opaque() >= 0 {
            return false;
        }
        let mine = self.seen().own.remove(&frame.opaque());
        if mine {
            let outcome = if frame.code() == response::SUCCESS {
                "own_request_ok"
            } else {
                "own_request_refused"
            };
            self.count(outcome);
        }
        mine
    }

    /// The requests to send to the broker and to the client when the route changes from
    /// `before` to `now`: UNREGISTER_CLIENT for each group of a role that left this
    /// cluster (upward), NOTIFY_CONSUMER_IDS_CHANGED when the consumers moved (to the app).
    /// Upward requests still need signing.
    pub fn on_route_change(&self, before: RoleTargets, now: RoleTargets) -> RouteChange {
        let mut out = RouteChange::default();
        let mut seen = self.seen();
        let Some(client_id) = seen.client_id.clone() else {
            return out;
        };
        let left = |role: Role| before.get(role) == self.cluster && now.get(role) != self.cluster;
        if left(Role::Consumer) {
            for group in seen.consumers.clone() {
                out.to_broker
                    .push(self.unregister(&mut seen, &client_id, "consumerGroup", &group));
            }
        }
        if left(Role::Producer) {
            let kept = seen.transactional.clone();
            for group in seen.producers.clone().difference(&kept) {
                out.to_broker
                    .push(self.unregister(&mut seen, &client_id, "producerGroup", group));
            }
        }
        if before.consumer != now.consumer {
            if let Some(group) = seen.consumers.iter().next() {
                out.to_client.push(notify(group));
            }
        }
        drop(seen);
        for _ in &out.to_broker {
            self.count("unregistered");
        }
        for _ in &out.to_client {
            self.count("notified");
        }
        out
    }

    /// NOTIFY_CONSUMER_IDS_CHANGED for the app, if it has consumers on this connection
    /// (it then rebalances at once: after a route refresh that brought new queues).
    pub fn notify_client(&self) -> Option<Bytes> {
        let frame = self.seen().consumers.iter().next().map(|g| notify(g))?;
        self.count("notified");
        Some(frame)
    }

    fn unregister(&self, seen: &mut Seen, client_id: &str, field: &str, group: &str) -> Header {
        let opaque = self.next_opaque.fetch_sub(1, Ordering::Relaxed);
        seen.own.insert(opaque);
        if seen.own.len() > MAX_GROUPS {
            if let Some(oldest) = seen.own.iter().next_back().copied() {
                seen.own.remove(&oldest);
            }
        }
        let mut h = Header::request(request::UNREGISTER_CLIENT, opaque);
        h.set_ext("clientID", client_id);
        h.set_ext(field, group);
        h
    }

    fn heartbeat(
        &self,
        frame: RawFrame,
        consumers_here: bool,
        producers_here: bool,
        max_frame: usize,
    ) -> Result<RawFrame, HeaderError> {
        let body = frame.body();
        if let Some(groups) = heartbeat::groups(&body) {
            self.usage.record_subscriptions(&groups.subscriptions);
            if let Some(id) = &groups.client_id {
                let mut ids = self.client_ids.lock().unwrap_or_else(|p| p.into_inner());
                if ids.len() < MAX_GROUPS {
                    ids.insert(id.clone());
                }
            }
            let mut seen = self.seen();
            if groups.client_id.is_some() {
                seen.client_id = groups.client_id;
            }
            // What the app heartbeats now is what it uses: a group it dropped is forgotten
            // (and no longer kept here for transactions).
            seen.consumers = groups.consumers.into_iter().take(MAX_GROUPS).collect();
            seen.producers = groups.producers.into_iter().take(MAX_GROUPS).collect();
            let producers = seen.producers.clone();
            let dropped: Vec<String> = seen
                .transactional
                .iter()
                .filter(|g| !producers.contains(*g))
                .cloned()
                .collect();
            for g in &dropped {
                seen.transactional.remove(g);
                tracing::info!(cluster = %self.cluster, group = %g, "the app no longer uses this transactional producer group here");
            }
            drop(seen);
            for g in &dropped {
                self.keep(g, false);
            }
        }
        if consumers_here && producers_here {
            return Ok(frame);
        }
        let transactional = self.seen().transactional.clone();
        let keep_consumer = |_: &str| consumers_here;
        let keep_producer = |g: &str| producers_here || transactional.contains(g);
        let Some(filtered) = heartbeat::filter(&body, &keep_consumer, &keep_producer) else {
            return Ok(frame);
        };
        let header = Header::decode(frame.serialize_type(), frame.header_bytes())?;
        if header.ext("Signature").is_some_and(|s| !s.is_empty()) {
            // Signed by the app itself and the sidecar holds no credentials for this
            // cluster (else it re-signs every request): changing the body would break the
            // signature, so it goes as it came.
            self.count("signed_heartbeat_kept");
            return Ok(frame);
        }
        if !consumers_here {
            self.count("heartbeat_consumers_dropped");
        }
        if !producers_here {
            self.count("heartbeat_producers_dropped");
        }
        // The new frame is the old one with a shorter body: it parses unless the header
        // itself was over the limit, in which case the frame goes as it came.
        match RawFrame::parse(frame.with_body(&filtered), max_frame.max(frame.len())) {
            Ok(f) => Ok(f),
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "filtered heartbeat does not parse; sent unfiltered");
                Ok(frame)
            }
        }
    }

    /// Records the topic and producer group of a send (JSON headers are scanned, binary
    /// ones, which Java's benchmark tools alone send, decoded).
    fn note_send(&self, frame: &RawFrame) {
        let (topic_key, group_key) = if frame.code() == request::SEND_MESSAGE {
            ("topic", "producerGroup")
        } else {
            ("b", "a")
        };
        if frame.serialize_type() == SerializeType::Json {
            let h = frame.header_bytes();
            if let (Some(topic), Some(group)) =
                (json_ext_str(h, topic_key), json_ext_str(h, group_key))
            {
                self.usage.record_send(topic, group);
                return;
            }
        }
        if let Ok(h) = Header::decode(frame.serialize_type(), frame.header_bytes()) {
            if let (Some(topic), Some(group)) = (h.ext(topic_key), h.ext(group_key)) {
                self.usage.record_send(topic, group);
            }
        }
    }

    fn note_transaction(&self, frame: &RawFrame) -> Result<(), HeaderError> {
        let (group_key, flag_key) = if frame.code() == request::SEND_MESSAGE_V2 {
            ("a", "f")
        } else {
            ("producerGroup", "sysFlag")
        };
        // Every send passes here: a JSON header is scanned, not decoded, and only a
        // transactional half message (rare) is decoded for its group.
        if frame.serialize_type() == SerializeType::Json {
            let flag = json_ext_int(frame.header_bytes(), flag_key).unwrap_or(0);
            if flag & i64::from(sysflag::TRANSACTION_PREPARED) == 0 {
                return Ok(());
            }
        }
        let header = Header::decode(frame.serialize_type(), frame.header_bytes())?;
        let flag: i32 = header
            .ext(flag_key)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        if flag & sysflag::TRANSACTION_PREPARED != 0 {
            if let Some(group) = header.ext(group_key) {
                let mut seen = self.seen();
                if seen.transactional.len() < MAX_GROUPS
                    && seen.transactional.insert(group.to_owned())
                {
                    drop(seen);
                    self.keep(group, true);
                    tracing::info!(cluster = %self.cluster, group, "transactional producer group: it keeps heartbeating this cluster while the app uses it, so transaction checks reach it");
                }
            }
        }
        Ok(())
    }
}

impl Drop for RoleFilter {
    fn drop(&mut self) {
        let groups: Vec<String> = self.seen().transactional.iter().cloned().collect();
        for g in groups {
            self.keep(&g, false);
        }
    }
}

/// What a route change makes one connection send.
#[derive(Debug, Default)]
pub struct RouteChange {
    /// Requests to the broker (UNREGISTER_CLIENT), not yet signed.
    pub to_broker: Vec<Header>,
    /// Frames to the app (NOTIFY_CONSUMER_IDS_CHANGED).
    pub to_client: Vec<Bytes>,
}

/// A oneway NOTIFY_CONSUMER_IDS_CHANGED for `group`, as a broker sends it.
fn notify(group: &str) -> Bytes {
    let mut h = Header::request(request::NOTIFY_CONSUMER_IDS_CHANGED, 0);
    h.flag |= crate::protocol::code::FLAG_ONEWAY;
    h.set_ext("consumerGroup", group);
    h.encode_frame(&[])
}
