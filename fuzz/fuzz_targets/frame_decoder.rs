//! `protocol::FrameDecoder` (a tokio_util `Decoder`) on an arbitrary byte stream, fed at
//! once and in arbitrary chunks. Input: `[limit][chunking][stream...]`: `limit` 0 is the
//! default 16 MiB limit, else `limit * 8` bytes; `chunking` 0 feeds the stream whole,
//! else in pseudo-random chunks of 1..=`chunking` bytes.
//!
//! Asserts: no panic; both feedings give the same frames and the same end (error reason
//! or bytes left); every frame is the next bytes of the input, its `header_bytes()` and
//! `body()` lie inside it and match its prefix; no frame exceeds the limit; the decoder
//! never waits on more than the limit, and grows the buffer only by what the limit allows;
//! the summary it classifies a frame by agrees with the full header decode.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rocketmq_sidecar::protocol::{
    FrameDecoder, Header, RawFrame, SerializeType, DEFAULT_MAX_FRAME_BYTES,
};
use rocketmq_sidecar_fuzz::check_summary;
use tokio_util::codec::Decoder;

/// Bytes of the two length words.
const PREFIX: usize = 8;

#[derive(Debug, PartialEq)]
enum End {
    /// The decoder failed with this reason (the relay closes the connection).
    Error(&'static str),
    /// The stream ended with this many bytes buffered (an incomplete frame).
    Pending(usize),
}

/// xorshift32: chunk sizes from one seed byte, no extra input consumed.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        1 + self.0 as usize % max
    }
}

fn check_frame(f: &RawFrame, rest: &[u8], limit: usize) {
    let len = f.len();
    assert!(
        len >= PREFIX && len <= limit,
        "frame of {len} bytes, limit {limit}"
    );
    assert_eq!(
        &f.bytes()[..],
        &rest[..len],
        "a frame is the next bytes of the input"
    );

    let total = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    assert_eq!(i64::from(total), len as i64 - 4, "total length word");
    let marked = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let header_len = (marked & 0x00FF_FFFF) as usize;
    let expected_type = match marked >> 24 {
        0 => SerializeType::Json,
        1 => SerializeType::RocketMq,
        other => panic!("accepted serialize type {other}"),
    };
    assert_eq!(f.serialize_type(), expected_type);

    // Header and body are views into the frame's own bytes, split where the prefix says.
    let whole = f.bytes().as_ptr_range();
    let header = f.header_bytes();
    let hr = header.as_ptr_range();
    assert!(
        whole.start <= hr.start && hr.end <= whole.end,
        "header outside the frame"
    );
    assert_eq!(header, &rest[PREFIX..PREFIX + header_len]);
    let body = f.body();
    let br = body.as_ptr_range();
    assert!(
        whole.start <= br.start && br.end <= whole.end,
        "body outside the frame"
    );
    assert_eq!(&body[..], &rest[PREFIX + header_len..len]);

    if let Ok(h) = Header::decode(f.serialize_type(), header) {
        check_summary(f.serialize_type(), header, &h);
        assert_eq!(
            (
                f.code(),
                f.opaque(),
                f.version(),
                f.is_response(),
                f.is_oneway()
            ),
            (h.code, h.opaque, h.version, h.is_response(), h.is_oneway())
        );
    }

    // Swapping the body keeps the header bytes and parses as one frame again.
    let swapped = f.with_body(b"swapped");
    match RawFrame::parse(swapped, usize::MAX) {
        Ok(g) => {
            assert_eq!(g.header_bytes(), header);
            assert_eq!(&g.body()[..], b"swapped");
            assert_eq!(g.code(), f.code());
        }
        Err(e) => panic!("with_body gave an unparseable frame: {e}"),
    }
}

/// Feeds `stream` to a fresh decoder, `chunking` as described above.
fn run(stream: &[u8], limit: usize, chunking: u8) -> (Vec<Bytes>, End) {
    let mut dec = FrameDecoder::new(limit);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunks = Chunks(u32::from(chunking).wrapping_mul(0x9E37_79B9) | 1);
    let (mut fed, mut consumed) = (0, 0);
    loop {
        let n = if chunking == 0 {
            stream.len() - fed
        } else {
            chunks.next(usize::from(chunking)).min(stream.len() - fed)
        };
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let (len_before, cap_before) = (buf.len(), buf.capacity());
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    check_frame(&f, &stream[consumed..], limit);
                    consumed += f.len();
                    assert_eq!(buf.len(), len_before - f.len());
                    frames.push(f.into_bytes());
                }
                Ok(None) => {
                    assert_eq!(buf.len(), len_before, "waiting consumed bytes");
                    assert!(
                        buf.len() < limit.max(PREFIX),
                        "waiting with {} bytes buffered, limit {limit}",
                        buf.len()
                    );
                    // Growth comes only from `reserve(frame - buffered)` with the frame
                    // within the limit; the allocator may double what it had (bytes'
                    // Vec growth), consumed frames included.
                    let bound = 2 * (cap_before + stream.len()) + limit;
                    assert!(
                        buf.capacity() <= bound,
                        "capacity {} after waiting, bound {bound}",
                        buf.capacity()
                    );
                    break;
                }
                Err(e) => return (frames, End::Error(e.reason())),
            }
        }
        if fed == stream.len() {
            break;
        }
    }
    // At the end of the stream: nothing left is fine, a partial frame is an error.
    let left = buf.len();
    match dec.decode_eof(&mut buf) {
        Ok(None) => assert_eq!(left, 0, "decode_eof accepted {left} stray bytes"),
        Ok(Some(f)) => panic!("decode_eof found a frame decode missed: {f:?}"),
        Err(_) => assert!(left > 0, "decode_eof failed on an empty buffer"),
    }
    (frames, End::Pending(left))
}

fuzz_target!(|data: &[u8]| {
    let Some((&[limit_sel, chunking], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = match limit_sel {
        0 => DEFAULT_MAX_FRAME_BYTES,
        n => usize::from(n) * 8,
    };
    let whole = run(stream, limit, 0);
    if chunking != 0 {
        let chunked = run(stream, limit, chunking);
        assert_eq!(whole, chunked, "chunking changed what was decoded");
    }
});
