//! Name-server bodies that carry broker addresses and names: the topic route (105), the
//! cluster info (106) and the system topic list (304).
//!
//! Upstream bodies come in two dialects: standard JSON, and fastjson's default output in
//! which integer map keys are bare (`{"brokerAddrs":{0:"10.0.0.1:10911"}}`). Both are read
//! here; the sidecar always answers compact standard JSON, which every client parses.
//! The rewrite works on a generic JSON value, so every field this code does not know
//! (5.x `enableActingMaster`, `zoneName`, static-topic mappings, ...) is kept.

use std::collections::BTreeSet;

use serde_json::Value;

/// Why a name-server body could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Not JSON, even after quoting fastjson's bare keys.
    #[error("body is not JSON: {0}")]
    Json(String),
    /// JSON of the wrong shape.
    #[error("body has an unexpected shape: {0}")]
    Shape(&'static str),
}

/// What to do with the addresses and names inside a body.
pub trait RouteMapper {
    /// The local address that replaces upstream broker address `upstream`. `None` leaves it.
    fn local_addr(&self, upstream: &str) -> Option<String>;
    /// The broker name the client sees for upstream broker name `name`.
    fn client_name(&self, name: &str) -> String;
}

/// Parses a name-server body, accepting fastjson's unquoted integer keys.
pub fn parse_lenient(body: &[u8]) -> Result<Value, RouteError> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            let text = std::str::from_utf8(body).map_err(|e| RouteError::Json(e.to_string()))?;
            let quoted = quote_bare_keys(text);
            serde_json::from_str(&quoted).map_err(|_| RouteError::Json(first.to_string()))
        }
    }
}

/// Every broker address in a route or cluster-info body (`brokerDatas[].brokerAddrs`
/// values, `filterServerTable` keys, `brokerAddrTable[].brokerAddrs` values, `brokerAddr`).
pub fn broker_addresses(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add_broker_data = |bd: &Value| {
        if let Some(addrs) = bd.get("brokerAddrs").and_then(Value::as_object) {
            out.extend(addrs.values().filter_map(Value::as_str).map(str::to_owned));
        }
    };
    if let Some(list) = value.get("brokerDatas").and_then(Value::as_array) {
        list.iter().for_each(&mut add_broker_data);
    }
    if let Some(table) = value.get("brokerAddrTable").and_then(Value::as_object) {
        table.values().for_each(&mut add_broker_data);
    }
    if let Some(fst) = value.get("filterServerTable").and_then(Value::as_object) {
        out.extend(fst.keys().cloned());
    }
    if let Some(addr) = value.get("brokerAddr").and_then(Value::as_str) {
        out.insert(addr.to_owned());
    }
    out
}

/// Rewrites a TopicRouteData (GET_ROUTEINFO_BY_TOPIC answer) in place.
pub fn rewrite_topic_route(route: &mut Value, mapper: &dyn RouteMapper) -> Result<(), RouteError> {
    let obj = route
        .as_object_mut()
        .ok_or(RouteError::Shape("route is not an object"))?;
    if let Some(list) = obj.get_mut("brokerDatas") {
        let list = list
            .as_array_mut()
            .ok_or(RouteError::Shape("brokerDatas is not a list"))?;
        for bd in list {
            rewrite_broker_data(bd, mapper)?;
        }
    }
    if let Some(list) = obj.get_mut("queueDatas").and_then(Value::as_array_mut) {
        for qd in list {
            rename_field(qd, "brokerName", mapper);
        }
    }
    if let Some(Value::Object(fst)) = obj.get_mut("filterServerTable") {
        let old = std::mem::take(fst);
        for (addr, servers) in old {
            let key = mapper.local_addr(&addr).unwrap_or(addr);
            fst.insert(key, servers);
        }
    }
    if let Some(Value::String(conf)) = obj.get_mut("orderTopicConf") {
        *conf = rename_order_conf(conf, mapper);
    }
    if let Some(Value::Object(mapping)) = obj.get_mut("topicQueueMappingByBroker") {
        let old = std::mem::take(mapping);
        for (name, mut info) in old {
            rename_field(&mut info, "bname", mapper);
            mapping.insert(mapper.client_name(&name), info);
        }
    }
    Ok(())
}

/// Rewrites a ClusterInfo (GET_BROKER_CLUSTER_INFO answer) in place.
pub fn rewrite_cluster_info(info: &mut Value, mapper: &dyn RouteMapper) -> Result<(), RouteError> {
    let obj = info
        .as_object_mut()
        .ok_or(RouteError::Shape("cluster info is not an object"))?;
    if let Some(Value::Object(table)) = obj.get_mut("brokerAddrTable") {
        let old = std::mem::take(table);
        for (name, mut bd) in old {
            rewrite_broker_data(&mut bd, mapper)?;
            table.insert(mapper.client_name(&name), bd);
        }
    }
    if let Some(Value::Object(clusters)) = obj.get_mut("clusterAddrTable") {
        for names in clusters.values_mut() {
            if let Some(list) = names.as_array_mut() {
                for n in list {
                    if let Value::String(s) = n {
                        *s = mapper.client_name(s);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Rewrites a TopicList with a `brokerAddr` (GET_SYSTEM_TOPIC_LIST_FROM_NS answer).
pub fn rewrite_topic_list(list: &mut Value, mapper: &dyn RouteMapper) -> Result<(), RouteError> {
    let obj = list
        .as_object_mut()
        .ok_or(RouteError::Shape("topic list is not an object"))?;
    if let Some(Value::String(addr)) = obj.get_mut("brokerAddr") {
        if let Some(local) = mapper.local_addr(addr) {
            *addr = local;
        }
    }
    Ok(())
}

/// `PermName` bits of a queue (protocol notes §3.4).
pub mod perm {
    /// Consumers may read the queue.
    pub const READ: i64 = 4;
    /// Producers may write the queue.
    pub const WRITE: i64 = 2;
}

/// Keeps only the `perm` bits in `keep` on every queue of a route (already rewritten):
/// `perm::WRITE` for the cluster the pod's producers use, `perm::READ` for its consumers'.
/// Producers pick queues whose perm has WRITE, consumers queues whose perm has READ, so a
/// queue the pod's role does not use there is one its clients never pick. An
/// `orderTopicConf` (from which producers build their queues whatever the perms) is
/// dropped unless WRITE is kept.
pub fn restrict_perm(route: &mut Value, keep: i64) {
    if let Some(list) = route.get_mut("queueDatas").and_then(Value::as_array_mut) {
        for qd in list {
            if let Some(p) = qd.get("perm").and_then(Value::as_i64) {
                qd["perm"] = Value::from(p & (keep | !(perm::READ | perm::WRITE)));
            }
        }
    }
    if keep & perm::WRITE == 0 {
        if let Some(obj) = route.as_object_mut() {
            obj.remove("orderTopicConf");
        }
    }
}

/// One route from the producers' cluster's and the consumers' cluster's routes of the same
/// topic (each already rewritten and restricted with [`restrict_perm`]): broker and queue
/// lists concatenated (broker names are distinct per cluster by their prefix), maps
/// merged. Either side may be missing (the topic is not on that cluster).
pub fn compose_routes(producer: Option<Value>, consumer: Option<Value>) -> Option<Value> {
    match (producer, consumer) {
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => Some(one),
        (Some(mut p), Some(c)) => {
            merge_json(&mut p, c);
            Some(p)
        }
    }
}

/// One cluster info from both clusters' (already rewritten) cluster infos: broker tables
/// merged, cluster name lists joined.
pub fn compose_cluster_info(a: Option<Value>, b: Option<Value>) -> Option<Value> {
    compose_routes(a, b)
}

/// Merges `from` into `into`: arrays are concatenated, objects merged key by key (arrays
/// of strings joined without repeats), scalars of `into` kept.
fn merge_json(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge_json(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for v in b {
                if !(v.is_string() && a.contains(&v)) {
                    a.push(v);
                }
            }
        }
        _ => {}
    }
}

/// Compact standard JSON.
pub fn to_compact_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn rewrite_broker_data(bd: &mut Value, mapper: &dyn RouteMapper) -> Result<(), RouteError> {
    let obj = bd
        .as_object_mut()
        .ok_or(RouteError::Shape("broker data is not an object"))?;
    if let Some(Value::Object(addrs)) = obj.get_mut("brokerAddrs") {
        // Keys are broker ids (0 = master, 1.. = slaves): kept as they are.
        for addr in addrs.values_mut() {
            if let Value::String(s) = addr {
                if let Some(local) = mapper.local_addr(s) {
                    *s = local;
                }
            }
        }
    }
    rename_field(bd, "brokerName", mapper);
    Ok(())
}

fn rename_field(obj: &mut Value, key: &str, mapper: &dyn RouteMapper) {
    if let Some(Value::String(name)) = obj.get_mut(key) {
        *name = mapper.client_name(name);
    }
}

/// `brokerName:queueNum;brokerName:queueNum` with every name mapped.
fn rename_order_conf(conf: &str, mapper: &dyn RouteMapper) -> String {
    conf.split(';')
        .map(|item| match item.split_once(':') {
            Some((name, nums)) => format!("{}:{}", mapper.client_name(name), nums),
            None => item.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Quotes bare (unquoted) object keys such as fastjson's integer keys: `{0:"a"}` becomes
/// `{"0":"a"}`. Strings are copied untouched, escapes included.
pub fn quote_bare_keys(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    // Per open bracket: true for an object. `expect_key` is true right after `{` or a `,`
    // inside an object.
    let mut stack: Vec<bool> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                let end = i.min(bytes.len());
                out.push_str(&text[start..end]);
                expect_key = false;
                continue;
            }
            b'{' => {
                stack.push(true);
                expect_key = true;
                out.push('{');
            }
            b'[' => {
                stack.push(false);
                expect_key = false;
                out.push('[');
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
                out.push(c as char);
            }
            b',' => {
                expect_key = stack.last().copied().unwrap_or(false);
                out.push(',');
            }
            b':' => {
                expect_key = false;
                out.push(':');
            }
            c if c.is_ascii_whitespace() => out.push(c as char),
            _ if expect_key => {
                let start = i;
                while i < bytes.len() && bytes[i] != b':' && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                out.push('"');
                out.push_str(&text[start..i]);
                out.push('"');
                expect_key = false;
                continue;
            }
            _ => {
                // Part of a bare value (number, true, null): copy it.
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b',' | b'}' | b']' | b':' | b'"')
                    && !bytes[i].is_ascii_whitespace()
                {
                    i += 1;
                }
                out.push_str(&text[start..i]);
                continue;
            }
        }
        i += 1;
    }
    out
}
