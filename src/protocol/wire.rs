//! The frame's fixed layout, what every other protocol module builds on:
//! `[total length: i32 BE][serialize type (8 bits) | header length (24 bits)][header][body]`,
//! where `total length` counts everything after itself (protocol notes §1.1).

use bytes::{Buf, Bytes, BytesMut};

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
    let mut out = BytesMut::with_capacity(PREFIX_LEN + header.len() + body.len());
    put_head(&mut out, serialize, header, body.len());
    out.extend_from_slice(body);
    out.freeze()
}

/// The start of a frame whose body (`body_len` bytes) is written after it: both length
/// words and the header.
pub fn encode_head(serialize: SerializeType, header: &[u8], body_len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX_LEN + header.len());
    put_head(&mut out, serialize, header, body_len);
    out.freeze()
}

fn put_head(out: &mut BytesMut, serialize: SerializeType, header: &[u8], body_len: usize) {
    let total = 4 + header.len() + body_len;
    let kind: u32 = match serialize {
        SerializeType::Json => 0,
        SerializeType::RocketMq => 1,
    };
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&((kind << 24) | (header.len() as u32 & 0x00FF_FFFF)).to_be_bytes());
    out.extend_from_slice(header);
}

/// A frame on its way out. A frame whose header changed is a new head (length words and
/// header) followed by the body it arrived with, a slice of the read buffer: the relay
/// writes both with one vectored write and the body is never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// The whole frame in one buffer (as it arrived, or built whole).
    Whole(Bytes),
    /// Length words and header, then the body.
    Split {
        /// Both length words and the header ([`encode_head`]).
        head: Bytes,
        /// The body, unchanged.
        body: Bytes,
    },
}

// === impl OutFrame ===

impl OutFrame {
    /// A frame of `header` (of form `serialize`) and `body`, the body not copied.
    pub fn with_header(serialize: SerializeType, header: &[u8], body: Bytes) -> Self {
        Self::Split {
            head: encode_head(serialize, header, body.len()),
            body,
        }
    }

    /// Total size on the wire.
    pub fn len(&self) -> usize {
        match self {
            Self::Whole(b) => b.len(),
            Self::Split { head, body } => head.len() + body.len(),
        }
    }

    /// True when there is nothing to write (never for a real frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer; a split frame is copied into one (tests and tools; the
    /// relay writes [`OutFrame::into_buf`]).
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Whole(b) => b,
            Self::Split { head, body } => {
                let mut out = BytesMut::with_capacity(head.len() + body.len());
                out.extend_from_slice(&head);
                out.extend_from_slice(&body);
                out.freeze()
            }
        }
    }

    /// The frame as a [`Buf`] of one or two chunks, for a vectored write.
    pub fn into_buf(self) -> bytes::buf::Chain<Bytes, Bytes> {
        match self {
            Self::Whole(b) => b.chain(Bytes::new()),
            Self::Split { head, body } => head.chain(body),
        }
    }

    /// Appends the frame to `out` (for batching small frames into one write).
    pub fn copy_into(&self, out: &mut BytesMut) {
        match self {
            Self::Whole(b) => out.extend_from_slice(b),
            Self::Split { head, body } => {
                out.extend_from_slice(head);
                out.extend_from_slice(body);
            }
        }
    }
}

impl From<Bytes> for OutFrame {
    fn from(b: Bytes) -> Self {
        Self::Whole(b)
    }
}
