//! TDMQ 4.x namespaces: resource names as a namespaced cluster knows them.
//!
//! The official client with a namespace set sends every topic and group as
//! `<namespace>%<name>`, retry and dead-letter topics as `%RETRY%<namespace>%<group>` /
//! `%DLQ%<namespace>%<group>`, and leaves system resources (the topics of
//! `TopicValidator.isSystemTopic`, groups starting `CID_RMQ_SYS_`) and names already in the
//! namespace untouched (`NamespaceUtil.wrapNamespace` / `withoutNamespace(resource,
//! namespace)`). The same rules, byte for byte, let an app written without a namespace use
//! such a cluster: names are wrapped towards the cluster and unwrapped towards the app.

use std::borrow::Cow;

/// `%`: between the namespace and the name.
pub const SEPARATOR: char = '%';
/// Prefix of a consumer group's retry topic.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a consumer group's dead-letter topic.
pub const DLQ_PREFIX: &str = "%DLQ%";

/// Topics every broker keeps for itself (`TopicValidator.SYSTEM_TOPIC_SET`).
const SYSTEM_TOPICS: [&str; 10] = [
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "BenchmarkTest",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
    "CHECKPOINT_TOPIC",
];

/// Why a namespace is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// Empty is "no namespace", said by leaving the setting out.
    #[error("the namespace is empty; leave it out for a cluster without namespaces")]
    Empty,
    /// A character the servers do not accept in a resource name.
    #[error("'{0}' is not allowed in a namespace (letters, digits, '-', '_' and '|' are)")]
    Character(char),
    /// Longer than the servers accept.
    #[error("the namespace is {0} characters long; the most is 64")]
    TooLong(usize),
}

/// A validated namespace, e.g. `rocketmq-xxx|namespace` (TDMQ's form: the cluster id, a
/// `|`, the namespace name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// Checks `value` (surrounding blanks are an error, not trimmed silently).
    pub fn parse(value: &str) -> Result<Self, NamespaceError> {
        if value.is_empty() {
            return Err(NamespaceError::Empty);
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '|')))
        {
            return Err(NamespaceError::Character(c));
        }
        if value.len() > 64 {
            return Err(NamespaceError::TooLong(value.len()));
        }
        Ok(Self(value.to_owned()))
    }

    /// The namespace.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name the cluster knows for the app's `name` (`NamespaceUtil.wrapNamespace`).
    pub fn wrap<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if name.is_empty() || is_system(name) || self.is_wrapped(name) {
            return Cow::Borrowed(name);
        }
        let (prefix, bare) = split_retry_dlq(name);
        Cow::Owned(format!("{prefix}{}{SEPARATOR}{bare}", self.0))
    }

    /// The name the app knows for the cluster's `name` (`NamespaceUtil.withoutNamespace(
    /// name, namespace)`): only a name in this namespace changes.
    pub fn unwrap<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if name.is_empty() || !self.is_wrapped(name) {
            return Cow::Borrowed(name);
        }
        let (prefix, bare) = split_retry_dlq(name);
        // `withoutNamespace(resource)` cuts at the first separator after the prefix.
        match bare.find(SEPARATOR) {
            Some(i) if i > 0 => Cow::Owned(format!("{prefix}{}", &bare[i + 1..])),
            _ => Cow::Borrowed(name),
        }
    }

    /// Whether `name` is already in this namespace (`isAlreadyWithNamespace`).
    pub fn is_wrapped(&self, name: &str) -> bool {
        if name.is_empty() || is_system(name) {
            return false;
        }
        let (_, bare) = split_retry_dlq(name);
        bare.len() > self.0.len()
            && bare.starts_with(self.0.as_str())
            && bare[self.0.len()..].starts_with(SEPARATOR)
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The producer group every Java client runs inside (`MixAll.CLIENT_INNER_PRODUCER_GROUP`,
/// for sending messages back); the client never namespaces it, so neither does the sidecar.
pub const CLIENT_INNER_PRODUCER: &str = "CLIENT_INNER_PRODUCER";

/// `name` as a client with namespace `ns` puts it on the wire, when that differs from `name`:
/// [`Namespace::wrap`], except for [`CLIENT_INNER_PRODUCER`].
pub fn wrapped_by_client(ns: &Namespace, name: &str) -> Option<String> {
    if name == CLIENT_INNER_PRODUCER {
        return None;
    }
    match ns.wrap(name) {
        Cow::Owned(w) => Some(w),
        Cow::Borrowed(_) => None,
    }
}

/// A system topic or group: never namespaced.
pub fn is_system(name: &str) -> bool {
    SYSTEM_TOPICS.contains(&name)
        || name.starts_with("rmq_sys_")
        || name.starts_with("CID_RMQ_SYS_")
}

/// (`%RETRY%` / `%DLQ%` / "", the rest).
fn split_retry_dlq(name: &str) -> (&'static str, &str) {
    if let Some(rest) = name.strip_prefix(RETRY_PREFIX) {
        (RETRY_PREFIX, rest)
    } else if let Some(rest) = name.strip_prefix(DLQ_PREFIX) {
        (DLQ_PREFIX, rest)
    } else {
        ("", name)
    }
}

/// The ext fields of a request from the app that name a topic or a group, by request code
/// (Apache RocketMQ's request headers; `defaultTopic` is the system topic TBW102 and is left
/// to [`Namespace::wrap`]'s system rule). Properties (`properties`, V2 `i`) are handled as
/// a string of their own.
pub fn request_name_fields(code: i32) -> &'static [&'static str] {
    match code {
        // SEND_MESSAGE, SEND_REPLY_MESSAGE
        10 | 324 => &["producerGroup", "topic"],
        // SEND_MESSAGE_V2, SEND_BATCH_MESSAGE, SEND_REPLY_MESSAGE_V2 (a = producerGroup, b = topic)
        310 | 320 | 325 => &["a", "b"],
        // PULL_MESSAGE, QUERY_CONSUMER_OFFSET, UPDATE_CONSUMER_OFFSET, LITE_PULL_MESSAGE,
        // QUERY_ASSIGNMENT
        11 | 14 | 15 | 361 | 400 => &["consumerGroup", "topic"],
        // QUERY_MESSAGE, SEARCH_OFFSET_BY_TIMESTAMP, GET_MAX_OFFSET, GET_MIN_OFFSET,
        // GET_EARLIEST_MSG_STORETIME, GET_ROUTEINFO_BY_TOPIC
        12 | 29 | 30 | 31 | 32 | 105 => &["topic"],
        // UNREGISTER_CLIENT
        35 => &["producerGroup", "consumerGroup"],
        // CONSUMER_SEND_MSG_BACK
        36 => &["group", "originTopic"],
        // END_TRANSACTION (5.x adds the topic)
        37 => &["producerGroup", "topic"],
        // GET_CONSUMER_LIST_BY_GROUP
        38 => &["consumerGroup"],
        // CHECK_CLIENT_CONFIG
        46 => &["group"],
        _ => &[],
    }
}

/// The ext fields of a request from the broker to the app that name a topic or a group.
pub fn broker_request_name_fields(code: i32) -> &'static [&'static str] {
    match code {
        // CHECK_TRANSACTION_STATE (5.x carries the topic)
        39 => &["topic"],
        // NOTIFY_CONSUMER_IDS_CHANGED
        40 => &["consumerGroup"],
        // RESET_CONSUMER_CLIENT_OFFSET, GET_CONSUMER_STATUS_FROM_CLIENT
        220 | 221 => &["topic", "group"],
        // GET_CONSUMER_RUNNING_INFO, CONSUME_MESSAGE_DIRECTLY
        307 | 309 => &["consumerGroup"],
        _ => &[],
    }
}

/// Wraps, in `ns`, the header fields of a request that name a topic or a group (for the
/// requests the sidecar sends on the app's behalf: unregistering, redirected member lists).
/// Returns whether anything changed.
pub fn wrap_request_header(ns: &Namespace, header: &mut super::Header) -> bool {
    let mut changed = false;
    for key in request_name_fields(header.code) {
        let Some(wrapped) = header.ext(key).and_then(|v| wrapped_by_client(ns, v)) else {
            continue;
        };
        header.set_ext(key, wrapped);
        changed = true;
    }
    changed
}

/// JSON body keys that name a topic or a group: heartbeats (`groupName`, subscriptions'
/// `topic`), lock and unlock bodies and answers (`consumerGroup`, queues' `topic`), message
/// queues in assignments, offsets and running info.
pub const BODY_NAME_KEYS: [&str; 3] = ["topic", "groupName", "consumerGroup"];

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers of Apache RocketMQ's `NamespaceUtil` (5.3.3), produced by
    /// `tests/interop/client/.../NamespaceVectors.java`:
    /// (namespace, input, wrapNamespace, withoutNamespace(input, namespace)).
    const VECTORS: &str = include_str!("../../tests/fixtures/namespace-vectors.tsv");

    #[test]
    fn wrap_and_unwrap_match_the_official_client() {
        let mut n = 0;
        for line in VECTORS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 4, "{line}");
            let ns = Namespace::parse(cols[0]).unwrap();
            assert_eq!(ns.wrap(cols[1]), cols[2], "wrap {line}");
            assert_eq!(ns.unwrap(cols[1]), cols[3], "unwrap {line}");
            n += 1;
        }
        assert!(n >= 20, "only {n} vectors");
    }

    #[test]
    fn namespaces_are_validated() {
        assert_eq!(Namespace::parse(""), Err(NamespaceError::Empty));
        assert_eq!(Namespace::parse("a%b"), Err(NamespaceError::Character('%')));
        assert_eq!(Namespace::parse(" ns"), Err(NamespaceError::Character(' ')));
        assert!(matches!(
            Namespace::parse(&"x".repeat(65)),
            Err(NamespaceError::TooLong(65))
        ));
        assert_eq!(
            Namespace::parse("rocketmq-abc|ns_1").unwrap().as_str(),
            "rocketmq-abc|ns_1"
        );
    }
}
