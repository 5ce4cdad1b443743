//! Per-connection request rewriting: broker names, then the ACL signature.
//!
//! Broker names as the app sees them. Queues are keyed by (topic, broker name, queue id)
//! in the client, so if both clusters have `broker-a`, a consumer moved to the other cluster
//! would carry the first cluster's offsets over and skip or repeat messages. Each cluster
//! therefore has a prefix (`new~` by default for the new cluster, none for the old one):
//! route answers show prefixed names and every request that carries a broker name back to
//! a broker has the prefix removed before it leaves the sidecar. A prefix (not a suffix)
//! keeps the sort order of names, which clients use to allocate queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::signing::may_be_refusal;
use super::Signer;
use crate::protocol::code::request;
use crate::protocol::header::json_ext_starts_with;
use crate::protocol::json_ext::ExtSplice;
use crate::protocol::messages::{map_messages, map_properties};
use crate::protocol::names::{map_broker_names, map_string_values};
use crate::protocol::namespace::{self, Namespace};
use crate::protocol::{Header, HeaderError, OutFrame, RawFrame, SerializeType};

/// Upper bound on remembered in-flight requests per connection.
const MAX_TRACKED: usize = 4096;
/// How long an in-flight request is remembered at least (a broker holds a long-poll up to
/// 30 s; nothing else waits as long).
const TRACKED_FOR: Duration = Duration::from_secs(120);

/// Request opaque -> (code, when it was sent, order of tracking).
type Tracked = HashMap<i32, (i32, Instant, u64)>;

/// Orders tracked requests (instants can be equal on a coarse clock).
static TRACK_ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One cluster's broker-name mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamer {
    prefix: String,
}

/// Per-connection rewriting of frames that carry broker names, and signing of requests
/// for a cluster with credentials.
#[derive(Debug)]
pub struct FrameRewriter {
    renamer: Renamer,
    signer: Option<Arc<Signer>>,
    namespace: Option<Namespace>,
    /// Client request opaque -> code, for responses whose body names brokers.
    client_requests: Mutex<Tracked>,
    /// Broker request opaque -> code, for client replies whose body names brokers.
    broker_requests: Mutex<Tracked>,
}

// === impl Renamer ===

impl Renamer {
    /// A mapping that adds `prefix` ("" = identity).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix added to this cluster's broker names ("" = none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True when names are changed at all.
    pub fn is_active(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// The name the app sees for upstream name `name`.
    pub fn to_client(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// The upstream name for a name the app sent; `None` if it carries no prefix.
    pub fn to_upstream<'a>(&self, name: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return None;
        }
        name.strip_prefix(self.prefix.as_str())
    }
}

// === impl FrameRewriter ===

impl FrameRewriter {
    /// A rewriter for one connection to a cluster with `renamer`, when the cluster has
    /// credentials `signer`, and when it has a namespace `namespace` (topics and groups are
    /// wrapped in it towards the broker and unwrapped towards the app).
    pub fn new(
        renamer: Renamer,
        signer: Option<Arc<Signer>>,
        namespace: Option<Namespace>,
    ) -> Self {
        Self {
            renamer,
            signer,
            namespace,
            client_requests: Mutex::new(HashMap::new()),
            broker_requests: Mutex::new(HashMap::new()),
        }
    }

    /// A frame going from the app to the broker.
    pub fn client_to_broker(&self, frame: RawFrame) -> Result<OutFrame, HeaderError> {
        if frame.is_response() {
            let code = take(&self.broker_requests, frame.opaque());
            if code.is_some() {
                let mut body = frame.body();
                let mut changed = false;
                if let Some(mapped) =
                    map_broker_names(&body, &|n| self.renamer.to_upstream(n).map(str::to_owned))
                {
                    body = Bytes::from(mapped);
                    changed = true;
                }
                if let Some(ns) = &self.namespace {
                    if let Some(mapped) = map_string_values(&body, &["topic"], &|n| wrapped(ns, n))
                    {
                        body = Bytes::from(mapped);
                        changed = true;
                    }
                }
                if changed {
                    return Ok(frame.with_new_body(body));
                }
            }
            return Ok(unchanged(frame));
        }
        let code = frame.code();
        let answers_with_names = matches!(
            code,
            request::LOCK_BATCH_MQ
                | request::QUERY_ASSIGNMENT
                | request::GET_CONSUME_STATS
                | request::GET_TOPIC_STATS_INFO
        ) || (self.namespace.is_some() && answers_with_messages(code));
        if answers_with_names && !frame.is_oneway() {
            track(&self.client_requests, frame.opaque(), code);
        }
        let ns_fields: &[&str] = match &self.namespace {
            Some(_) => namespace::request_name_fields(code),
            None => &[],
        };
        let ns_body = self.namespace.is_some() && names_in_body(code);
        let ns_props: Option<&str> = match (&self.namespace, code) {
            (Some(_), request::SEND_MESSAGE | request::SEND_REPLY_MESSAGE) => Some("properties"),
            (
                Some(_),
                request::SEND_MESSAGE_V2
                | request::SEND_BATCH_MESSAGE
                | request::SEND_REPLY_MESSAGE_V2,
            ) => Some("i"),
            _ => None,
        };
        let keys: &[&str] = if matches!(
            code,
            request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE | request::SEND_REPLY_MESSAGE_V2
        ) {
            &["bname", "n"]
        } else {
            &["bname"]
        };
        // A JSON request whose only possible changes are broker names in ext fields and
        // the signature (no namespace, no names in its body).
        let ext_only = frame.serialize_type() == SerializeType::Json
            && ns_fields.is_empty()
            && !ns_body
            && ns_props.is_none()
            && !matches!(code, request::LOCK_BATCH_MQ | request::UNLOCK_BATCH_MQ);
        // Decide per frame, from its bytes, whether anything changes: without credentials to
        // sign with, such a request that names no prefixed broker goes as it came, undecoded.
        if self.signer.is_none()
            && ext_only
            && !keys
                .iter()
                .any(|k| json_ext_starts_with(frame.header_bytes(), k, self.renamer.prefix()))
        {
            return Ok(unchanged(frame));
        }
        // Otherwise it is scanned and spliced, never decoded, and its body goes out as it
        // came (headers the scanner does not read are decoded below).
        if ext_only {
            let body = frame.body();
            let spliced = ExtSplice::scan(frame.header_bytes()).map(|mut ext| {
                for key in keys {
                    let mapped = ext
                        .get(key)
                        .and_then(|v| self.renamer.to_upstream(v))
                        .map(str::to_owned);
                    if let Some(name) = mapped {
                        ext.set(key, name);
                    }
                }
                // Signing comes last: the signature covers every ext value and the body.
                if let Some(signer) = &self.signer {
                    signer.sign_splice(&mut ext, &body);
                }
                ext.is_edited().then(|| ext.finish())
            });
            match spliced {
                Some(Some(header)) => {
                    return Ok(OutFrame::with_header(SerializeType::Json, &header, body))
                }
                Some(None) => return Ok(unchanged(frame)),
                None => {}
            }
        }
        let mut header = Header::decode(frame.serialize_type(), frame.header_bytes())?;
        let mut changed = false;
        for key in keys {
            let mapped = header
                .ext(key)
                .and_then(|v| self.renamer.to_upstream(v))
                .map(str::to_owned);
            if let Some(name) = mapped {
                header.set_ext(key, name);
                changed = true;
            }
        }
        let mut body = frame.body();
        if matches!(code, request::LOCK_BATCH_MQ | request::UNLOCK_BATCH_MQ) {
            if let Some(mapped) =
                map_broker_names(&body, &|n| self.renamer.to_upstream(n).map(str::to_owned))
            {
                body = Bytes::from(mapped);
                changed = true;
            }
        }
        if let Some(ns) = &self.namespace {
            for key in ns_fields {
                let w = header.ext(key).and_then(|v| wrapped(ns, v));
                if let Some(w) = w {
                    header.set_ext(key, w);
                    changed = true;
                }
            }
            if let Some(key) = ns_props {
                let mapped = header
                    .ext(key)
                    .and_then(|p| map_properties(p.as_bytes(), &|n| wrapped(ns, n)))
                    .and_then(|p| String::from_utf8(p).ok());
                if let Some(p) = mapped {
                    header.set_ext(key, p);
                    changed = true;
                }
            }
            if ns_body {
                if let Some(mapped) =
                    map_string_values(&body, &namespace::BODY_NAME_KEYS, &|n| wrapped(ns, n))
                {
                    body = Bytes::from(mapped);
                    changed = true;
                }
            }
        }
        // Signing comes last: the signature covers every ext value and the body.
        if let Some(signer) = &self.signer {
            if signer.sign(&mut header, &body) {
                changed = true;
            }
        }
        if changed {
            Ok(header.encode_split(body))
        } else {
            Ok(unchanged(frame))
        }
    }

    /// A frame going from the broker to the app.
    pub fn broker_to_client(&self, frame: RawFrame) -> Result<OutFrame, HeaderError> {
        if frame.is_response() && may_be_refusal(frame.code()) {
            if let Some(signer) = &self.signer {
                if let Ok(h) = Header::decode(frame.serialize_type(), frame.header_bytes()) {
                    signer.note_answer(h.code, h.remark.as_deref());
                }
            }
        }
        if frame.is_response() {
            let Some(code) = take(&self.client_requests, frame.opaque()) else {
                return Ok(unchanged(frame));
            };
            let mut body = frame.body();
            let mut changed = false;
            if let Some(ns) = &self.namespace {
                let mapped = if answers_with_messages(code) {
                    if frame.code() == 0 {
                        match map_messages(&body, &|n| unwrapped(ns, n)) {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::debug!(reason = %e, "pulled messages left as they came");
                                None
                            }
                        }
                    } else {
                        None
                    }
                } else {
                    map_string_values(&body, &["topic"], &|n| unwrapped(ns, n))
                };
                if let Some(m) = mapped {
                    body = Bytes::from(m);
                    changed = true;
                }
            }
            if !answers_with_messages(code) {
                if let Some(m) = map_broker_names(&body, &|n| Some(self.renamer.to_client(n))) {
                    body = Bytes::from(m);
                    changed = true;
                }
            }
            return Ok(if changed {
                frame.with_new_body(body)
            } else {
                unchanged(frame)
            });
        }
        if let Some(ns) = &self.namespace {
            return self.broker_request_to_namespaced_app(frame, ns);
        }
        match frame.code() {
            request::CONSUME_MESSAGE_DIRECTLY => {
                track(&self.broker_requests, frame.opaque(), frame.code());
                let mut header = Header::decode(frame.serialize_type(), frame.header_bytes())?;
                if let Some(name) = header.ext("brokerName").map(|n| self.renamer.to_client(n)) {
                    header.set_ext("brokerName", name);
                    return Ok(header.encode_split(frame.body()));
                }
                Ok(unchanged(frame))
            }
            request::GET_CONSUMER_RUNNING_INFO => {
                track(&self.broker_requests, frame.opaque(), frame.code());
                Ok(unchanged(frame))
            }
            request::RESET_CONSUMER_CLIENT_OFFSET => {
                match map_broker_names(&frame.body(), &|n| Some(self.renamer.to_client(n))) {
                    Some(body) => Ok(frame.with_new_body(Bytes::from(body))),
                    None => Ok(unchanged(frame)),
                }
            }
            _ => Ok(unchanged(frame)),
        }
    }
}

impl FrameRewriter {
    /// A request from a namespaced cluster's broker to the app: its names unwrapped (header
    /// fields, message bodies, offset tables), broker names mapped.
    fn broker_request_to_namespaced_app(
        &self,
        frame: RawFrame,
        ns: &Namespace,
    ) -> Result<OutFrame, HeaderError> {
        let code = frame.code();
        if matches!(
            code,
            request::CONSUME_MESSAGE_DIRECTLY | request::GET_CONSUMER_RUNNING_INFO
        ) {
            track(&self.broker_requests, frame.opaque(), code);
        }
        let fields = namespace::broker_request_name_fields(code);
        let with_messages = matches!(
            code,
            request::CHECK_TRANSACTION_STATE | request::CONSUME_MESSAGE_DIRECTLY
        );
        if fields.is_empty() && !with_messages && code != request::RESET_CONSUMER_CLIENT_OFFSET {
            return Ok(unchanged(frame));
        }
        let mut header = Header::decode(frame.serialize_type(), frame.header_bytes())?;
        let mut changed = false;
        for key in fields {
            let u = header.ext(key).and_then(|v| unwrapped(ns, v));
            if let Some(u) = u {
                header.set_ext(key, u);
                changed = true;
            }
        }
        if code == request::CONSUME_MESSAGE_DIRECTLY {
            if let Some(name) = header.ext("brokerName").map(|n| self.renamer.to_client(n)) {
                header.set_ext("brokerName", name);
                changed = true;
            }
        }
        let mut body = frame.body();
        if with_messages {
            if let Ok(Some(m)) = map_messages(&body, &|n| unwrapped(ns, n)) {
                body = Bytes::from(m);
                changed = true;
            }
        }
        if code == request::RESET_CONSUMER_CLIENT_OFFSET {
            let renamed = map_broker_names(&body, &|n| Some(self.renamer.to_client(n)));
            let source = renamed.as_deref().unwrap_or(&body);
            let unwrapped_body = map_string_values(source, &["topic"], &|n| unwrapped(ns, n));
            if let Some(m) = unwrapped_body.or(renamed) {
                body = Bytes::from(m);
                changed = true;
            }
        }
        Ok(if changed {
            header.encode_split(body)
        } else {
            unchanged(frame)
        })
    }
}

/// A frame that goes out as it came.
fn unchanged(frame: RawFrame) -> OutFrame {
    OutFrame::Whole(frame.into_bytes())
}

/// Request codes whose answer is a run of stored messages (pulls, message queries).
fn answers_with_messages(code: i32) -> bool {
    matches!(
        code,
        request::PULL_MESSAGE | request::LITE_PULL_MESSAGE | 12 | 33
    )
}

/// Request codes whose JSON body names topics or groups: heartbeats, lock and unlock
/// bodies, CHECK_CLIENT_CONFIG, QUERY_ASSIGNMENT and SET_MESSAGE_REQUEST_MODE.
fn names_in_body(code: i32) -> bool {
    matches!(
        code,
        request::HEART_BEAT
            | request::LOCK_BATCH_MQ
            | request::UNLOCK_BATCH_MQ
            | 46
            | request::QUERY_ASSIGNMENT
            | 401
    )
}

/// `name` wrapped in `ns` as the official client would send it, when that changes it.
fn wrapped(ns: &Namespace, name: &str) -> Option<String> {
    namespace::wrapped_by_client(ns, name)
}

/// `name` without `ns`, when that changes it.
fn unwrapped(ns: &Namespace, name: &str) -> Option<String> {
    match ns.unwrap(name) {
        std::borrow::Cow::Owned(u) => Some(u),
        std::borrow::Cow::Borrowed(_) => None,
    }
}

/// Remembers that the answer to `opaque` (a request with `code`) must be rewritten. The map
/// is bounded: past [`MAX_TRACKED`] entries, those older than [`TRACKED_FOR`] (requests whose
/// answers never came: a broker that dropped them) are swept; if that frees nothing, the
/// oldest half goes. A forgotten entry costs one answer left as it came, never a wrong one.
fn track(map: &Mutex<Tracked>, opaque: i32, code: i32) {
    let mut m = lock(map);
    let now = Instant::now();
    if m.len() >= MAX_TRACKED {
        m.retain(|_, (_, at, _)| now.duration_since(*at) < TRACKED_FOR);
        if m.len() >= MAX_TRACKED {
            let mut order: Vec<u64> = m.values().map(|(_, _, n)| *n).collect();
            order.sort_unstable();
            let cut = order[order.len() / 2];
            m.retain(|_, (_, _, n)| *n >= cut);
        }
    }
    let n = TRACK_ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    m.insert(opaque, (code, now, n));
}

/// Taken out of the map: the code of the request `opaque` answers, if it was tracked.
fn take(map: &Mutex<Tracked>, opaque: i32) -> Option<i32> {
    lock(map).remove(&opaque).map(|(code, _, _)| code)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_requests_stay_bounded_and_the_newest_are_kept() {
        let map: Mutex<Tracked> = Mutex::new(HashMap::new());
        for opaque in 0..(3 * MAX_TRACKED as i32) {
            track(&map, opaque, 41);
            assert!(lock(&map).len() <= MAX_TRACKED);
        }
        let last = 3 * MAX_TRACKED as i32 - 1;
        assert_eq!(
            take(&map, last),
            Some(41),
            "the newest request is remembered"
        );
        assert_eq!(take(&map, 0), None, "the oldest went first");
        assert!(
            lock(&map).len() >= MAX_TRACKED / 2 - 1,
            "only half goes at a time"
        );
    }
}
