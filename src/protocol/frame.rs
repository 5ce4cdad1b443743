//! Framing: `[total length: i32 BE][serialize type (8 bits) | header length (24 bits)][header][body]`.
//!
//! `total length` counts everything after itself. The relay keeps each frame as the exact
//! bytes it arrived as ([`RawFrame`]) and only looks inside when it has to.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::header::{peek_summary, FrameSummary, HeaderError};
pub use super::wire::{encode_frame, encode_head, encode_json_frame, OutFrame, SerializeType};

/// Default frame limit, the same as Java's `com.rocketmq.remoting.frameMaxLength`
/// (16 MiB, the 4-byte length prefix included).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

use super::wire::PREFIX_LEN;

/// Most bytes reserved ahead of what has arrived of an incomplete frame.
pub const RESERVE_AHEAD: usize = 1 << 20;

/// Why a byte stream is not a valid frame. Each closes the one connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame is larger than the configured limit (checked before buffering).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Frame size including the length prefix.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// The total length cannot even hold the header-length word.
    #[error("frame length {0} is smaller than the 4-byte header-length word")]
    TooShort(i64),
    /// The header length points past the end of the frame.
    #[error("header length {header_len} exceeds the frame's {available} bytes")]
    HeaderOverflow {
        /// Declared header length.
        header_len: usize,
        /// Bytes left in the frame for header and body.
        available: usize,
    },
    /// The serialize-type byte is neither JSON (0) nor ROCKETMQ (1).
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),
    /// The header could not be read.
    #[error("bad header: {0}")]
    Header(#[from] HeaderError),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One complete frame, as the exact bytes it arrived as, plus what the relay needs to
/// classify it (code, flag, opaque).
#[derive(Debug, Clone)]
pub struct RawFrame {
    bytes: Bytes,
    header_len: usize,
    serialize: SerializeType,
    summary: FrameSummary,
}

/// Decoder for [`RawFrame`]s with a size limit.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

// === impl FrameError ===

impl FrameError {
    /// Short reason label (logs and metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "too_large",
            FrameError::TooShort(_) => "too_short",
            FrameError::HeaderOverflow { .. } => "header_overflow",
            FrameError::UnknownSerializeType(_) => "unknown_serialize_type",
            FrameError::Header(_) => "bad_header",
            FrameError::Io(_) => "io_error",
        }
    }
}

// === impl RawFrame ===

impl RawFrame {
    /// Parses one complete frame held in `bytes` (length prefix included).
    pub fn parse(bytes: Bytes, max_frame_bytes: usize) -> Result<Self, FrameError> {
        let mut probe = &bytes[..];
        match check_prefix(&mut probe, max_frame_bytes)? {
            Some((total, header_len, serialize)) if total == bytes.len() => {
                Self::from_checked(bytes, header_len, serialize)
            }
            _ => Err(FrameError::TooShort(bytes.len() as i64)),
        }
    }

    fn from_checked(
        bytes: Bytes,
        header_len: usize,
        serialize: SerializeType,
    ) -> Result<Self, FrameError> {
        let header = &bytes[PREFIX_LEN..PREFIX_LEN + header_len];
        let summary = peek_summary(serialize, header)?;
        Ok(Self {
            bytes,
            header_len,
            serialize,
            summary,
        })
    }

    /// The whole frame, exactly as received.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the frame, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The header bytes (JSON text or ROCKETMQ binary).
    pub fn header_bytes(&self) -> &[u8] {
        &self.bytes[PREFIX_LEN..PREFIX_LEN + self.header_len]
    }

    /// The body (may be empty).
    pub fn body(&self) -> Bytes {
        self.bytes.slice(PREFIX_LEN + self.header_len..)
    }

    /// The same frame, header bytes and serialize type untouched, with another body.
    pub fn with_body(&self, body: &[u8]) -> Bytes {
        encode_frame(self.serialize_type(), self.header_bytes(), body)
    }

    /// The same frame, header bytes and serialize type untouched, with another body that
    /// is not copied (only the length words and the header are).
    pub fn with_new_body(&self, body: Bytes) -> OutFrame {
        OutFrame::with_header(self.serialize_type(), self.header_bytes(), body)
    }

    /// How the header is serialised.
    pub fn serialize_type(&self) -> SerializeType {
        self.serialize
    }

    /// Request code (or response code for responses).
    pub fn code(&self) -> i32 {
        self.summary.code
    }

    /// Request id; a response carries its request's opaque.
    pub fn opaque(&self) -> i32 {
        self.summary.opaque
    }

    /// Sender's version ordinal.
    pub fn version(&self) -> i32 {
        self.summary.version
    }

    /// True for responses (flag bit 0).
    pub fn is_response(&self) -> bool {
        self.summary.flag & super::code::FLAG_RESPONSE != 0
    }

    /// True for oneway requests (flag bit 1).
    pub fn is_oneway(&self) -> bool {
        self.summary.flag & super::code::FLAG_ONEWAY != 0
    }

    /// Total size on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a frame holds at least its two length words.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

// === impl FrameDecoder ===

impl FrameDecoder {
    /// A decoder that rejects frames larger than `max_frame_bytes` (prefix included).
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameDecoder {
    type Item = RawFrame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, FrameError> {
        let mut probe = &src[..];
        let Some((total, header_len, serialize)) = check_prefix(&mut probe, self.max_frame_bytes)?
        else {
            return Ok(None);
        };
        if src.len() < total {
            // Reserve only after the length was validated against the limit, and only so
            // far ahead: a peer that announces a large frame and trickles it in holds what
            // it sent, not what it announced.
            src.reserve((total - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        let bytes = src.split_to(total).freeze();
        RawFrame::from_checked(bytes, header_len, serialize).map(Some)
    }
}

/// Validates the 8-byte prefix. Returns `None` while fewer than 8 bytes are buffered,
/// else `(frame size incl. prefix, header length, serialize type)`.
fn check_prefix(
    src: &mut &[u8],
    max_frame_bytes: usize,
) -> Result<Option<(usize, usize, SerializeType)>, FrameError> {
    if src.len() < PREFIX_LEN {
        return Ok(None);
    }
    let total = i64::from(src.get_i32());
    if total < 4 {
        return Err(FrameError::TooShort(total));
    }
    let with_prefix = total as u64 + 4;
    if with_prefix > max_frame_bytes as u64 {
        return Err(FrameError::TooLarge {
            len: with_prefix,
            max: max_frame_bytes,
        });
    }
    let marked = src.get_u32();
    let serialize = match (marked >> 24) as u8 {
        0 => SerializeType::Json,
        1 => SerializeType::RocketMq,
        other => return Err(FrameError::UnknownSerializeType(other)),
    };
    let header_len = (marked & 0x00FF_FFFF) as usize;
    let available = total as usize - 4;
    if header_len > available {
        return Err(FrameError::HeaderOverflow {
            header_len,
            available,
        });
    }
    Ok(Some((with_prefix as usize, header_len, serialize)))
}
