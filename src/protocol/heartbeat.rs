//! HEART_BEAT (34) bodies: HeartbeatData JSON, `{"clientID", "producerDataSet":
//! [{"groupName"}], "consumerDataSet": [{"groupName", "consumeType", "messageModel",
//! "consumeFromWhere", "subscriptionDataSet", "unitMode"}], ...}` (protocol notes §11;
//! 5.x adds `heartbeatFingerprint` and `isWithoutSub`). A broker registers the
//! connection in every group the body names, so the sidecar filters the body per cluster:
//! consumer groups only towards the cluster the pod's consumers use, producer groups only
//! towards its producers' cluster (and groups that still await transaction checks).

use serde_json::Value;

use super::route::parse_lenient;

/// The groups a heartbeat names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatGroups {
    /// The client's id (`ip@pid` style), as the broker registers it.
    pub client_id: Option<String>,
    /// Producer group names.
    pub producers: Vec<String>,
    /// Consumer group names.
    pub consumers: Vec<String>,
    /// Per consumer group, the topics it subscribes to (its retry topic included).
    pub subscriptions: Vec<(String, Vec<String>)>,
}

/// The groups in a heartbeat body; `None` if it is not HeartbeatData JSON.
pub fn groups(body: &[u8]) -> Option<HeartbeatGroups> {
    let value = parse_lenient(body).ok()?;
    let names = |key: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|g| g.get("groupName").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    value.as_object()?;
    let subscriptions = value
        .get("consumerDataSet")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|g| {
                    let group = g.get("groupName")?.as_str()?.to_owned();
                    let topics = g
                        .get("subscriptionDataSet")
                        .and_then(Value::as_array)
                        .map(|subs| {
                            subs.iter()
                                .filter_map(|s| s.get("topic").and_then(Value::as_str))
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    Some((group, topics))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(HeartbeatGroups {
        subscriptions,
        client_id: value
            .get("clientID")
            .and_then(Value::as_str)
            .map(str::to_owned),
        producers: names("producerDataSet"),
        consumers: names("consumerDataSet"),
    })
}

/// The body with only the consumer groups `keep_consumer` accepts and the producer
/// groups `keep_producer` accepts; `None` when nothing would change (the body is then
/// forwarded as it came) or it is not HeartbeatData JSON. The heartbeat itself stays (an
/// empty one still keeps the connection alive and the client known to the broker).
pub fn filter(
    body: &[u8],
    keep_consumer: &dyn Fn(&str) -> bool,
    keep_producer: &dyn Fn(&str) -> bool,
) -> Option<Vec<u8>> {
    let mut value = parse_lenient(body).ok()?;
    let obj = value.as_object_mut()?;
    let mut changed = false;
    for (key, keep) in [
        ("consumerDataSet", keep_consumer),
        ("producerDataSet", keep_producer),
    ] {
        if let Some(Value::Array(list)) = obj.get_mut(key) {
            let before = list.len();
            list.retain(|g| g.get("groupName").and_then(Value::as_str).is_some_and(keep));
            changed |= list.len() != before;
        }
    }
    if changed {
        // A 5.x heartbeat v2 fingerprint describes the body it came with; a broker that
        // sees an unknown fingerprint asks for (or takes) the full data, so drop it.
        obj.remove("heartbeatFingerprint");
    }
    changed.then(|| serde_json::to_vec(&value).unwrap_or_default())
}

/// GET_CONSUMER_LIST_BY_GROUP's answer body with `client_id` in `consumerIdList`; `None`
/// when it is there already or the body is not such an answer.
pub fn with_member(body: &[u8], client_id: &str) -> Option<Vec<u8>> {
    let mut value = parse_lenient(body).ok()?;
    let list = value.get_mut("consumerIdList")?.as_array_mut()?;
    if list.iter().any(|v| v.as_str() == Some(client_id)) {
        return None;
    }
    list.push(Value::from(client_id));
    serde_json::to_vec(&value).ok()
}

/// The id listed in place of a client that leaves a group when nobody else is listed: a
/// Java client refuses to rebalance over an empty list (and would keep its queues), but
/// over a list without itself it lets them all go.
pub const LEAVING_PLACEHOLDER: &str = "rmq-sidecar@switched-away";

/// GET_CONSUMER_LIST_BY_GROUP's answer body without `client_id` (with
/// [`LEAVING_PLACEHOLDER`] if nobody else is left); `None` when the body is not such an
/// answer.
pub fn without_member(body: &[u8], client_id: &str) -> Option<Vec<u8>> {
    let mut value = parse_lenient(body).ok()?;
    let list = value.get_mut("consumerIdList")?.as_array_mut()?;
    list.retain(|v| v.as_str() != Some(client_id));
    if list.is_empty() {
        list.push(Value::from(LEAVING_PLACEHOLDER));
    }
    serde_json::to_vec(&value).ok()
}

/// The response body of a LOCK_BATCH_MQ that locked nothing.
pub fn empty_lock_answer() -> &'static [u8] {
    br#"{"lockOKMQSet":[]}"#
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAVA: &str = r#"{"clientID":"10.0.0.7@4242","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"orders-consumer","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1,"tagsSet":[],"topic":"A"}],"unitMode":false},{"groupName":"CID_RMQ_SYS_TRACE","subscriptionDataSet":[]}],"heartbeatFingerprint":123,"producerDataSet":[{"groupName":"billing-producer"},{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;

    #[test]
    fn a_member_is_added_to_a_list_that_lacks_it() {
        let body = br#"{"consumerIdList":["10.0.0.8@1"]}"#;
        let added = with_member(body, "10.0.0.7@4242").unwrap();
        assert_eq!(
            added,
            br#"{"consumerIdList":["10.0.0.8@1","10.0.0.7@4242"]}"#.to_vec()
        );
        assert_eq!(with_member(&added, "10.0.0.7@4242"), None);
        assert_eq!(with_member(b"{}", "x"), None);
        let without = without_member(&added, "10.0.0.7@4242").unwrap();
        assert_eq!(without, body.to_vec());
        let alone =
            without_member(br#"{"consumerIdList":["10.0.0.7@4242"]}"#, "10.0.0.7@4242").unwrap();
        assert_eq!(
            alone,
            br#"{"consumerIdList":["rmq-sidecar@switched-away"]}"#.to_vec()
        );
    }

    #[test]
    fn groups_are_read_from_a_java_heartbeat() {
        let g = groups(JAVA.as_bytes()).unwrap();
        assert_eq!(g.client_id.as_deref(), Some("10.0.0.7@4242"));
        assert_eq!(g.consumers, ["orders-consumer", "CID_RMQ_SYS_TRACE"]);
        assert_eq!(g.producers, ["billing-producer", "CLIENT_INNER_PRODUCER"]);
        assert_eq!(
            g.subscriptions,
            vec![
                ("orders-consumer".to_owned(), vec!["A".to_owned()]),
                ("CID_RMQ_SYS_TRACE".to_owned(), vec![])
            ]
        );
        assert_eq!(groups(b"not json"), None);
        assert_eq!(groups(b"[1]"), None);
    }

    #[test]
    fn consumer_or_producer_groups_are_filtered_and_the_rest_kept() {
        let none = |_: &str| false;
        let all = |_: &str| true;
        let producers_only = filter(JAVA.as_bytes(), &none, &all).unwrap();
        let v: Value = serde_json::from_slice(&producers_only).unwrap();
        assert_eq!(v["consumerDataSet"], serde_json::json!([]));
        assert_eq!(v["producerDataSet"].as_array().unwrap().len(), 2);
        assert_eq!(v["clientID"], "10.0.0.7@4242");
        assert!(v.get("heartbeatFingerprint").is_none(), "{v}");
        let tx = |g: &str| g == "billing-producer";
        let consumers_and_tx = filter(JAVA.as_bytes(), &all, &tx).unwrap();
        let g = groups(&consumers_and_tx).unwrap();
        assert_eq!(g.producers, ["billing-producer"]);
        assert_eq!(g.consumers.len(), 2);
        assert_eq!(
            filter(JAVA.as_bytes(), &all, &all),
            None,
            "nothing to change"
        );
        assert_eq!(filter(b"{broken", &none, &none), None);
    }
}
