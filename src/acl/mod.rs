//! RocketMQ ACL signing (AclClientRPCHook's algorithm), computed the way the *server*
//! will verify it. Pure: no files, no sockets.

pub mod credentials;
pub mod sign;

pub use sign::{
    sign_json_header, sign_request, sign_splice, signature, signature_over, Credentials, SecretKey,
    UniqueKeyRule,
};
