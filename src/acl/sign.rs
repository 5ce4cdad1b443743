//! The signature: sort the ext fields by key, concatenate their values (not the keys,
//! skipping `Signature`), append the raw body, HMAC-SHA1 with the SecretKey, Base64.
//! Source: Apache RocketMQ `AclClientRPCHook`, `AclUtils`, `AclSigner`; what servers
//! verify: `PlainAccessValidator` (4.9.x) and `DefaultAuthenticationContextBuilder` (5.x).

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha1::Sha1;

use crate::protocol::Header;

/// Ext field carrying the AccessKey.
pub const ACCESS_KEY: &str = "AccessKey";
/// Ext field carrying the signature.
pub const SIGNATURE: &str = "Signature";
/// Ext field carrying the optional security token.
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// Ext field QUERY_MESSAGE adds; whether servers sign it depends on their version.
pub const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";
/// MQVersion ordinal of V4_9_3: 5.x servers leave `_UNIQUE_KEY_QUERY` out of the signed
/// content for requests at this version or older, and include it above (measured on a
/// 5.3.3 broker: version 400 already includes it).
const V4_9_3: i32 = 399;

/// How a server treats `_UNIQUE_KEY_QUERY` when it recomputes the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueKeyRule {
    /// 4.9.x: never part of the verified content.
    Excluded,
    /// 5.x: part of the content when the request's `version` is above 399 (V4_9_3).
    ByRequestVersion,
}

/// A SecretKey. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

/// One cluster's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// AccessKey (a TDMQ role name or token, depending on which doc the user followed).
    pub access_key: String,
    /// SecretKey.
    pub secret_key: SecretKey,
    /// Optional SecurityToken (STS).
    pub security_token: Option<String>,
}

// === impl SecretKey ===

impl SecretKey {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret, for signing and for scrubbing it out of server remarks.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Replaces the client's credentials in `header` with `creds` and signs the result.
/// Rewrites must happen before this: the signature covers every ext value and the body.
pub fn sign_request(header: &mut Header, body: &[u8], creds: &Credentials, rule: UniqueKeyRule) {
    let ext = header.ext_fields.get_or_insert_with(Map::new);
    ext.shift_remove(SIGNATURE);
    ext.shift_remove(SECURITY_TOKEN);
    ext.insert(
        ACCESS_KEY.to_owned(),
        Value::String(creds.access_key.clone()),
    );
    if let Some(token) = &creds.security_token {
        ext.insert(SECURITY_TOKEN.to_owned(), Value::String(token.clone()));
    }
    let sig = signature(ext, body, &creds.secret_key, rule, header.version);
    ext.insert(SIGNATURE.to_owned(), Value::String(sig));
}

/// The signature a server with `rule` expects for `ext` + `body` from a client at
/// `version`.
pub fn signature(
    ext: &Map<String, Value>,
    body: &[u8],
    secret: &SecretKey,
    rule: UniqueKeyRule,
    version: i32,
) -> String {
    let skip_unique = match rule {
        UniqueKeyRule::Excluded => true,
        UniqueKeyRule::ByRequestVersion => version <= V4_9_3,
    };
    // Java sorts with a TreeMap<String, String>: UTF-16 code unit order.
    let mut entries: Vec<(&String, &str)> = ext
        .iter()
        .filter(|(k, _)| {
            k.as_str() != SIGNATURE && !(skip_unique && k.as_str() == UNIQUE_KEY_QUERY)
        })
        .map(|(k, v)| (k, v.as_str().unwrap_or_default()))
        .collect();
    entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length; unreachable
    };
    for (_, v) in entries {
        mac.update(v.as_bytes());
    }
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn protocol_notes_vectors() {
        let sk = SecretKey::new("12345678");
        let e = ext(&[("AccessKey", "RocketMQ"), ("topic", "TopicTest")]);
        assert_eq!(
            signature(&e, b"", &sk, UniqueKeyRule::ByRequestVersion, 409),
            "0jiwhsaYp5ObE5GObbZH1I8/FT4="
        );
        let e = ext(&[
            ("AccessKey", "RocketMQ"),
            ("a", "PG"),
            ("b", "TopicTest"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "0"),
            ("f", "0"),
            ("g", "1700000000000"),
            ("h", "0"),
            ("i", "UNIQ_KEY\u{1}ABC\u{2}WAIT\u{1}true\u{2}"),
            ("j", "0"),
            ("k", "false"),
            ("m", "false"),
            ("n", "broker-a"),
        ]);
        assert_eq!(
            signature(&e, b"hello", &sk, UniqueKeyRule::ByRequestVersion, 409),
            "w9ziGY01ldoQNtjvh4SngVqDeHo="
        );
    }

    #[test]
    fn secret_never_formats() {
        let c = Credentials {
            access_key: "ak".into(),
            secret_key: SecretKey::new("s3cr3t-value"),
            security_token: None,
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{}", c.secret_key).contains("s3cr3t"));
    }
}
