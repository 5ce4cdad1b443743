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

use bytes::Bytes;

use super::Signer;
use crate::protocol::code::request;
use crate::protocol::header::json_ext_starts_with;
use crate::protocol::names::map_broker_names;
use crate::protocol::{Header, HeaderError, RawFrame, SerializeType};

/// Upper bound on remembered in-flight requests per connection.
const MAX_TRACKED: usize = 4096;

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
    /// Client request opaque -> code, for responses whose body names brokers.
    client_requests: Mutex<HashMap<i32, i32>>,
    /// Broker request opaque -> code, for client replies whose body names brokers.
    broker_requests: Mutex<HashMap<i32, i32>>,
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
    /// A rewriter for one connection to a cluster with `renamer` and, when the cluster has
    /// credentials, `signer`.
    pub fn new(renamer: Renamer, signer: Option<Arc<Signer>>) -> Self {
        Self {
            renamer,
            signer,
            client_requests: Mutex::new(HashMap::new()),
            broker_requests: Mutex::new(HashMap::new()),
        }
    }

    /// A frame going from the app to the broker.
    pub fn client_to_broker(&self, frame: RawFrame) -> Result<Bytes, HeaderError> {
        if frame.is_response() {
            let code = lock(&self.broker_requests).remove(&frame.opaque());
            if code.is_some() {
                if let Some(body) = map_broker_names(&frame.body(), &|n| {
                    self.renamer.to_upstream(n).map(str::to_owned)
                }) {
                    return Ok(frame.with_body(&body));
                }
            }
            return Ok(frame.into_bytes());
        }
        let code = frame.code();
        if matches!(
            code,
            request::LOCK_BATCH_MQ
                | request::QUERY_ASSIGNMENT
                | request::GET_CONSUME_STATS
                | request::GET_TOPIC_STATS_INFO
        ) && !frame.is_oneway()
        {
            track(&self.client_requests, frame.opaque(), code);
        }
        let keys: &[&str] = if matches!(
            code,
            request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE | request::SEND_REPLY_MESSAGE_V2
        ) {
            &["bname", "n"]
        } else {
            &["bname"]
        };
        // Decide per frame, from its bytes, whether anything changes: without credentials to
        // sign with, a JSON request that names no prefixed broker goes as it came, undecoded.
        if self.signer.is_none()
            && frame.serialize_type() == SerializeType::Json
            && !matches!(code, request::LOCK_BATCH_MQ | request::UNLOCK_BATCH_MQ)
            && !keys
                .iter()
                .any(|k| json_ext_starts_with(frame.header_bytes(), k, self.renamer.prefix()))
        {
            return Ok(frame.into_bytes());
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
        // Signing comes last: the signature covers every ext value and the body.
        if let Some(signer) = &self.signer {
            if signer.sign(&mut header, &body) {
                changed = true;
            }
        }
        if changed {
            Ok(header.encode_frame(&body))
        } else {
            Ok(frame.into_bytes())
        }
    }

    /// A frame going from the broker to the app.
    pub fn broker_to_client(&self, frame: RawFrame) -> Result<Bytes, HeaderError> {
        if frame.is_response() && frame.code() != 0 {
            if let Some(signer) = &self.signer {
                if let Ok(h) = Header::decode(frame.serialize_type(), frame.header_bytes()) {
                    signer.note_answer(h.code, h.remark.as_deref());
                }
            }
        }
        if frame.is_response() {
            if lock(&self.client_requests)
                .remove(&frame.opaque())
                .is_some()
            {
                if let Some(body) =
                    map_broker_names(&frame.body(), &|n| Some(self.renamer.to_client(n)))
                {
                    return Ok(frame.with_body(&body));
                }
            }
            return Ok(frame.into_bytes());
        }
        match frame.code() {
            request::CONSUME_MESSAGE_DIRECTLY => {
                track(&self.broker_requests, frame.opaque(), frame.code());
                let mut header = Header::decode(frame.serialize_type(), frame.header_bytes())?;
                if let Some(name) = header.ext("brokerName").map(|n| self.renamer.to_client(n)) {
                    header.set_ext("brokerName", name);
                    return Ok(header.encode_frame(&frame.body()));
                }
                Ok(frame.into_bytes())
            }
            request::GET_CONSUMER_RUNNING_INFO => {
                track(&self.broker_requests, frame.opaque(), frame.code());
                Ok(frame.into_bytes())
            }
            request::RESET_CONSUMER_CLIENT_OFFSET => {
                match map_broker_names(&frame.body(), &|n| Some(self.renamer.to_client(n))) {
                    Some(body) => Ok(frame.with_body(&body)),
                    None => Ok(frame.into_bytes()),
                }
            }
            _ => Ok(frame.into_bytes()),
        }
    }
}

fn track(map: &Mutex<HashMap<i32, i32>>, opaque: i32, code: i32) {
    let mut m = lock(map);
    if m.len() >= MAX_TRACKED {
        // Requests whose answers never came (a broker that dropped them); forget them
        // rather than grow without bound. Worst case one answer keeps prefixed names.
        m.clear();
    }
    m.insert(opaque, code);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
