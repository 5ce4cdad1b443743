//! The RocketMQ remoting protocol, pure: bytes in, values out. No sockets, no config, no
//! metrics. Facts and their sources: `shared/docs/rocketmq-protocol.md`.

pub mod code;
pub mod frame;
pub mod header;
pub mod names;
pub mod route;

pub use frame::{
    encode_frame, FrameDecoder, FrameError, RawFrame, SerializeType, DEFAULT_MAX_FRAME_BYTES,
};
pub use header::{Header, HeaderError};
