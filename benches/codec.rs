//! Codec and rewrite cost: decoding frames of several sizes (the relay's per-frame work),
//! full header decode + JSON re-encode (the rewrite path), signing by decoding against
//! signing by splicing, and route rewriting by broker count. Run: `cargo bench --bench codec`.
#![allow(clippy::unwrap_used)]

mod support;

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use rocketmq_sidecar::acl::{
    sign_json_header, sign_request, Credentials, SecretKey, UniqueKeyRule,
};
use rocketmq_sidecar::protocol::frame::encode_json_frame;
use rocketmq_sidecar::protocol::messages::{encode_record, MAGIC_V1};
use rocketmq_sidecar::protocol::namespace::Namespace;
use rocketmq_sidecar::protocol::route::{self, RouteMapper};
use rocketmq_sidecar::protocol::{FrameDecoder, Header, OutFrame, SerializeType};
use rocketmq_sidecar::proxy::rename::{FrameRewriter, Renamer};
use tokio_util::codec::Decoder;

const SEND_HEADER: &str = r#"{"code":310,"extFields":{"a":"PG","b":"TopicTest","c":"TBW102","d":"4","e":"1","f":"0","g":"1700000000000","h":"0","i":"UNIQ_KEY\u0001AC1100010000000000000000\u0002WAIT\u0001true\u0002KEYS\u0001k-1\u0002","j":"0","k":"false","m":"false","n":"broker-a"},"flag":0,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":409}"#;

struct Mapper;
impl RouteMapper for Mapper {
    fn local_addr(&self, upstream: &str) -> Option<String> {
        Some(format!("127.1.0.1:{}", &upstream[upstream.len() - 5..]))
    }
    fn client_name(&self, name: &str) -> String {
        format!("new~{name}")
    }
}

fn route_body(brokers: usize) -> String {
    let bd: Vec<String> = (0..brokers)
        .map(|i| format!("{{\"brokerAddrs\":{{0:\"10.0.{i}.1:10911\",1:\"10.0.{i}.2:10911\"}},\"brokerName\":\"broker-{i}\",\"cluster\":\"C\"}}"))
        .collect();
    let qd: Vec<String> = (0..brokers)
        .map(|i| format!("{{\"brokerName\":\"broker-{i}\",\"perm\":6,\"readQueueNums\":8,\"topicSysFlag\":0,\"writeQueueNums\":8}}"))
        .collect();
    format!(
        "{{\"brokerDatas\":[{}],\"filterServerTable\":{{}},\"queueDatas\":[{}]}}",
        bd.join(","),
        qd.join(",")
    )
}

fn main() {
    let budget = Duration::from_millis(700);
    for size in [256usize, 4096, 65536, 1 << 20] {
        let frame = encode_json_frame(SEND_HEADER.as_bytes(), &vec![7u8; size]);
        let mut dec = FrameDecoder::default();
        let s = support::bench(
            &format!("copy in + decode + classify, body {size} B"),
            budget,
            || {
                let mut buf = BytesMut::from(&frame[..]);
                black_box(dec.decode(&mut buf).unwrap());
            },
        );
        println!(
            "{:<48} {:>10.0} MB/s",
            "",
            (frame.len() as f64) / s.median_ns * 1e3
        );
    }
    let frame = encode_json_frame(SEND_HEADER.as_bytes(), b"hello");
    let raw = FrameDecoder::default()
        .decode(&mut BytesMut::from(&frame[..]))
        .unwrap()
        .unwrap();
    support::bench(
        "header decode + JSON re-encode (send, 14 ext)",
        budget,
        || {
            let mut h = Header::decode(raw.serialize_type(), raw.header_bytes()).unwrap();
            h.set_ext("n", "broker-a");
            black_box(h.encode_frame(&raw.body()));
        },
    );
    // Signing a send (14 ext fields, 64 KiB body): decoding path (decode, sign, re-encode
    // the whole frame, body copied) against the splice path (one scan, the header spliced,
    // only the head built; the body is written after it as it came).
    let creds = Credentials {
        access_key: "RocketMQ".to_owned(),
        secret_key: SecretKey::new("12345678"),
        security_token: None,
    };
    let big = encode_json_frame(SEND_HEADER.as_bytes(), &vec![7u8; 65536]);
    let big = FrameDecoder::default()
        .decode(&mut BytesMut::from(&big[..]))
        .unwrap()
        .unwrap();
    support::bench(
        "sign send (64 KiB body): decode + sign + encode",
        budget,
        || {
            let mut h = Header::decode(big.serialize_type(), big.header_bytes()).unwrap();
            sign_request(&mut h, &big.body(), &creds, UniqueKeyRule::ByRequestVersion);
            black_box(h.encode_frame(&big.body()));
        },
    );
    support::bench("sign send (64 KiB body): scan + splice", budget, || {
        let header = sign_json_header(
            big.header_bytes(),
            &big.body(),
            &creds,
            UniqueKeyRule::ByRequestVersion,
        )
        .unwrap();
        black_box(OutFrame::with_header(
            SerializeType::Json,
            &header,
            big.body(),
        ));
    });
    // A renaming connection without credentials (the new cluster, prefix new~): a send
    // that names no prefixed broker. Before, every such frame's header was decoded (then
    // forwarded unchanged); now its bytes are scanned and it goes as it came.
    let rewriter = FrameRewriter::new(Renamer::new("new~"), None, None);
    support::bench(
        "renaming connection, send naming no new~ broker",
        budget,
        || {
            black_box(rewriter.client_to_broker(raw.clone()).unwrap());
        },
    );
    support::bench(
        "  (before: its header decoded on every frame)",
        budget,
        || {
            black_box(Header::decode(raw.serialize_type(), raw.header_bytes()).unwrap());
        },
    );
    // A pull answer of 32 stored messages of 1 KiB: per message, what a namespace costs
    // (every record's topic unwrapped, in one pass) against a connection without one
    // (the answer goes as its bytes).
    let ns = Namespace::parse("rocketmq-abc|ns1").unwrap();
    let records: Vec<u8> = (0..32)
        .flat_map(|i| {
            encode_record(
                MAGIC_V1,
                "rocketmq-abc|ns1%TopicTest",
                b"UNIQ_KEY\x01AC110001\x02KEYS\x01k\x02",
                &[b'x'; 1024],
                i,
            )
        })
        .collect();
    let pull = encode_json_frame(
        br#"{"code":11,"extFields":{"consumerGroup":"G","topic":"TopicTest","queueId":"0"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":409}"#,
        b"",
    );
    let answer = encode_json_frame(
        br#"{"code":0,"extFields":{"nextBeginOffset":"32"},"flag":1,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":409}"#,
        &records,
    );
    let frame_of = |bytes: &bytes::Bytes| {
        let mut buf = BytesMut::from(&bytes[..]);
        FrameDecoder::new(1 << 24)
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    };
    for (label, rewriter) in [
        (
            "pull answer, 32 x 1 KiB, no namespace (per answer; /32 per message)",
            FrameRewriter::new(Renamer::new("new~"), None, None),
        ),
        (
            "pull answer, 32 x 1 KiB, namespaced (per answer; /32 per message)",
            FrameRewriter::new(Renamer::new("new~"), None, Some(ns.clone())),
        ),
    ] {
        support::bench(label, budget, || {
            black_box(rewriter.client_to_broker(frame_of(&pull)).unwrap());
            black_box(rewriter.broker_to_client(frame_of(&answer)).unwrap());
        });
    }
    for brokers in [1usize, 8, 64] {
        let body = route_body(brokers);
        support::bench(
            &format!("route parse+rewrite+encode, {brokers} brokers"),
            budget,
            || {
                let mut v = route::parse_lenient(body.as_bytes()).unwrap();
                route::rewrite_topic_route(&mut v, &Mapper).unwrap();
                black_box(route::to_compact_json(&v));
            },
        );
    }
}
