//! What the fuzz targets share: the header round-trip checks, a reversible route mapper and
//! a JSON comparison that tolerates serde_json's last-digit float drift.
//!
//! Every check panics with a message on failure: a panic is what libFuzzer reports.

use bytes::BytesMut;
use rocketmq_sidecar::protocol::code::language_name;
use rocketmq_sidecar::protocol::header::peek_summary;
use rocketmq_sidecar::protocol::route::RouteMapper;
use rocketmq_sidecar::protocol::{encode_frame, FrameDecoder, Header, SerializeType};
use serde_json::Value;
use tokio_util::codec::Decoder;

/// Prefix [`Forward`] puts on broker names (the sidecar's default for the new cluster).
pub const NAME_PREFIX: &str = "new~";
/// Prefix [`Forward`] puts on broker addresses.
pub const ADDR_PREFIX: &str = "local/";

/// Upstream to client: every name gets [`NAME_PREFIX`], every string with a `:` (an
/// address) gets [`ADDR_PREFIX`]. Injective, so [`Backward`] undoes it exactly.
pub struct Forward;

/// Client to upstream: the inverse of [`Forward`] on everything [`Forward`] produces.
pub struct Backward;

impl RouteMapper for Forward {
    fn local_addr(&self, upstream: &str) -> Option<String> {
        upstream
            .contains(':')
            .then(|| format!("{ADDR_PREFIX}{upstream}"))
    }

    fn client_name(&self, name: &str) -> String {
        format!("{NAME_PREFIX}{name}")
    }
}

impl RouteMapper for Backward {
    fn local_addr(&self, local: &str) -> Option<String> {
        local
            .strip_prefix(ADDR_PREFIX)
            .filter(|rest| rest.contains(':'))
            .map(str::to_owned)
    }

    fn client_name(&self, name: &str) -> String {
        name.strip_prefix(NAME_PREFIX).unwrap_or(name).to_owned()
    }
}

/// JSON equality where two floats are equal when they are within a few ULPs: without
/// serde_json's `float_roundtrip` feature, parsing the shortest text of an f64 may land
/// one ULP away. Everything else must be identical, map order included.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs(),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && json_eq(va, vb))
        }
        _ => a == b,
    }
}

/// Header equality where the ext map and the unknown fields must also be in the same
/// order (`Header`'s own `==` ignores map order), floats compared by [`json_eq`].
pub fn header_eq(a: &Header, b: &Header) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    let maps = |h: &mut Header| {
        let ext = h.ext_fields.take().map(Value::Object);
        (ext, Value::Object(std::mem::take(&mut h.other)))
    };
    let ((a_ext, a_other), (b_ext, b_other)) = (maps(&mut a), maps(&mut b));
    let ext_eq = match (&a_ext, &b_ext) {
        (Some(x), Some(y)) => json_eq(x, y),
        (x, y) => x == y,
    };
    a == b && ext_eq && json_eq(&a_other, &b_other)
}

/// True when the ROCKETMQ binary form can carry `h` unchanged (protocol notes §1.2):
/// 16-bit code and version, a known language, no empty remark or empty ext map (both
/// decode as absent), string ext values, keys that fit an i16 length, no unknown fields.
pub fn binary_can_carry(h: &Header) -> bool {
    i16::try_from(h.code).is_ok()
        && i16::try_from(h.version).is_ok()
        && (0u8..=13).any(|b| language_name(b) == h.language)
        && h.remark.as_ref().is_none_or(|r| !r.is_empty())
        && h.ext_fields.as_ref().is_none_or(|ext| {
            !ext.is_empty()
                && ext
                    .iter()
                    .all(|(k, v)| i16::try_from(k.len()).is_ok() && v.is_string())
        })
        && h.other.is_empty()
}

/// The relay's quick look (`peek_summary`) and the full decode agree whenever both read
/// the header.
pub fn check_summary(serialize: SerializeType, bytes: &[u8], h: &Header) {
    if let Ok(s) = peek_summary(serialize, bytes) {
        assert_eq!(
            (s.code, s.flag, s.opaque, s.version),
            (h.code, h.flag, h.opaque, h.version),
            "peek_summary disagrees with Header::decode"
        );
    }
}

/// Decodes one whole frame with the production decoder; panics unless it is exactly one.
fn decode_whole_frame(frame: &[u8]) -> rocketmq_sidecar::protocol::RawFrame {
    let mut buf = BytesMut::from(frame);
    match FrameDecoder::default().decode(&mut buf) {
        Ok(Some(f)) => {
            assert!(buf.is_empty(), "an encoded frame left {} bytes", buf.len());
            f
        }
        other => panic!("an encoded frame did not decode: {other:?}"),
    }
}

/// Every way the crate writes `h` reads back as `h`: `to_json`, `encode_frame` through the
/// frame decoder, and `to_binary` (alone and in a frame) when the binary form can carry it.
pub fn check_round_trips(h: &Header) {
    let json = h.to_json();
    match Header::decode(SerializeType::Json, &json) {
        Ok(back) => assert!(
            header_eq(&back, h),
            "JSON round trip changed the header:\n  {h:?}\n  {back:?}"
        ),
        Err(e) => panic!("to_json output does not decode: {e}"),
    }

    let body = b"\x00body\xff";
    let frame = decode_whole_frame(&h.encode_frame(body));
    assert_eq!(frame.serialize_type(), SerializeType::Json);
    assert_eq!(frame.header_bytes(), &json[..]);
    assert_eq!(&frame.body()[..], body);
    assert_eq!(
        (frame.code(), frame.opaque(), frame.version()),
        (h.code, h.opaque, h.version)
    );
    assert_eq!(frame.is_response(), h.is_response());
    assert_eq!(frame.is_oneway(), h.is_oneway());

    if binary_can_carry(h) {
        let bin = h.to_binary();
        match Header::decode(SerializeType::RocketMq, &bin) {
            Ok(back) => assert!(
                header_eq(&back, h),
                "binary round trip changed the header:\n  {h:?}\n  {back:?}"
            ),
            Err(e) => panic!("to_binary output does not decode: {e}"),
        }
        let frame = decode_whole_frame(&encode_frame(SerializeType::RocketMq, &bin, body));
        assert_eq!(frame.header_bytes(), &bin[..]);
        assert_eq!((frame.code(), frame.opaque()), (h.code, h.opaque));
    }
}
