//! The remoting header ("RemotingCommand" minus the body), in both wire forms.
//!
//! JSON headers are parsed generically so that every field is kept, including fields
//! this sidecar does not know (`serializeTypeCurrentRPC`, future additions). Headers the
//! sidecar answers or rewrites are always emitted as JSON: C++ clients read only JSON, and
//! request codes above 32767 cannot be carried in the binary form.

use bytes::{Buf, Bytes};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::code::{language_name, FLAG_ONEWAY, FLAG_RESPONSE};
use super::wire::{encode_json_frame, OutFrame, SerializeType};

/// Ext fields: string keys to string values, in arrival order, last duplicate winning.
pub type ExtFields = Map<String, Value>;

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// JSON header that is not a JSON object.
    #[error("JSON header is not valid: {0}")]
    Json(String),
    /// A required field is missing or has the wrong type.
    #[error("header field `{0}` is missing or not a number")]
    Field(&'static str),
    /// A binary header ended before one of its fields.
    #[error("binary header truncated while reading {0}")]
    Truncated(&'static str),
    /// A string in a binary header is not UTF-8.
    #[error("binary header field {0} is not UTF-8")]
    Utf8(&'static str),
}

/// The fields the relay needs to classify a frame without decoding the whole header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSummary {
    /// Request code, or response code for responses.
    pub code: i32,
    /// Flag bits (response, oneway).
    pub flag: i32,
    /// Request id.
    pub opaque: i32,
    /// Sender's version ordinal (a server's own version in its responses).
    pub version: i32,
}

/// A fully decoded header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Request code, or response code in a response.
    pub code: i32,
    /// Sender's language as the enum name Java uses ("JAVA", "GO", "CPP", ...).
    pub language: String,
    /// Sender's RocketMQ version ordinal (servers branch on it: pass it through).
    pub version: i32,
    /// Request id; a response copies it from its request.
    pub opaque: i32,
    /// Bit 0 response, bit 1 oneway.
    pub flag: i32,
    /// Error text in responses.
    pub remark: Option<String>,
    /// The request's "custom header" fields; every value is a JSON string.
    pub ext_fields: Option<ExtFields>,
    /// Any other JSON header field, kept verbatim.
    pub other: Map<String, Value>,
}

#[derive(Deserialize)]
struct JsonSummary {
    code: Option<i64>,
    #[serde(default)]
    flag: Option<i64>,
    #[serde(default)]
    opaque: Option<i64>,
    #[serde(default)]
    version: Option<i64>,
}

/// Reads code, flag and opaque from a header without building the whole header.
pub fn peek_summary(serialize: SerializeType, header: &[u8]) -> Result<FrameSummary, HeaderError> {
    match serialize {
        SerializeType::Json => {
            let s: JsonSummary =
                serde_json::from_slice(header).map_err(|e| HeaderError::Json(e.to_string()))?;
            Ok(FrameSummary {
                code: s.code.ok_or(HeaderError::Field("code"))? as i32,
                flag: s.flag.unwrap_or(0) as i32,
                opaque: s.opaque.unwrap_or(0) as i32,
                version: s.version.unwrap_or(0) as i32,
            })
        }
        SerializeType::RocketMq => {
            let mut b = header;
            let code = take_i16(&mut b, "code")?;
            let _language = take_u8(&mut b, "language")?;
            let version = take_i16(&mut b, "version")?;
            let opaque = take_i32(&mut b, "opaque")?;
            let flag = take_i32(&mut b, "flag")?;
            Ok(FrameSummary {
                code: i32::from(code),
                flag,
                opaque,
                version: i32::from(version),
            })
        }
    }
}

/// The integer value of ext field `key` in a JSON header, found by scanning its bytes for
/// `"key":"N"` or `"key":N` without decoding the header (for a check on every send).
/// Inside a JSON string a quote is escaped, so the pattern cannot match inside a value.
/// `None` when the key is absent or its value is not an integer; a binary header needs
/// [`Header::decode`].
pub fn json_ext_int(header: &[u8], key: &str) -> Option<i64> {
    let mut pattern = Vec::with_capacity(key.len() + 3);
    pattern.push(b'"');
    pattern.extend_from_slice(key.as_bytes());
    pattern.extend_from_slice(b"\":");
    let at = memchr::memmem::find(header, &pattern)?;
    let rest = &header[at + pattern.len()..];
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'-'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The string value of ext field `key` in a JSON header, found by scanning its bytes
/// (no decoding). `None` when absent, not a string, or holding an escape (decode then).
pub fn json_ext_str<'a>(header: &'a [u8], key: &str) -> Option<&'a str> {
    let mut pattern = Vec::with_capacity(key.len() + 4);
    pattern.push(b'"');
    pattern.extend_from_slice(key.as_bytes());
    pattern.extend_from_slice(b"\":\"");
    let start = memchr::memmem::find(header, &pattern)? + pattern.len();
    let len = memchr::memchr2(b'"', b'\\', &header[start..])?;
    if header.get(start + len) != Some(&b'"') {
        return None;
    }
    std::str::from_utf8(&header[start..start + len]).ok()
}

/// Whether ext field `key` of a JSON header is a string starting with `prefix`, found by
/// scanning the header's bytes (no decoding). `prefix` must need no JSON escaping.
pub fn json_ext_starts_with(header: &[u8], key: &str, prefix: &str) -> bool {
    let mut pattern = Vec::with_capacity(key.len() + prefix.len() + 4);
    pattern.push(b'"');
    pattern.extend_from_slice(key.as_bytes());
    pattern.extend_from_slice(b"\":\"");
    pattern.extend_from_slice(prefix.as_bytes());
    memchr::memmem::find(header, &pattern).is_some()
}

// === impl Header ===

impl Header {
    /// A new request header (used for the sidecar's own requests and for tests).
    pub fn request(code: i32, opaque: i32) -> Self {
        Self {
            code,
            language: "JAVA".to_owned(),
            version: 0,
            opaque,
            flag: 0,
            remark: None,
            ext_fields: None,
            other: Map::new(),
        }
    }

    /// A response to `request`: same opaque, response bit set.
    pub fn response_to(request: &Header, code: i32, remark: Option<String>) -> Self {
        Self {
            code,
            language: "JAVA".to_owned(),
            version: request.version,
            opaque: request.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: None,
            other: Map::new(),
        }
    }

    /// Decodes a header of either form.
    pub fn decode(serialize: SerializeType, header: &[u8]) -> Result<Self, HeaderError> {
        match serialize {
            SerializeType::Json => Self::decode_json(header),
            SerializeType::RocketMq => Self::decode_binary(header),
        }
    }

    fn decode_json(header: &[u8]) -> Result<Self, HeaderError> {
        let value: Value =
            serde_json::from_slice(header).map_err(|e| HeaderError::Json(e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(HeaderError::Json("not an object".to_owned()));
        };
        // Known fields are taken out with `shift_remove` so that the unknown ones keep
        // their order (`remove` swaps the last field into the hole).
        let code = take_number(&mut map, "code")?.ok_or(HeaderError::Field("code"))?;
        let version = take_number(&mut map, "version")?.unwrap_or(0);
        let opaque = take_number(&mut map, "opaque")?.unwrap_or(0);
        let flag = take_number(&mut map, "flag")?.unwrap_or(0);
        let language = match map.shift_remove("language") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => language_name(n.as_u64().unwrap_or(7) as u8).to_owned(),
            _ => "JAVA".to_owned(),
        };
        let remark = match map.shift_remove("remark") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let ext_fields = match map.shift_remove("extFields") {
            Some(Value::Object(ext)) => Some(normalize_ext(ext)),
            Some(Value::Null) | None => None,
            Some(_) => return Err(HeaderError::Json("extFields is not an object".to_owned())),
        };
        Ok(Self {
            code,
            language,
            version,
            opaque,
            flag,
            remark,
            ext_fields,
            other: map,
        })
    }

    fn decode_binary(header: &[u8]) -> Result<Self, HeaderError> {
        let mut b = header;
        let code = i32::from(take_i16(&mut b, "code")?);
        let language = language_name(take_u8(&mut b, "language")?).to_owned();
        let version = i32::from(take_i16(&mut b, "version")?);
        let opaque = take_i32(&mut b, "opaque")?;
        let flag = take_i32(&mut b, "flag")?;
        let remark_len = take_i32(&mut b, "remark length")?;
        let remark = if remark_len > 0 {
            Some(take_str(&mut b, remark_len as usize, "remark")?)
        } else {
            None
        };
        let ext_len = take_i32(&mut b, "ext length")?;
        let ext_fields = if ext_len > 0 {
            let mut ext_bytes = take_slice(&mut b, ext_len as usize, "ext fields")?;
            let mut ext = Map::new();
            while ext_bytes.has_remaining() {
                let key_len = take_i16(&mut ext_bytes, "ext key length")?;
                let key = take_str(&mut ext_bytes, key_len.max(0) as usize, "ext key")?;
                let val_len = take_i32(&mut ext_bytes, "ext value length")?;
                let val = take_str(&mut ext_bytes, val_len.max(0) as usize, "ext value")?;
                // Duplicated keys (5.x FastCodes headers) collapse: the last one wins,
                // exactly as Java's HashMap does when the server decodes them.
                // `shift_remove`: `remove` would swap the last key into the hole.
                ext.shift_remove(&key);
                ext.insert(key, Value::String(val));
            }
            Some(ext)
        } else {
            None
        };
        Ok(Self {
            code,
            language,
            version,
            opaque,
            flag,
            remark,
            ext_fields,
            other: Map::new(),
        })
    }

    /// True for responses.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// True for oneway requests.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// An ext field's value.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.as_ref()?.get(key)?.as_str()
    }

    /// Sets an ext field, creating the map if needed.
    pub fn set_ext(&mut self, key: &str, value: impl Into<String>) {
        self.ext_fields
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), Value::String(value.into()));
    }

    /// Serialises as compact JSON, keeping unknown fields.
    pub fn to_json(&self) -> Vec<u8> {
        let mut map = Map::new();
        map.insert("code".to_owned(), Value::from(self.code));
        if let Some(ext) = &self.ext_fields {
            map.insert("extFields".to_owned(), Value::Object(ext.clone()));
        }
        map.insert("flag".to_owned(), Value::from(self.flag));
        map.insert("language".to_owned(), Value::from(self.language.clone()));
        map.insert("opaque".to_owned(), Value::from(self.opaque));
        if let Some(remark) = &self.remark {
            map.insert("remark".to_owned(), Value::from(remark.clone()));
        }
        for (k, v) in &self.other {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
        map.insert("version".to_owned(), Value::from(self.version));
        // A map of JSON values always serialises.
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }

    /// Serialises in the ROCKETMQ binary form (the sidecar itself always sends JSON; this
    /// exists for tests, benches and tools). Codes must fit in 16 bits.
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&(self.code as i16).to_be_bytes());
        out.push(language_byte(&self.language));
        out.extend_from_slice(&(self.version as i16).to_be_bytes());
        out.extend_from_slice(&self.opaque.to_be_bytes());
        out.extend_from_slice(&self.flag.to_be_bytes());
        match &self.remark {
            Some(r) => {
                out.extend_from_slice(&(r.len() as i32).to_be_bytes());
                out.extend_from_slice(r.as_bytes());
            }
            None => out.extend_from_slice(&0i32.to_be_bytes()),
        }
        let mut ext = Vec::new();
        for (k, v) in self.ext_fields.iter().flatten() {
            let v = v.as_str().unwrap_or_default();
            ext.extend_from_slice(&(k.len() as i16).to_be_bytes());
            ext.extend_from_slice(k.as_bytes());
            ext.extend_from_slice(&(v.len() as i32).to_be_bytes());
            ext.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(&(ext.len() as i32).to_be_bytes());
        out.extend_from_slice(&ext);
        out
    }

    /// Builds a complete JSON frame with this header and `body`.
    pub fn encode_frame(&self, body: &[u8]) -> Bytes {
        encode_json_frame(&self.to_json(), body)
    }

    /// A JSON frame with this header followed by `body`, the body not copied.
    pub fn encode_split(&self, body: Bytes) -> OutFrame {
        OutFrame::with_header(SerializeType::Json, &self.to_json(), body)
    }
}

fn language_byte(name: &str) -> u8 {
    (0u8..=13).find(|b| language_name(*b) == name).unwrap_or(7)
}

/// Ext values as Java sees them: numbers become their decimal text, booleans
/// "true"/"false", nested JSON its compact text; nulls are dropped.
fn normalize_ext(ext: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in ext {
        let s = match v {
            Value::String(s) => s,
            Value::Null => continue,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        out.insert(k, Value::String(s));
    }
    out
}

fn take_number(
    map: &mut Map<String, Value>,
    key: &'static str,
) -> Result<Option<i32>, HeaderError> {
    match map.shift_remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|v| Some(v as i32))
            .ok_or(HeaderError::Field(key)),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| HeaderError::Field(key)),
        Some(_) => Err(HeaderError::Field(key)),
    }
}

fn take_u8(b: &mut &[u8], what: &'static str) -> Result<u8, HeaderError> {
    if b.remaining() < 1 {
        return Err(HeaderError::Truncated(what));
    }
    Ok(b.get_u8())
}

fn take_i16(b: &mut &[u8], what: &'static str) -> Result<i16, HeaderError> {
    if b.remaining() < 2 {
        return Err(HeaderError::Truncated(what));
    }
    Ok(b.get_i16())
}

fn take_i32(b: &mut &[u8], what: &'static str) -> Result<i32, HeaderError> {
    if b.remaining() < 4 {
        return Err(HeaderError::Truncated(what));
    }
    Ok(b.get_i32())
}

fn take_slice<'a>(
    b: &mut &'a [u8],
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], HeaderError> {
    if b.remaining() < len {
        return Err(HeaderError::Truncated(what));
    }
    let (head, tail) = b.split_at(len);
    *b = tail;
    Ok(head)
}

fn take_str(b: &mut &[u8], len: usize, what: &'static str) -> Result<String, HeaderError> {
    let raw = take_slice(b, len, what)?;
    String::from_utf8(raw.to_vec()).map_err(|_| HeaderError::Utf8(what))
}
