//! Namespaces through one relay connection's rewriter: what the app sends without a
//! namespace reaches a namespaced cluster wrapped (header fields, properties, JSON bodies),
//! what the cluster sends back reaches the app unwrapped (pulled messages, lock answers,
//! broker requests); system topics, already-wrapped names and frames without names are
//! left as they are.
#![allow(clippy::unwrap_used)]

mod support;

use bytes::{Bytes, BytesMut};
use rocketmq_sidecar::protocol::messages::{encode_record, MAGIC_V1};
use rocketmq_sidecar::protocol::namespace::Namespace;
use rocketmq_sidecar::protocol::{FrameDecoder, Header, OutFrame, RawFrame};
use rocketmq_sidecar::proxy::rename::{FrameRewriter, Renamer};
use support::{as_response, request};
use tokio_util::codec::Decoder;

fn rewriter() -> FrameRewriter {
    FrameRewriter::new(
        Renamer::new("new~"),
        None,
        Some(Namespace::parse("rocketmq-abc|ns").unwrap()),
    )
}

fn frame(header: &Header, body: &[u8]) -> RawFrame {
    let bytes = header.encode_frame(body);
    let mut buf = BytesMut::from(&bytes[..]);
    FrameDecoder::new(1 << 24)
        .decode(&mut buf)
        .unwrap()
        .unwrap()
}

fn decode(out: OutFrame) -> (Header, Bytes) {
    let bytes = out.into_bytes();
    let mut buf = BytesMut::from(&bytes[..]);
    let f = FrameDecoder::new(1 << 24)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    (
        Header::decode(f.serialize_type(), f.header_bytes()).unwrap(),
        f.body(),
    )
}

#[test]
fn sends_are_wrapped_with_their_properties_and_system_topics_stay() {
    let rw = rewriter();
    let send = request(
        310,
        1,
        &[
            ("a", "orders-producer"),
            ("b", "Orders"),
            ("c", "TBW102"),
            (
                "i",
                "KEYS\u{1}k1\u{2}PGROUP\u{1}orders-producer\u{2}TRAN_MSG\u{1}true\u{2}",
            ),
            ("n", "new~broker-a"),
        ],
    );
    let (h, body) = decode(rw.client_to_broker(frame(&send, b"payload")).unwrap());
    assert_eq!(h.ext("a"), Some("rocketmq-abc|ns%orders-producer"));
    assert_eq!(h.ext("b"), Some("rocketmq-abc|ns%Orders"));
    assert_eq!(
        h.ext("c"),
        Some("TBW102"),
        "a system topic is never namespaced"
    );
    assert_eq!(
        h.ext("i"),
        Some(
            "KEYS\u{1}k1\u{2}PGROUP\u{1}rocketmq-abc|ns%orders-producer\u{2}TRAN_MSG\u{1}true\u{2}"
        )
    );
    assert_eq!(h.ext("n"), Some("broker-a"));
    assert_eq!(&body[..], b"payload");

    // Already in the namespace (an app that sets it itself): unchanged.
    let send = request(
        310,
        2,
        &[("a", "rocketmq-abc|ns%PG"), ("b", "rocketmq-abc|ns%Orders")],
    );
    let f = frame(&send, b"x");
    let original = f.bytes().clone();
    assert_eq!(rw.client_to_broker(f).unwrap().into_bytes(), original);
}

#[test]
fn heartbeats_pulls_and_offsets_name_the_namespaced_resources() {
    let rw = rewriter();
    let hb = br#"{"clientID":"10.0.0.7@1","consumerDataSet":[{"groupName":"orders-consumer","subscriptionDataSet":[{"topic":"Orders","subString":"*"},{"topic":"%RETRY%orders-consumer","subString":"*"}]}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"},{"groupName":"orders-producer"}]}"#;
    let (_, body) = decode(
        rw.client_to_broker(frame(&request(34, 3, &[]), hb))
            .unwrap(),
    );
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains(r#""groupName":"rocketmq-abc|ns%orders-consumer""#),
        "{body}"
    );
    assert!(
        body.contains(r#""topic":"rocketmq-abc|ns%Orders""#),
        "{body}"
    );
    assert!(
        body.contains(r#""topic":"%RETRY%rocketmq-abc|ns%orders-consumer""#),
        "{body}"
    );
    assert!(
        body.contains(r#""groupName":"rocketmq-abc|ns%orders-producer""#),
        "{body}"
    );
    assert!(
        body.contains(r#""groupName":"CLIENT_INNER_PRODUCER""#),
        "the client's inner producer group is never namespaced (the official client does not): {body}"
    );

    let pull = request(
        11,
        4,
        &[
            ("consumerGroup", "orders-consumer"),
            ("topic", "Orders"),
            ("queueId", "1"),
        ],
    );
    let (h, _) = decode(rw.client_to_broker(frame(&pull, b"")).unwrap());
    assert_eq!(
        h.ext("consumerGroup"),
        Some("rocketmq-abc|ns%orders-consumer")
    );
    assert_eq!(h.ext("topic"), Some("rocketmq-abc|ns%Orders"));
    assert_eq!(h.ext("queueId"), Some("1"));

    // The pull's answer: every record's topic and named properties unwrapped, bodies as they were.
    let ns_props = b"RETRY_TOPIC\x01rocketmq-abc|ns%Orders\x02KEYS\x01k\x02";
    let records = [
        encode_record(
            MAGIC_V1,
            "rocketmq-abc|ns%Orders",
            b"KEYS\x01k1\x02",
            b"one",
            1,
        ),
        encode_record(
            MAGIC_V1,
            "%RETRY%rocketmq-abc|ns%orders-consumer",
            ns_props,
            b"two",
            2,
        ),
    ]
    .concat();
    let answer = as_response(request(0, 4, &[("nextBeginOffset", "3")]));
    let (h, body) = decode(rw.broker_to_client(frame(&answer, &records)).unwrap());
    assert_eq!(h.ext("nextBeginOffset"), Some("3"));
    let expect = [
        encode_record(MAGIC_V1, "Orders", b"KEYS\x01k1\x02", b"one", 1),
        encode_record(
            MAGIC_V1,
            "%RETRY%orders-consumer",
            b"RETRY_TOPIC\x01Orders\x02KEYS\x01k\x02",
            b"two",
            2,
        ),
    ]
    .concat();
    assert_eq!(&body[..], &expect[..]);

    // A message sent back for a retry names the group and the original topic.
    let back = request(
        36,
        5,
        &[
            ("group", "orders-consumer"),
            ("originTopic", "Orders"),
            ("offset", "9"),
        ],
    );
    let (h, _) = decode(rw.client_to_broker(frame(&back, b"")).unwrap());
    assert_eq!(h.ext("group"), Some("rocketmq-abc|ns%orders-consumer"));
    assert_eq!(h.ext("originTopic"), Some("rocketmq-abc|ns%Orders"));
}

#[test]
fn locks_and_broker_requests_round_trip() {
    let rw = rewriter();
    let lock = br#"{"clientId":"c","consumerGroup":"orders-consumer","mqSet":[{"brokerName":"new~broker-a","queueId":0,"topic":"Orders"}]}"#;
    let (_, body) = decode(
        rw.client_to_broker(frame(&request(41, 6, &[]), lock))
            .unwrap(),
    );
    assert_eq!(
        &body[..],
        br#"{"clientId":"c","consumerGroup":"rocketmq-abc|ns%orders-consumer","mqSet":[{"brokerName":"broker-a","queueId":0,"topic":"rocketmq-abc|ns%Orders"}]}"#
    );
    let answer = br#"{"lockOKMQSet":[{"brokerName":"broker-a","queueId":0,"topic":"rocketmq-abc|ns%Orders"}]}"#;
    let (_, body) = decode(
        rw.broker_to_client(frame(&as_response(request(0, 6, &[])), answer))
            .unwrap(),
    );
    assert_eq!(
        &body[..],
        br#"{"lockOKMQSet":[{"brokerName":"new~broker-a","queueId":0,"topic":"Orders"}]}"#
    );

    // A transaction check: its message's topic and producer group reach the app unwrapped.
    let msg = encode_record(
        MAGIC_V1,
        "rocketmq-abc|ns%Orders",
        b"PGROUP\x01rocketmq-abc|ns%tx-producer\x02TRAN_MSG\x01true\x02",
        b"half",
        4,
    );
    let check = request(
        39,
        7,
        &[
            ("topic", "rocketmq-abc|ns%Orders"),
            ("tranStateTableOffset", "4"),
        ],
    );
    let (h, body) = decode(rw.broker_to_client(frame(&check, &msg)).unwrap());
    assert_eq!(h.ext("topic"), Some("Orders"));
    assert_eq!(
        &body[..],
        &encode_record(
            MAGIC_V1,
            "Orders",
            b"PGROUP\x01tx-producer\x02TRAN_MSG\x01true\x02",
            b"half",
            4
        )[..]
    );
    // A rebalance notice names the group as the app knows it.
    let notice = request(
        40,
        8,
        &[("consumerGroup", "rocketmq-abc|ns%orders-consumer")],
    );
    let (h, _) = decode(rw.broker_to_client(frame(&notice, b"")).unwrap());
    assert_eq!(h.ext("consumerGroup"), Some("orders-consumer"));

    // A frame that names nothing goes as its bytes.
    let f = frame(&request(46_001, 9, &[("x", "y")]), b"z");
    let original = f.bytes().clone();
    assert_eq!(rw.client_to_broker(f).unwrap().into_bytes(), original);
}

#[test]
fn requests_the_sidecar_sends_for_the_app_are_wrapped_too() {
    use rocketmq_sidecar::protocol::namespace::wrap_request_header;
    let ns = Namespace::parse("rocketmq-abc|ns").unwrap();
    // UNREGISTER_CLIENT when a role leaves the cluster; a member list redirected there.
    let mut unregister = request(
        35,
        1,
        &[
            ("clientID", "10.0.0.7@1"),
            ("consumerGroup", "orders-consumer"),
        ],
    );
    assert!(wrap_request_header(&ns, &mut unregister));
    assert_eq!(
        unregister.ext("consumerGroup"),
        Some("rocketmq-abc|ns%orders-consumer")
    );
    assert_eq!(unregister.ext("clientID"), Some("10.0.0.7@1"));
    let mut members = request(
        38,
        2,
        &[("consumerGroup", "rocketmq-abc|ns%orders-consumer")],
    );
    assert!(
        !wrap_request_header(&ns, &mut members),
        "already namespaced"
    );
}

#[test]
fn a_signed_connection_signs_the_namespaced_request() {
    use rocketmq_sidecar::acl::credentials::{CredentialSources, CredentialStore, Source};
    use rocketmq_sidecar::acl::{signature, SecretKey, UniqueKeyRule};
    use rocketmq_sidecar::config::UniqueKeyRuleSetting;
    use rocketmq_sidecar::metrics::Metrics;
    use rocketmq_sidecar::proxy::signing::Signer;
    use rocketmq_sidecar::Target;
    use std::sync::Arc;

    let store = CredentialStore::new(CredentialSources {
        access_key: Some(Source::Value("ak-ns".into())),
        secret_key: Some(Source::Value("sk-ns-secret".into())),
        security_token: None,
    })
    .unwrap();
    let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
    let signer = Arc::new(Signer::new(
        Target::New,
        store,
        UniqueKeyRuleSetting::V4,
        metrics,
    ));
    let rw = FrameRewriter::new(
        Renamer::new("new~"),
        Some(signer),
        Some(Namespace::parse("rocketmq-abc|ns").unwrap()),
    );
    let pull = request(
        11,
        1,
        &[("consumerGroup", "orders-consumer"), ("topic", "Orders")],
    );
    let (h, body) = decode(rw.client_to_broker(frame(&pull, b"")).unwrap());
    assert_eq!(h.ext("topic"), Some("rocketmq-abc|ns%Orders"));
    let ext = h.ext_fields.clone().unwrap();
    let expected = signature(
        &ext,
        &body,
        &SecretKey::new("sk-ns-secret".to_owned()),
        UniqueKeyRule::Excluded,
        h.version,
    );
    assert_eq!(h.ext("AccessKey"), Some("ak-ns"));
    assert_eq!(
        h.ext("Signature"),
        Some(expected.as_str()),
        "the signature covers the namespaced names"
    );
}
