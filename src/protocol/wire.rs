//! The frame's fixed layout, what every other protocol module builds on:
//! `[total length: i32 BE][serialize type (8 bits) | header length (24 bits)][header][body]`,
//! where `total length` counts everything after itself (protocol notes §1.1).

use bytes::{Bytes, BytesMut};

/// Bytes of the two length words that start every frame.
pub const PREFIX_LEN: usize = 8;

/// How a header is serialised (the high byte of the second length word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerializeType {
    /// JSON text (what Java, Go and C++ send by default).
    Json,
    /// RocketMQ's compact binary header.
    RocketMq,
}

/// Builds a frame from a JSON header and a body.
pub fn encode_json_frame(header_json: &[u8], body: &[u8]) -> Bytes {
    encode_frame(SerializeType::Json, header_json, body)
}

/// Builds a frame from header bytes of the given form and a body.
pub fn encode_frame(serialize: SerializeType, header: &[u8], body: &[u8]) -> Bytes {
    let total = 4 + header.len() + body.len();
    let kind: u32 = match serialize {
        SerializeType::Json => 0,
        SerializeType::RocketMq => 1,
    };
    let mut out = BytesMut::with_capacity(4 + total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&((kind << 24) | (header.len() as u32 & 0x00FF_FFFF)).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out.freeze()
}
