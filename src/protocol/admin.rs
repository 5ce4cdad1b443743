//! The broker's admin answers the migration gates read, and the requests that ask for
//! them (protocol notes §8 and §10): who consumes a topic, who is online in a group, a
//! group's committed offset per queue, a queue's end, a group's backlog. Pure: requests
//! are built as [`Header`]s, answers are parsed from body bytes.
//!
//! GET_CONSUME_STATS keys its `offsetTable` by message-queue *objects*
//! (`{{"brokerName":"b","queueId":0,"topic":"T"}:{…}}`), which is not JSON; it is read
//! through [`quote_object_keys`].

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use super::code::request;
use super::names::string_end;
use super::Header;

/// Why an admin answer could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdminBodyError {
    /// The body is not the JSON shape the request answers with.
    #[error("{what}: {reason}")]
    Shape {
        /// Which answer.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// One message queue of a topic on one broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Queue {
    /// Broker name (as the cluster calls it).
    pub broker_name: String,
    /// Queue id.
    pub queue_id: u32,
}

/// The queues of a topic on one broker, and the broker's master address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerQueues {
    /// Broker name.
    pub broker_name: String,
    /// Master address (`brokerAddrs["0"]`); `None` when the broker has no master now.
    pub master: Option<String>,
    /// Queue count: the larger of read and write queue numbers (every queue a message can
    /// be in or be read from).
    pub queues: u32,
}

/// One queue's figures in a GET_CONSUME_STATS answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStat {
    /// Topic (the group's retry topic is one of them).
    pub topic: String,
    /// Broker name.
    pub broker_name: String,
    /// Queue id.
    pub queue_id: u32,
    /// The queue's end.
    pub broker_offset: i64,
    /// The group's committed offset (0 when it has none).
    pub consumer_offset: i64,
    /// Store time of the queue's last message (Unix ms; 0 when the queue is empty).
    pub last_timestamp: i64,
}

impl QueueStat {
    /// Messages of this queue the group has not consumed.
    pub fn lag(&self) -> i64 {
        (self.broker_offset - self.consumer_offset).max(0)
    }
}

/// A GET_CONSUMER_CONNECTION_LIST answer: the members online and what they subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerConnection {
    /// Client ids of the members connected to that broker.
    pub client_ids: BTreeSet<String>,
    /// Topics the group subscribes to.
    pub topics: BTreeSet<String>,
}

/// Groups the servers keep for their own tools (`MixAll`): never a migration's concern.
pub fn is_system_group(group: &str) -> bool {
    const EXACT: [&str; 8] = [
        "TOOLS_CONSUMER",
        "FILTERSRV_CONSUMER",
        "SELF_TEST_C_GROUP",
        "CID_ONS-HTTP-PROXY",
        "CID_ONSAPI_PERMISSION",
        "CID_ONSAPI_OWNER",
        "CID_ONSAPI_PULL",
        "CID_RMQ_SYS_TRANS",
    ];
    EXACT.contains(&group) || group.starts_with("CID_RMQ_SYS_") || group.starts_with("CID_SYS_RMQ_")
}

/// A request with `fields` as its ext fields; `bname` (5.x proxies route by it) when given.
fn admin_request(code: i32, fields: &[(&str, &str)], broker_name: Option<&str>) -> Header {
    let mut h = Header::request(code, 0);
    for (k, v) in fields {
        h.set_ext(k, *v);
    }
    if let Some(b) = broker_name.filter(|b| !b.is_empty()) {
        h.set_ext("bname", b);
    }
    h
}

/// QUERY_TOPIC_CONSUME_BY_WHO for `topic`.
pub fn consume_by_who(topic: &str) -> Header {
    admin_request(
        request::QUERY_TOPIC_CONSUME_BY_WHO,
        &[("topic", topic)],
        None,
    )
}

/// GET_CONSUMER_CONNECTION_LIST for `group`.
pub fn consumer_connections(group: &str) -> Header {
    admin_request(
        request::GET_CONSUMER_CONNECTION_LIST,
        &[("consumerGroup", group)],
        None,
    )
}

/// GET_CONSUMER_LIST_BY_GROUP for `group`.
pub fn consumer_ids(group: &str) -> Header {
    admin_request(
        request::GET_CONSUMER_LIST_BY_GROUP,
        &[("consumerGroup", group)],
        None,
    )
}

/// QUERY_CONSUMER_OFFSET of `group` on one queue, asking for QUERY_NOT_FOUND rather than
/// a guessed 0 when none is stored (5.x honours the flag; 4.9.x ignores it).
pub fn query_offset(group: &str, topic: &str, queue: &Queue) -> Header {
    let q = queue.queue_id.to_string();
    admin_request(
        request::QUERY_CONSUMER_OFFSET,
        &[
            ("consumerGroup", group),
            ("topic", topic),
            ("queueId", &q),
            ("setZeroIfNotFound", "false"),
        ],
        Some(&queue.broker_name),
    )
}

/// UPDATE_CONSUMER_OFFSET of `group` on one queue to `offset`.
pub fn update_offset(group: &str, topic: &str, queue: &Queue, offset: i64) -> Header {
    let q = queue.queue_id.to_string();
    let o = offset.to_string();
    admin_request(
        request::UPDATE_CONSUMER_OFFSET,
        &[
            ("consumerGroup", group),
            ("topic", topic),
            ("queueId", &q),
            ("commitOffset", &o),
        ],
        Some(&queue.broker_name),
    )
}

/// GET_MAX_OFFSET of one queue.
pub fn max_offset(topic: &str, queue: &Queue) -> Header {
    let q = queue.queue_id.to_string();
    admin_request(
        request::GET_MAX_OFFSET,
        &[("topic", topic), ("queueId", &q)],
        Some(&queue.broker_name),
    )
}

/// GET_CONSUME_STATS of `group` over every topic it has offsets for on that broker.
pub fn consume_stats(group: &str) -> Header {
    admin_request(
        request::GET_CONSUME_STATS,
        &[("consumerGroup", group)],
        None,
    )
}

fn shape(what: &'static str, reason: impl ToString) -> AdminBodyError {
    AdminBodyError::Shape {
        what,
        reason: reason.to_string(),
    }
}

fn parse_json(what: &'static str, body: &[u8]) -> Result<Value, AdminBodyError> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            let text = std::str::from_utf8(body).map_err(|e| shape(what, e))?;
            serde_json::from_str(&quote_object_keys(text)).map_err(|_| shape(what, first))
        }
    }
}

fn string_set(
    what: &'static str,
    value: &Value,
    key: &str,
) -> Result<BTreeSet<String>, AdminBodyError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()),
        Some(other) => Err(shape(what, format!("{key} is {other}, not a list"))),
    }
}

/// The groups of a QUERY_TOPIC_CONSUME_BY_WHO answer (`{"groupList":[…]}`).
pub fn parse_group_list(body: &[u8]) -> Result<BTreeSet<String>, AdminBodyError> {
    let v = parse_json("group list", body)?;
    string_set("group list", &v, "groupList")
}

/// The ids of a GET_CONSUMER_LIST_BY_GROUP answer (`{"consumerIdList":[…]}`).
pub fn parse_consumer_ids(body: &[u8]) -> Result<BTreeSet<String>, AdminBodyError> {
    let v = parse_json("consumer id list", body)?;
    string_set("consumer id list", &v, "consumerIdList")
}

/// A GET_CONSUMER_CONNECTION_LIST answer.
pub fn parse_consumer_connection(body: &[u8]) -> Result<ConsumerConnection, AdminBodyError> {
    const WHAT: &str = "consumer connection";
    let v = parse_json(WHAT, body)?;
    let client_ids = match v.get("connectionSet") {
        Some(Value::Array(set)) => set
            .iter()
            .filter_map(|c| c.get("clientId").and_then(Value::as_str))
            .map(str::to_owned)
            .collect(),
        None | Some(Value::Null) => BTreeSet::new(),
        Some(other) => return Err(shape(WHAT, format!("connectionSet is {other}"))),
    };
    let topics = match v.get("subscriptionTable") {
        Some(Value::Object(table)) => table.keys().cloned().collect(),
        None | Some(Value::Null) => BTreeSet::new(),
        Some(other) => return Err(shape(WHAT, format!("subscriptionTable is {other}"))),
    };
    Ok(ConsumerConnection { client_ids, topics })
}

/// The per-queue figures of a GET_CONSUME_STATS answer.
pub fn parse_consume_stats(body: &[u8]) -> Result<Vec<QueueStat>, AdminBodyError> {
    const WHAT: &str = "consume stats";
    let v = parse_json(WHAT, body)?;
    let table = match v.get("offsetTable") {
        Some(Value::Object(t)) => t,
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(other) => return Err(shape(WHAT, format!("offsetTable is {other}"))),
    };
    let mut out = Vec::with_capacity(table.len());
    for (key, figures) in table {
        let mq: Value = serde_json::from_str(key)
            .map_err(|e| shape(WHAT, format!("queue key {key:?}: {e}")))?;
        let int = |v: &Value, k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
        let topic = mq.get("topic").and_then(Value::as_str);
        let broker = mq.get("brokerName").and_then(Value::as_str);
        let (Some(topic), Some(broker)) = (topic, broker) else {
            return Err(shape(
                WHAT,
                format!("queue key {key:?} lacks topic or brokerName"),
            ));
        };
        out.push(QueueStat {
            topic: topic.to_owned(),
            broker_name: broker.to_owned(),
            queue_id: u32::try_from(int(&mq, "queueId")).unwrap_or(0),
            broker_offset: int(figures, "brokerOffset"),
            consumer_offset: int(figures, "consumerOffset"),
            last_timestamp: int(figures, "lastTimestamp"),
        });
    }
    out.sort_by(|a, b| {
        (&a.topic, &a.broker_name, a.queue_id).cmp(&(&b.topic, &b.broker_name, b.queue_id))
    });
    Ok(out)
}

/// The `offset` of a GET_MAX_OFFSET or QUERY_CONSUMER_OFFSET answer header.
pub fn answer_offset(header: &Header) -> Option<i64> {
    header.ext("offset")?.parse().ok()
}

/// Every broker of a topic route (`queueDatas` joined with `brokerDatas`), in name order.
pub fn route_queues(route: &Value) -> Vec<BrokerQueues> {
    let masters: std::collections::BTreeMap<&str, Option<String>> = route
        .get("brokerDatas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bd| {
            let name = bd.get("brokerName")?.as_str()?;
            let master = bd
                .get("brokerAddrs")
                .and_then(|a| a.get("0"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some((name, master))
        })
        .collect();
    let mut out: Vec<BrokerQueues> = route
        .get("queueDatas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|qd| {
            let name = qd.get("brokerName")?.as_str()?;
            let n = |k: &str| qd.get(k).and_then(Value::as_u64).unwrap_or(0);
            let queues = u32::try_from(n("readQueueNums").max(n("writeQueueNums"))).ok()?;
            Some(BrokerQueues {
                broker_name: name.to_owned(),
                master: masters.get(name).cloned().flatten(),
                queues,
            })
        })
        .collect();
    out.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
    out
}

/// Rewrites a fastjson body whose maps are keyed by objects (`{{…}:v}`) into JSON whose
/// keys are those objects' text as strings (`{"{…}":v}`). Other text is unchanged.
pub fn quote_object_keys(text: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Ctx {
        /// In an object, expecting a key (after `{` or `,`).
        Key,
        /// In an object, after the key.
        Value,
        Array,
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 64);
    let mut stack: Vec<Ctx> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' => {
                let end = string_end(bytes, i);
                out.push_str(&text[i..end]);
                i = end;
                continue;
            }
            b'{' if stack.last() == Some(&Ctx::Key) => {
                let end = balanced_end(bytes, i);
                out.push_str(&serde_json::Value::String(text[i..end].to_owned()).to_string());
                if let Some(top) = stack.last_mut() {
                    *top = Ctx::Value;
                }
                i = end;
                continue;
            }
            b'{' => stack.push(Ctx::Key),
            b'[' => stack.push(Ctx::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(top) = stack.last_mut() {
                    if *top == Ctx::Key {
                        *top = Ctx::Value;
                    }
                }
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    if *top == Ctx::Value {
                        *top = Ctx::Key;
                    }
                }
            }
            _ => {}
        }
        // A string key moves the object past its key position only at the `:`.
        out.push(c as char);
        i += 1;
    }
    out
}

/// Index just past the `{…}` starting at `start`, strings skipped.
fn balanced_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape of a 4.9.x / 5.x broker's ConsumeStats (fastjson, object keys, fields in
    /// alphabetical order), with the retry topic and a group that has no offset on a queue.
    const STATS: &str = r#"{"consumeTps":1.5,"offsetTable":{{"brokerName":"broker-a","queueId":1,"topic":"T"}:{"brokerOffset":10,"consumerOffset":7,"lastTimestamp":1700000000500,"pullOffset":8},{"brokerName":"broker-a","queueId":0,"topic":"%RETRY%G"}:{"brokerOffset":2,"consumerOffset":2,"lastTimestamp":1700000000000,"pullOffset":2},{"brokerName":"broker-a","queueId":0,"topic":"T"}:{"brokerOffset":4,"consumerOffset":0,"lastTimestamp":0}}}"#;

    #[test]
    fn consume_stats_with_object_keys_are_read() {
        let stats = parse_consume_stats(STATS.as_bytes()).unwrap();
        assert_eq!(stats.len(), 3);
        assert_eq!(
            (stats[0].topic.as_str(), stats[0].queue_id, stats[0].lag()),
            ("%RETRY%G", 0, 0)
        );
        assert_eq!(
            (stats[1].topic.as_str(), stats[1].queue_id, stats[1].lag()),
            ("T", 0, 4)
        );
        assert_eq!(stats[2].lag(), 3);
        assert_eq!(stats[2].last_timestamp, 1_700_000_000_500);
        // Plain JSON (string keys) is read too, and no table is no queue.
        assert!(parse_consume_stats(br#"{"consumeTps":0.0}"#)
            .unwrap()
            .is_empty());
        assert!(parse_consume_stats(b"{\"offsetTable\":{\"x\":{}}}").is_err());
        assert!(parse_consume_stats(b"not json").is_err());
    }

    #[test]
    fn object_keys_are_quoted_and_nothing_else_changes() {
        let plain = r#"{"a":[{"b":"{x}"},2],"c":{"d":"e,f:g"}}"#;
        assert_eq!(quote_object_keys(plain), plain);
        let keyed = r#"{"t":{{"k":"v}"}:1,{"k":"w"}:{"n":[1,{"z":2}]}}}"#;
        let v: Value = serde_json::from_str(&quote_object_keys(keyed)).unwrap();
        let t = v["t"].as_object().unwrap();
        assert_eq!(t[r#"{"k":"v}"}"#], 1);
        assert_eq!(t[r#"{"k":"w"}"#]["n"][1]["z"], 2);
    }

    #[test]
    fn lists_and_connections_are_read() {
        assert_eq!(
            parse_group_list(br#"{"groupList":["G1","G2"]}"#).unwrap(),
            BTreeSet::from(["G1".to_owned(), "G2".to_owned()])
        );
        assert!(parse_group_list(br#"{"groupList":"G1"}"#).is_err());
        assert_eq!(
            parse_consumer_ids(br#"{"consumerIdList":["a@1"]}"#)
                .unwrap()
                .len(),
            1
        );
        let c = parse_consumer_connection(
            br#"{"connectionSet":[{"clientAddr":"1.2.3.4:5","clientId":"10.0.0.1@7","language":"JAVA","version":413}],"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","subscriptionTable":{"T":{"subString":"*"},"%RETRY%G":{"subString":"*"}}}"#,
        )
        .unwrap();
        assert_eq!(c.client_ids.iter().next().unwrap(), "10.0.0.1@7");
        assert!(c.topics.contains("T") && c.topics.contains("%RETRY%G"));
    }

    #[test]
    fn route_queues_join_queue_and_broker_data() {
        let route: Value = serde_json::from_str(
            r#"{"queueDatas":[{"brokerName":"b","readQueueNums":4,"writeQueueNums":8,"perm":6},{"brokerName":"a","readQueueNums":2,"writeQueueNums":2,"perm":6}],
                "brokerDatas":[{"brokerName":"a","brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"}},{"brokerName":"b","brokerAddrs":{"1":"10.0.0.3:10911"}}]}"#,
        )
        .unwrap();
        let q = route_queues(&route);
        assert_eq!(q.len(), 2);
        assert_eq!(
            (
                q[0].broker_name.as_str(),
                q[0].master.as_deref(),
                q[0].queues
            ),
            ("a", Some("10.0.0.1:10911"), 2)
        );
        assert_eq!((q[1].master.as_deref(), q[1].queues), (None, 8));
    }

    #[test]
    fn requests_carry_the_fields_the_broker_reads() {
        let q = Queue {
            broker_name: "broker-a".into(),
            queue_id: 3,
        };
        let h = query_offset("G", "T", &q);
        assert_eq!(h.code, request::QUERY_CONSUMER_OFFSET);
        assert_eq!(
            (
                h.ext("consumerGroup"),
                h.ext("topic"),
                h.ext("queueId"),
                h.ext("setZeroIfNotFound"),
                h.ext("bname")
            ),
            (
                Some("G"),
                Some("T"),
                Some("3"),
                Some("false"),
                Some("broker-a")
            )
        );
        let h = update_offset("G", "T", &q, 42);
        assert_eq!(
            (h.code, h.ext("commitOffset")),
            (request::UPDATE_CONSUMER_OFFSET, Some("42"))
        );
        assert_eq!(consume_by_who("T").ext("topic"), Some("T"));
        assert!(is_system_group("TOOLS_CONSUMER") && is_system_group("CID_RMQ_SYS_X"));
        assert!(!is_system_group("orders"));
    }
}
