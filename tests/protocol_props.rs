//! Property tests of the protocol codecs: headers read back as they were written, in
//! both forms (and the binary form's limits, protocol notes §1.2, hold as documented);
//! generated TopicRouteData bodies in both fastjson dialects read, rewrite and rewrite
//! back to themselves. The fuzz targets in fuzz/ take arbitrary bytes; these take
//! well-formed values and check exact results. Case counts are bounded (a few seconds).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use bytes::BytesMut;
use proptest::prelude::*;
use rocketmq_sidecar::protocol::route::{self, RouteMapper};
use rocketmq_sidecar::protocol::{encode_frame, FrameDecoder, Header, SerializeType};
use serde_json::{json, Map, Value};
use tokio_util::codec::Decoder;

/// Java's LanguageCode names (the binary form carries one of these as a byte).
const LANGUAGES: [&str; 14] = [
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP",
    "OMS", "RUST", "NODE_JS",
];

/// Header fields `Header::decode` takes out of a JSON header; the rest land in `other`.
const KNOWN_FIELDS: [&str; 7] = [
    "code",
    "language",
    "version",
    "opaque",
    "flag",
    "remark",
    "extFields",
];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any text, control characters, quotes and non-BMP characters included.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn ext_map(
    key: impl Strategy<Value = String>,
    value: impl Strategy<Value = String>,
    min: usize,
) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key, value), min..6)
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        })
        .prop_filter(
            "needs its minimum of distinct keys",
            move |m: &Map<_, _>| m.len() >= min,
        )
}

/// Values an unknown JSON header field may hold (no floats: their text form is not this
/// crate's business).
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text(8).prop_map(Value::from),
        prop::collection::vec(any::<i32>(), 0..3).prop_map(Value::from),
    ]
}

fn json_header() -> impl Strategy<Value = Header> {
    let language = prop_oneof![
        prop::sample::select(&LANGUAGES[..]).prop_map(str::to_owned),
        text(6),
    ];
    let other = prop::collection::vec(("[a-zA-Z]{1,10}", json_value()), 0..4).prop_map(|kv| {
        kv.into_iter()
            .filter(|(k, _)| !KNOWN_FIELDS.contains(&k.as_str()))
            .collect::<Map<_, _>>()
    });
    (
        (any::<i32>(), language, any::<i32>()),
        (any::<i32>(), any::<i32>(), prop::option::of(text(12))),
        prop::option::of(ext_map(text(8), text(12), 0)),
        other,
    )
        .prop_map(
            |((code, language, version), (opaque, flag, remark), ext_fields, other)| Header {
                code,
                language,
                version,
                opaque,
                flag,
                remark,
                ext_fields,
                other,
            },
        )
}

/// Headers within what the binary form carries: 16-bit code and version, a known
/// language, no empty remark, no empty ext map and no empty ext value, no unknown fields.
fn binary_header() -> impl Strategy<Value = Header> {
    let non_empty = |max| text(max).prop_filter("non-empty", |s| !s.is_empty());
    (
        (
            any::<i16>(),
            prop::sample::select(&LANGUAGES[..]),
            any::<i16>(),
        ),
        (any::<i32>(), any::<i32>(), prop::option::of(non_empty(12))),
        prop::option::of(ext_map(text(8), non_empty(12), 1)),
    )
        .prop_map(
            |((code, language, version), (opaque, flag, remark), ext_fields)| Header {
                code: i32::from(code),
                language: language.to_owned(),
                version: i32::from(version),
                opaque,
                flag,
                remark,
                ext_fields,
                other: Map::new(),
            },
        )
}

/// `Header`'s `==` ignores map order; the codec must also keep it.
fn assert_same_order(a: &Header, b: &Header) {
    let keys = |h: &Header| -> (Vec<String>, Vec<String>) {
        (
            h.ext_fields
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect(),
            h.other.keys().cloned().collect(),
        )
    };
    assert_eq!(keys(a), keys(b));
}

fn decode_frame(bytes: &[u8]) -> rocketmq_sidecar::protocol::RawFrame {
    let mut buf = BytesMut::from(bytes);
    let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    frame
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn json_header_round_trips(h in json_header()) {
        let back = Header::decode(SerializeType::Json, &h.to_json()).unwrap();
        prop_assert_eq!(&back, &h);
        assert_same_order(&back, &h);

        let frame = decode_frame(&h.encode_frame(b"body"));
        prop_assert_eq!(frame.serialize_type(), SerializeType::Json);
        prop_assert_eq!((frame.code(), frame.opaque(), frame.version()), (h.code, h.opaque, h.version));
        prop_assert_eq!(frame.is_response(), h.is_response());
        prop_assert_eq!(&frame.body()[..], b"body");
        let back = Header::decode(frame.serialize_type(), frame.header_bytes()).unwrap();
        prop_assert_eq!(back, h);
    }

    #[test]
    fn binary_header_round_trips(h in binary_header()) {
        let bin = h.to_binary();
        let back = Header::decode(SerializeType::RocketMq, &bin).unwrap();
        prop_assert_eq!(&back, &h);
        assert_same_order(&back, &h);

        let frame = decode_frame(&encode_frame(SerializeType::RocketMq, &bin, b"body"));
        prop_assert_eq!(frame.header_bytes(), &bin[..]);
        prop_assert_eq!((frame.code(), frame.opaque(), frame.version()), (h.code, h.opaque, h.version));
        // The same header also survives the JSON form the sidecar answers in.
        let json = Header::decode(SerializeType::Json, &h.to_json()).unwrap();
        prop_assert_eq!(json, h);
    }

    #[test]
    fn binary_form_truncates_wide_codes_and_drops_empty_strings(
        h in binary_header(),
        code in prop_oneof![32_768i32..=i32::MAX, i32::MIN..-32_768],
        version in 32_768i32..=i32::MAX,
    ) {
        // §1.2: codes above 32767 (POP_MESSAGE 200050, ...) cannot be carried, and a
        // zero-length remark or ext map decodes as absent. This is why the sidecar emits JSON.
        let mut wide = h;
        wide.code = code;
        wide.version = version;
        wide.remark = Some(String::new());
        wide.ext_fields = Some(Map::new());
        let back = Header::decode(SerializeType::RocketMq, &wide.to_binary()).unwrap();
        prop_assert_eq!(back.code, i32::from(code as i16));
        prop_assert_ne!(back.code, code);
        prop_assert_eq!(back.version, i32::from(version as i16));
        prop_assert_eq!(back.remark, None);
        prop_assert_eq!(back.ext_fields, None);
        // JSON carries all of it.
        let json = Header::decode(SerializeType::Json, &wide.to_json()).unwrap();
        prop_assert_eq!(json, wide);
    }
}

// === TopicRouteData bodies ===

#[derive(Debug, Clone)]
struct Broker {
    name: String,
    cluster: String,
    /// Broker id (0 = master) -> address; ids ascending, as fastjson's sorted map writes them.
    addrs: BTreeMap<u32, String>,
}

#[derive(Debug, Clone)]
struct Queue {
    name: String,
    perm: u8,
    read: u16,
    write: u16,
}

#[derive(Debug, Clone)]
struct Route {
    brokers: Vec<Broker>,
    queues: Vec<Queue>,
    /// Filter-server table keyed by one of the brokers' addresses.
    filter: Vec<(String, Vec<String>)>,
    order_conf: Option<String>,
}

fn broker_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,16}"
}

fn address() -> impl Strategy<Value = String> {
    (any::<[u8; 4]>(), 1u16..)
        .prop_map(|(ip, port)| format!("{}.{}.{}.{}:{port}", ip[0], ip[1], ip[2], ip[3]))
}

fn route_model() -> impl Strategy<Value = Route> {
    let broker = (
        broker_name(),
        text(6),
        prop::collection::btree_map(0u32..4, address(), 1..3),
    )
        .prop_map(|(name, cluster, addrs)| Broker {
            name,
            cluster,
            addrs,
        });
    prop::collection::vec(broker, 0..4).prop_flat_map(|brokers| {
        let names: Vec<String> = brokers.iter().map(|b| b.name.clone()).collect();
        let addrs: Vec<String> = brokers
            .iter()
            .flat_map(|b| b.addrs.values().cloned())
            .collect();
        let name = if names.is_empty() {
            broker_name().boxed()
        } else {
            prop::sample::select(names).boxed()
        };
        let queue = (name.clone(), 0u8..16, any::<u16>(), any::<u16>()).prop_map(
            |(name, perm, read, write)| Queue {
                name,
                perm,
                read,
                write,
            },
        );
        let filter = if addrs.is_empty() {
            Just(Vec::new()).boxed()
        } else {
            prop::collection::btree_map(
                prop::sample::select(addrs),
                prop::collection::vec(address(), 0..2),
                0..2,
            )
            .prop_map(|m| m.into_iter().collect())
            .boxed()
        };
        let order_conf = prop::option::of(prop::collection::vec((name, 1u8..16), 1..3).prop_map(
            |items| {
                items
                    .iter()
                    .map(|(n, q)| format!("{n}:{q}"))
                    .collect::<Vec<_>>()
                    .join(";")
            },
        ));
        (
            Just(brokers),
            prop::collection::vec(queue, 0..4),
            filter,
            order_conf,
        )
            .prop_map(|(brokers, queues, filter, order_conf)| Route {
                brokers,
                queues,
                filter,
                order_conf,
            })
    })
}

/// The body as a name server writes it: fastjson's sorted fields, compact, integer map keys
/// bare (`bare_keys`, plain fastjson) or quoted (BrowserCompatible, Java >= 4.9.4).
fn render(route: &Route, bare_keys: bool) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap();
    let brokers: Vec<String> = route
        .brokers
        .iter()
        .map(|b| {
            let addrs: Vec<String> = b
                .addrs
                .iter()
                .map(|(id, a)| {
                    if bare_keys {
                        format!("{id}:{}", s(a))
                    } else {
                        format!("\"{id}\":{}", s(a))
                    }
                })
                .collect();
            format!(
                r#"{{"brokerAddrs":{{{}}},"brokerName":{},"cluster":{},"enableActingMaster":false}}"#,
                addrs.join(","),
                s(&b.name),
                s(&b.cluster)
            )
        })
        .collect();
    let filter: Vec<String> = route
        .filter
        .iter()
        .map(|(addr, servers)| {
            let list: Vec<String> = servers.iter().map(|x| s(x)).collect();
            format!("{}:[{}]", s(addr), list.join(","))
        })
        .collect();
    let queues: Vec<String> = route
        .queues
        .iter()
        .map(|q| {
            format!(
                r#"{{"brokerName":{},"perm":{},"readQueueNums":{},"topicSysFlag":0,"writeQueueNums":{}}}"#,
                s(&q.name),
                q.perm,
                q.read,
                q.write
            )
        })
        .collect();
    let order = route
        .order_conf
        .as_ref()
        .map(|c| format!(r#""orderTopicConf":{},"#, s(c)))
        .unwrap_or_default();
    format!(
        r#"{{"brokerDatas":[{}],"filterServerTable":{{{}}},{order}"queueDatas":[{}]}}"#,
        brokers.join(","),
        filter.join(","),
        queues.join(",")
    )
}

/// The standard-JSON value of `route` with every address and name mapped.
fn expected(route: &Route, addr: &dyn Fn(&str) -> String, name: &dyn Fn(&str) -> String) -> Value {
    let brokers: Vec<Value> = route
        .brokers
        .iter()
        .map(|b| {
            let addrs: Map<String, Value> = b
                .addrs
                .iter()
                .map(|(id, a)| (id.to_string(), Value::from(addr(a))))
                .collect();
            json!({"brokerAddrs": addrs, "brokerName": name(&b.name), "cluster": b.cluster, "enableActingMaster": false})
        })
        .collect();
    let filter: Map<String, Value> = route
        .filter
        .iter()
        .map(|(a, servers)| (addr(a), json!(servers)))
        .collect();
    let queues: Vec<Value> = route
        .queues
        .iter()
        .map(|q| json!({"brokerName": name(&q.name), "perm": q.perm, "readQueueNums": q.read, "topicSysFlag": 0, "writeQueueNums": q.write}))
        .collect();
    let mut out = Map::new();
    out.insert("brokerDatas".into(), Value::from(brokers));
    out.insert("filterServerTable".into(), Value::from(filter));
    if let Some(conf) = &route.order_conf {
        let mapped: Vec<String> = conf
            .split(';')
            .map(|item| {
                let (n, q) = item.split_once(':').unwrap();
                format!("{}:{q}", name(n))
            })
            .collect();
        out.insert("orderTopicConf".into(), Value::from(mapped.join(";")));
    }
    out.insert("queueDatas".into(), Value::from(queues));
    Value::Object(out)
}

/// The sidecar's mapping: known upstream addresses to local listeners, names prefixed.
struct Mapper {
    addrs: HashMap<String, String>,
    prefix: &'static str,
    strip: bool,
}

impl RouteMapper for Mapper {
    fn local_addr(&self, upstream: &str) -> Option<String> {
        self.addrs.get(upstream).cloned()
    }
    fn client_name(&self, name: &str) -> String {
        if self.strip {
            name.strip_prefix(self.prefix).unwrap_or(name).to_owned()
        } else {
            format!("{}{name}", self.prefix)
        }
    }
}

fn compact(v: &Value) -> String {
    String::from_utf8(route::to_compact_json(v)).unwrap()
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn route_parses_rewrites_and_rewrites_back_in_both_dialects(
        model in route_model(),
        bare_keys in any::<bool>(),
    ) {
        let body = render(&model, bare_keys);
        if bare_keys && model.brokers.iter().any(|b| !b.addrs.is_empty()) {
            prop_assert!(serde_json::from_str::<Value>(&body).is_err(), "not fastjson's dialect");
        }
        let same = |s: &str| s.to_owned();
        let mut value = route::parse_lenient(body.as_bytes()).unwrap();
        prop_assert_eq!(compact(&value), compact(&expected(&model, &same, &same)));

        // Every upstream address gets a local listener, every name the cluster's prefix.
        let mut to_local = HashMap::new();
        for a in model.brokers.iter().flat_map(|b| b.addrs.values()) {
            let n = to_local.len();
            to_local.entry(a.clone()).or_insert_with(|| format!("127.1.{}.{}:10911", n / 250, n % 250 + 1));
        }
        let to_upstream: HashMap<String, String> =
            to_local.iter().map(|(u, l)| (l.clone(), u.clone())).collect();
        let forward = Mapper { addrs: to_local.clone(), prefix: "new~", strip: false };
        let backward = Mapper { addrs: to_upstream, prefix: "new~", strip: true };

        route::rewrite_topic_route(&mut value, &forward).unwrap();
        let sent = route::to_compact_json(&value);
        let local = |a: &str| to_local[a].clone();
        let prefixed = |n: &str| format!("new~{n}");
        let strict: Value = serde_json::from_slice(&sent).unwrap();
        prop_assert_eq!(compact(&strict), compact(&expected(&model, &local, &prefixed)));
        for addr in route::broker_addresses(&strict) {
            prop_assert!(addr.starts_with("127.1."), "{} left unmapped", addr);
        }

        // What the client got, mapped back, is the body the name server sent.
        let mut back = route::parse_lenient(&sent).unwrap();
        route::rewrite_topic_route(&mut back, &backward).unwrap();
        prop_assert_eq!(compact(&back), compact(&expected(&model, &same, &same)));
    }
}

// === Signing by splicing (acl::sign_json_header) against decode + sign + encode ===

/// Ext keys: arbitrary text, often one of those signing treats specially.
fn ext_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => text(6),
        1 => prop::sample::select(
            &["AccessKey", "Signature", "SecurityToken", "_UNIQUE_KEY_QUERY", "n", "a"][..]
        )
        .prop_map(str::to_owned),
    ]
}

/// How a header's text is laid out: whitespace between tokens, every non-alphanumeric
/// character of every string as a `\u` escape (surrogate pairs for non-BMP ones), or
/// serde_json's minimal escaping; members in any order.
#[derive(Debug, Clone)]
struct Layout {
    ws: &'static str,
    escape_all: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::sample::select(&["", " ", "\n\t ", "\r\n"][..]),
        any::<bool>(),
    )
        .prop_map(|(ws, escape_all)| Layout { ws, escape_all })
}

fn render_str(s: &str, l: &Layout, out: &mut String) {
    if !l.escape_all {
        out.push_str(&serde_json::to_string(s).unwrap());
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04X}"));
            }
        }
    }
    out.push('"');
}

fn render_value(v: &Value, l: &Layout, out: &mut String) {
    match v {
        Value::String(s) => render_str(s, l, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(l.ws);
                    out.push(',');
                }
                out.push_str(l.ws);
                render_value(item, l, out);
            }
            out.push_str(l.ws);
            out.push(']');
        }
        Value::Object(m) => render_members(m.iter(), l, out),
        other => out.push_str(&other.to_string()),
    }
}

fn render_members<'a>(
    members: impl Iterator<Item = (&'a String, &'a Value)>,
    l: &Layout,
    out: &mut String,
) {
    out.push('{');
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push_str(l.ws);
            out.push(',');
        }
        out.push_str(l.ws);
        render_str(k, l, out);
        out.push_str(l.ws);
        out.push(':');
        out.push_str(l.ws);
        render_value(v, l, out);
    }
    out.push_str(l.ws);
    out.push('}');
}

/// A JSON header as a client might write it: `h`'s members in the order of `order`
/// (indexes into the member list), laid out as `l`, ext fields `ext` (absent when `None`).
fn render_header(
    h: &Header,
    ext: &Option<Map<String, Value>>,
    order: &[usize],
    l: &Layout,
) -> String {
    let mut members: Vec<(String, Value)> = vec![
        ("code".into(), Value::from(h.code)),
        ("language".into(), Value::from(h.language.clone())),
        ("version".into(), Value::from(h.version)),
        ("opaque".into(), Value::from(h.opaque)),
        ("flag".into(), Value::from(h.flag)),
    ];
    if let Some(r) = &h.remark {
        members.push(("remark".into(), Value::from(r.clone())));
    }
    if let Some(e) = ext {
        members.push(("extFields".into(), Value::Object(e.clone())));
    }
    members.extend(h.other.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut ordered: Vec<(String, Value)> = Vec::new();
    for &i in order {
        if i < members.len() {
            ordered.push(members[i].clone());
        }
    }
    for (i, m) in members.iter().enumerate() {
        if !order.contains(&i) {
            ordered.push(m.clone());
        }
    }
    let mut out = String::new();
    out.push_str(l.ws);
    render_members(ordered.iter().map(|(k, v)| (k, v)), l, &mut out);
    out.push_str(l.ws);
    out
}

proptest! {
    #![proptest_config(config(512))]

    /// For arbitrary ext maps, bodies, credentials and layouts, the splice path and the
    /// decoding path give headers that decode to the same header (ext fields and signature
    /// included), and the signature is what a server recomputes.
    #[test]
    fn splice_signing_matches_decode_sign_encode(
        h in json_header(),
        ext in prop::option::of(ext_map(ext_key(), text(10), 0)),
        order in Just((0..10).collect::<Vec<usize>>()).prop_shuffle(),
        l in layout(),
        body in prop::collection::vec(any::<u8>(), 0..48),
        access_key in text(6),
        token in prop::option::of(text(5)),
        excluded in any::<bool>(),
        version in prop_oneof![Just(399), Just(400), Just(409), any::<i32>()],
    ) {
        use rocketmq_sidecar::acl::{sign_json_header, sign_request, signature, Credentials, SecretKey, UniqueKeyRule};
        use rocketmq_sidecar::protocol::json_ext::ExtSplice;

        let h = Header { version, ..h };
        let text = render_header(&h, &ext, &order, &l);
        let bytes = text.as_bytes();
        let creds = Credentials {
            access_key,
            secret_key: SecretKey::new("12345678"),
            security_token: token,
        };
        let rule = if excluded { UniqueKeyRule::Excluded } else { UniqueKeyRule::ByRequestVersion };

        let mut old = Header::decode(SerializeType::Json, bytes).unwrap();
        sign_request(&mut old, &body, &creds, rule);
        let old = Header::decode(SerializeType::Json, &old.to_json()).unwrap();

        let spliced = sign_json_header(bytes, &body, &creds, rule);
        prop_assert!(spliced.is_some(), "the scanner refused {}", text);
        let spliced = spliced.unwrap();
        let new = Header::decode(SerializeType::Json, &spliced).unwrap();
        prop_assert_eq!(&new, &old);
        let expected = signature(new.ext_fields.as_ref().unwrap(), &body, &creds.secret_key, rule, new.version);
        prop_assert_eq!(new.ext("Signature"), Some(expected.as_str()));

        // Unedited, the splice gives back the bytes it read.
        prop_assert_eq!(ExtSplice::scan(bytes).unwrap().finish(), bytes.to_vec());
    }
}
