//! RocketMQ ACL signing (AclClientRPCHook's algorithm), computed the way the *server*
//! will verify it. Pure: no files, no sockets.

pub mod credentials;
pub mod sign;

pub use sign::{sign_request, signature, Credentials, SecretKey, UniqueKeyRule};
