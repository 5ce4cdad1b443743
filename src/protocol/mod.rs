//! The RocketMQ remoting protocol, pure: bytes in, values out. No sockets, no config, no
//! metrics. Facts and their sources: `shared/docs/rocketmq-protocol.md`.
//!
//! - [`wire`]: the frame's fixed layout (length words, serialize type) and its encoders.
//! - [`header`]: the header in both forms (JSON, ROCKETMQ binary), unknown fields kept.
//! - [`json_ext`]: a JSON header's ext fields read in one pass and edited in place.
//! - [`frame`]: one frame as the bytes it arrived as, and the bounded decoder.
//! - [`code`]: request and response codes, flag bits.
//! - [`route`]: route, cluster-info and topic-list bodies, read leniently, rewritten.
//! - [`messages`]: stored-message records (pull answers): topics and named properties mapped in one pass.
//! - [`namespace`]: TDMQ namespaces: names wrapped for the cluster, unwrapped for the app.
//! - [`names`]: broker names inside request and response bodies.
//! - [`heartbeat`]: the groups in HEART_BEAT bodies, filtered per cluster.
//! - [`admin`]: the admin queries the migration gates send, and their answers.

pub mod admin;
pub mod code;
pub mod frame;
pub mod header;
pub mod heartbeat;
pub mod json_ext;
pub mod messages;
pub mod names;
pub mod namespace;
pub mod route;
pub mod wire;

pub use frame::{
    encode_frame, encode_head, FrameDecoder, FrameError, OutFrame, RawFrame, SerializeType,
    DEFAULT_MAX_FRAME_BYTES,
};
pub use header::{Header, HeaderError};
