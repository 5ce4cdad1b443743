//! Frame and header codec: both header forms, round trips, every prefix of a frame, and
//! one named test per rejection path.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use rocketmq_sidecar::protocol::frame::encode_json_frame;
use rocketmq_sidecar::protocol::{encode_frame, FrameDecoder, FrameError, Header, SerializeType};
use tokio_util::codec::Decoder;

/// The Java 5.3.3 route request from the protocol notes (§1.1 worked example).
const JAVA_ROUTE_REQUEST: &str = r#"{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA","opaque":3,"serializeTypeCurrentRPC":"JSON","version":479}"#;

fn decode_one(
    bytes: &[u8],
    max: usize,
) -> Result<Option<rocketmq_sidecar::protocol::RawFrame>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    FrameDecoder::new(max).decode(&mut buf)
}

#[test]
fn java_json_request_matches_the_worked_example() {
    let frame = encode_json_frame(JAVA_ROUTE_REQUEST.as_bytes(), b"");
    assert_eq!(JAVA_ROUTE_REQUEST.len(), 131);
    assert_eq!(&frame[..8], &[0, 0, 0, 0x87, 0, 0, 0, 0x83]);
    let f = decode_one(&frame, 1 << 24).unwrap().unwrap();
    assert_eq!((f.code(), f.opaque(), f.is_response()), (105, 3, false));
    let h = Header::decode(f.serialize_type(), f.header_bytes()).unwrap();
    assert_eq!(h.ext("topic"), Some("TopicTest"));
    assert_eq!(h.version, 479);
    assert_eq!(
        h.other
            .get("serializeTypeCurrentRPC")
            .and_then(|v| v.as_str()),
        Some("JSON")
    );
    // Re-encoding keeps every field, in Java's (alphabetical) order.
    assert_eq!(String::from_utf8(h.to_json()).unwrap(), JAVA_ROUTE_REQUEST);
}

#[test]
fn binary_header_matches_the_worked_example_and_round_trips() {
    let mut h = Header::request(105, 3);
    h.version = 479;
    h.set_ext("topic", "TopicTest");
    let bin = h.to_binary();
    assert_eq!(bin.len(), 41);
    let frame = encode_frame(SerializeType::RocketMq, &bin, b"");
    assert_eq!(&frame[..8], &[0, 0, 0, 0x2d, 1, 0, 0, 0x29]);
    let f = decode_one(&frame, 1 << 24).unwrap().unwrap();
    assert_eq!(f.serialize_type(), SerializeType::RocketMq);
    let back = Header::decode(SerializeType::RocketMq, f.header_bytes()).unwrap();
    assert_eq!(back, h);
}

#[test]
fn binary_duplicate_keys_collapse_to_the_last_value() {
    let mut bin = Vec::new();
    bin.extend_from_slice(&310i16.to_be_bytes());
    bin.push(0);
    bin.extend_from_slice(&479i16.to_be_bytes());
    bin.extend_from_slice(&1i32.to_be_bytes());
    bin.extend_from_slice(&0i32.to_be_bytes());
    bin.extend_from_slice(&0i32.to_be_bytes()); // no remark
    let mut ext = Vec::new();
    for (k, v) in [("b", "first"), ("a", "PG"), ("b", "last")] {
        ext.extend_from_slice(&(k.len() as i16).to_be_bytes());
        ext.extend_from_slice(k.as_bytes());
        ext.extend_from_slice(&(v.len() as i32).to_be_bytes());
        ext.extend_from_slice(v.as_bytes());
    }
    bin.extend_from_slice(&(ext.len() as i32).to_be_bytes());
    bin.extend_from_slice(&ext);
    let h = Header::decode(SerializeType::RocketMq, &bin).unwrap();
    assert_eq!(h.ext("b"), Some("last"));
    assert_eq!(h.ext_fields.as_ref().unwrap().len(), 2);
}

#[test]
fn json_ext_numbers_and_booleans_become_java_strings() {
    let text = r#"{"code":310,"language":"CPP","version":333,"opaque":1,"flag":0,"extFields":{"e":3,"f":0,"k":false,"g":1700000000000,"AccessKey":"","n":null}}"#;
    let h = Header::decode(SerializeType::Json, text.as_bytes()).unwrap();
    assert_eq!(h.ext("e"), Some("3"));
    assert_eq!(h.ext("k"), Some("false"));
    assert_eq!(h.ext("g"), Some("1700000000000"));
    assert_eq!(h.ext("AccessKey"), Some(""));
    assert_eq!(h.ext("n"), None, "nulls are dropped");
}

#[test]
fn json_duplicate_keys_last_one_wins() {
    let text = r#"{"code":34,"opaque":1,"extFields":{"x":"1","x":"2"}}"#;
    let h = Header::decode(SerializeType::Json, text.as_bytes()).unwrap();
    assert_eq!(h.ext("x"), Some("2"));
}

#[test]
fn every_prefix_of_a_frame_is_incomplete_and_the_whole_decodes() {
    let frame = encode_json_frame(JAVA_ROUTE_REQUEST.as_bytes(), b"body-bytes");
    for n in 0..frame.len() {
        assert!(
            decode_one(&frame[..n], 1 << 24).unwrap().is_none(),
            "prefix {n}"
        );
    }
    let mut two = BytesMut::from(&frame[..]);
    two.extend_from_slice(&frame);
    let mut dec = FrameDecoder::default();
    let a = dec.decode(&mut two).unwrap().unwrap();
    let b = dec.decode(&mut two).unwrap().unwrap();
    assert_eq!(&a.body()[..], b"body-bytes");
    assert_eq!(a.bytes(), b.bytes());
    assert!(two.is_empty());
}

#[test]
fn rejects_frame_over_the_limit_before_buffering() {
    // Only the 8-byte prefix is present: the limit is checked on the declared length.
    let err = decode_one(&[0x01, 0, 0, 0, 0, 0, 0, 2], 16 * 1024 * 1024).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                len: 16_777_220,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn accepts_frame_exactly_at_the_limit() {
    let frame = encode_json_frame(br#"{"code":1}"#, &[0u8; 100]);
    assert!(decode_one(&frame, frame.len()).unwrap().is_some());
    assert!(decode_one(&frame, frame.len() - 1).is_err());
}

#[test]
fn rejects_total_length_below_four() {
    let err = decode_one(&[0, 0, 0, 3, 0, 0, 0, 0], 1 << 24).unwrap_err();
    assert!(matches!(err, FrameError::TooShort(3)));
}

#[test]
fn rejects_negative_total_length() {
    let err = decode_one(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], 1 << 24).unwrap_err();
    assert!(matches!(err, FrameError::TooShort(-1)));
}

#[test]
fn rejects_header_longer_than_frame() {
    let err = decode_one(&[0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 0], 1 << 24).unwrap_err();
    assert!(matches!(
        err,
        FrameError::HeaderOverflow {
            header_len: 5,
            available: 4
        }
    ));
}

#[test]
fn rejects_unknown_serialize_type() {
    let err = decode_one(&[0, 0, 0, 4, 2, 0, 0, 0], 1 << 24).unwrap_err();
    assert!(matches!(err, FrameError::UnknownSerializeType(2)));
}

#[test]
fn rejects_json_header_that_is_not_json() {
    let frame = encode_json_frame(b"{not json", b"");
    assert!(matches!(
        decode_one(&frame, 1 << 24).unwrap_err(),
        FrameError::Header(_)
    ));
}

#[test]
fn rejects_json_header_without_code() {
    let frame = encode_json_frame(br#"{"opaque":1}"#, b"");
    assert!(matches!(
        decode_one(&frame, 1 << 24).unwrap_err(),
        FrameError::Header(_)
    ));
}

#[test]
fn rejects_truncated_binary_header() {
    let frame = encode_frame(SerializeType::RocketMq, &[0, 105, 0], b"");
    assert!(matches!(
        decode_one(&frame, 1 << 24).unwrap_err(),
        FrameError::Header(_)
    ));
    let mut h = Header::request(105, 1);
    h.set_ext("topic", "T");
    let mut bin = h.to_binary();
    bin.truncate(bin.len() - 1); // last ext value cut short
    assert!(Header::decode(SerializeType::RocketMq, &bin).is_err());
}

#[test]
fn rejects_binary_header_with_invalid_utf8() {
    let mut h = Header::request(105, 1);
    h.remark = Some("ab".into());
    let mut bin = h.to_binary();
    let at = 21; // first remark byte, after the 21-byte fixed part
    bin[at] = 0xff;
    assert!(Header::decode(SerializeType::RocketMq, &bin).is_err());
}

#[test]
fn codes_above_i16_survive_in_json() {
    let h = Header::request(200_050, 9);
    let back = Header::decode(SerializeType::Json, &h.to_json()).unwrap();
    assert_eq!(back.code, 200_050);
}

#[test]
fn an_announced_frame_is_not_reserved_beyond_what_arrives() {
    use bytes::{BufMut, BytesMut};
    use rocketmq_sidecar::protocol::frame::RESERVE_AHEAD;
    use rocketmq_sidecar::protocol::FrameDecoder;
    use tokio_util::codec::Decoder;
    // A frame that announces 16 MiB - 4 and sends 100 bytes of it.
    let mut buf = BytesMut::new();
    buf.put_i32((16 << 20) - 8);
    buf.put_i32(16);
    buf.extend_from_slice(&[b'{'; 92]);
    let mut decoder = FrameDecoder::new(16 << 20);
    assert!(decoder.decode(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() <= 100 + RESERVE_AHEAD + 64,
        "{} bytes reserved for 100 received",
        buf.capacity()
    );
}

#[test]
fn unknown_json_fields_keep_their_order_fuzz_header_json() {
    // fuzz/header_json found this: the known fields were taken out with `Map::remove`,
    // which (serde_json's preserve_order) swaps the last field into the hole, so two
    // unknown fields came back reversed and `to_json` wrote them out of order.
    let found = br#"{"code":0,"flag":1,"language":"JAVA","o":3,"serializeTypeCurrentRPC":"JSON","version":479}"#;
    let h = Header::decode(SerializeType::Json, found).unwrap();
    let keys: Vec<&String> = h.other.keys().collect();
    assert_eq!(keys, ["o", "serializeTypeCurrentRPC"]);
    let back = Header::decode(SerializeType::Json, &h.to_json()).unwrap();
    assert!(back.other.iter().eq(h.other.iter()), "{:?}", back.other);

    // A Java header (alphabetical) with a field this sidecar does not know is re-encoded
    // byte for byte.
    let java = r#"{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA","opaque":3,"serializeTypeCurrentRPC":"JSON","traceOn":"true","version":479}"#;
    let h = Header::decode(SerializeType::Json, java.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(h.to_json()).unwrap(), java);
}

#[test]
fn binary_duplicate_keys_keep_the_order_of_arrival() {
    // Same defect in the binary decoder: the last duplicate wins, and the other keys keep
    // the order they arrived in.
    let mut bin = Header::request(310, 1).to_binary();
    bin.truncate(bin.len() - 4); // drop the empty ext map's length word
    let mut ext = Vec::new();
    for (k, v) in [("b", "first"), ("a", "PG"), ("c", "x"), ("b", "last")] {
        ext.extend_from_slice(&(k.len() as i16).to_be_bytes());
        ext.extend_from_slice(k.as_bytes());
        ext.extend_from_slice(&(v.len() as i32).to_be_bytes());
        ext.extend_from_slice(v.as_bytes());
    }
    bin.extend_from_slice(&(ext.len() as i32).to_be_bytes());
    bin.extend_from_slice(&ext);
    let back = Header::decode(SerializeType::RocketMq, &bin).unwrap();
    let keys: Vec<&String> = back.ext_fields.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["a", "c", "b"]);
    assert_eq!(back.ext("b"), Some("last"));
}

#[test]
fn an_ext_integer_is_found_without_decoding_the_header() {
    use rocketmq_sidecar::protocol::header::json_ext_int;
    let java = br#"{"code":310,"extFields":{"a":"PG","b":"T","f":"4","i":"KEYS\u0001\"f\":\"9\u0002"},"flag":0,"language":"JAVA","opaque":1,"version":479}"#;
    assert_eq!(json_ext_int(java, "f"), Some(4));
    // C++ writes numbers unquoted.
    assert_eq!(
        json_ext_int(br#"{"extFields":{"f":12,"a":"PG"}}"#, "f"),
        Some(12)
    );
    assert_eq!(
        json_ext_int(br#"{"extFields":{"sysFlag":"0"}}"#, "sysFlag"),
        Some(0)
    );
    assert_eq!(json_ext_int(java, "sysFlag"), None);
    assert_eq!(json_ext_int(br#"{"extFields":{"f":"x"}}"#, "f"), None);
    // A quoted key inside a value is escaped, so it is never taken for the field.
    assert_eq!(
        json_ext_int(br#"{"extFields":{"i":"\"f\":\"4\""}}"#, "f"),
        None
    );
}
