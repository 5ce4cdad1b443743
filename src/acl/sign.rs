//! The signature: sort the ext fields by key, concatenate their values (not the keys,
//! skipping `Signature`), append the raw body, HMAC-SHA1 with the SecretKey, Base64.
//! Source: Apache RocketMQ `AclClientRPCHook`, `AclUtils`, `AclSigner`; what servers
//! verify: `PlainAccessValidator` (4.9.x) and `DefaultAuthenticationContextBuilder` (5.x).

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha1::Sha1;

use crate::protocol::json_ext::ExtSplice;
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

/// [`sign_request`] on a scanned JSON header: the client's `AccessKey`, `Signature` and
/// `SecurityToken` give way to ours, and the signature is computed over the fields as
/// they are after every other edit already made on `ext` (rewrites come first).
/// [`ExtSplice::finish`] then writes the header; it decodes to what [`sign_request`]
/// makes of the decoded header.
pub fn sign_splice(ext: &mut ExtSplice<'_>, body: &[u8], creds: &Credentials, rule: UniqueKeyRule) {
    ext.remove(SIGNATURE);
    ext.remove(SECURITY_TOKEN);
    ext.set(ACCESS_KEY, creds.access_key.clone());
    if let Some(token) = &creds.security_token {
        ext.set(SECURITY_TOKEN, token.clone());
    }
    let sig = signature_over(ext.fields(), body, &creds.secret_key, rule, ext.version());
    ext.set(SIGNATURE, sig);
}

/// Signs a JSON header without decoding it: one scan, the signature, and the header
/// spliced (see [`ExtSplice`]). `None` when the scanner does not read this header (a
/// non-string ext value, duplicate keys, ...): decode it and use [`sign_request`].
pub fn sign_json_header(
    header: &[u8],
    body: &[u8],
    creds: &Credentials,
    rule: UniqueKeyRule,
) -> Option<Vec<u8>> {
    let mut ext = ExtSplice::scan(header)?;
    sign_splice(&mut ext, body, creds, rule);
    Some(ext.finish())
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
    signature_over(
        ext.iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
        body,
        secret,
        rule,
        version,
    )
}

/// [`signature`] over ext fields given as (key, value) pairs with distinct keys.
pub fn signature_over<'a>(
    ext: impl Iterator<Item = (&'a str, &'a str)>,
    body: &[u8],
    secret: &SecretKey,
    rule: UniqueKeyRule,
    version: i32,
) -> String {
    let skip_unique = match rule {
        UniqueKeyRule::Excluded => true,
        UniqueKeyRule::ByRequestVersion => version <= V4_9_3,
    };
    let mut entries: Vec<(&str, &str)> = ext
        .filter(|(k, _)| *k != SIGNATURE && !(skip_unique && *k == UNIQUE_KEY_QUERY))
        .collect();
    // Java sorts with a TreeMap<String, String>: UTF-16 code unit order.
    entries.sort_unstable_by(|a, b| java_order(a.0, b.0));
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

/// Java's `String.compareTo`: UTF-16 code unit order. UTF-8 byte order is the same
/// except between supplementary characters and U+E000..U+FFFF, so ASCII keys (all the
/// real ones) compare as bytes.
fn java_order(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
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
    fn keys_sort_in_utf16_order() {
        use std::cmp::Ordering::*;
        assert_eq!(java_order("AccessKey", "a"), Less);
        assert_eq!(java_order("b", "a"), Greater);
        // U+FF5E is above every supplementary character's lead surrogate in UTF-16, though
        // below it in UTF-8 (and code points).
        assert_eq!(java_order("\u{ff5e}", "\u{1f600}"), Greater);
        assert_eq!(java_order("a\u{ff5e}", "a"), Greater);
    }

    #[test]
    fn the_splice_signs_like_the_decoded_header() {
        let creds = Credentials {
            access_key: "RocketMQ".into(),
            secret_key: SecretKey::new("12345678"),
            security_token: None,
        };
        let json = br#"{"code":310,"extFields":{"AccessKey":"app","Signature":"x","SecurityToken":"t","a":"PG","b":"TopicTest","n":"broker-a"},"version":409}"#;
        let spliced =
            sign_json_header(json, b"hello", &creds, UniqueKeyRule::ByRequestVersion).unwrap();
        let mut h = Header::decode(crate::protocol::SerializeType::Json, json).unwrap();
        sign_request(&mut h, b"hello", &creds, UniqueKeyRule::ByRequestVersion);
        let d = Header::decode(crate::protocol::SerializeType::Json, &spliced).unwrap();
        assert_eq!(d, h);
        assert_eq!(d.ext(SECURITY_TOKEN), None);
        let expected = signature(
            &ext(&[
                ("AccessKey", "RocketMQ"),
                ("a", "PG"),
                ("b", "TopicTest"),
                ("n", "broker-a"),
            ]),
            b"hello",
            &creds.secret_key,
            UniqueKeyRule::ByRequestVersion,
            409,
        );
        assert_eq!(d.ext(SIGNATURE), Some(expected.as_str()));
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
