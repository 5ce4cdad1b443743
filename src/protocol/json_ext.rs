//! The ext fields of a JSON header, read in one pass over its bytes and edited in place.
//!
//! [`ExtSplice::scan`] walks the header once: it finds the top-level `extFields` object,
//! borrows each key and value (unescaping only those that hold an escape), and reads
//! `version`. Edits ([`ExtSplice::set`], [`ExtSplice::remove`]) are recorded, and
//! [`ExtSplice::finish`] writes the header again: the entries that were kept are copied as
//! they came, with the whitespace and separators between them, and every byte outside the
//! ext object is untouched. The result decodes ([`super::Header::decode`]) to the same
//! header the edits would give on a decoded one.
//!
//! The scanner is strict and small: anything it does not read exactly as `serde_json`
//! would (a non-string or null ext value, duplicate ext keys, a duplicate or non-integer
//! `code`/`version`/`opaque`/`flag`, floats, deep nesting, invalid text) makes `scan`
//! return `None`, and the caller decodes the header instead.

use std::borrow::Cow;

/// Nesting depth of skipped values the scanner follows before it gives up (`serde_json`
/// allows 127; a RocketMQ header nests at most twice).
const MAX_DEPTH: usize = 32;

/// Digits of an integer the scanner reads: every u64 fits, and `serde_json` reads longer
/// ones as floats, which can be out of range.
const MAX_INT_DIGITS: usize = 20;

/// One JSON header's ext fields, scanned, with pending edits.
#[derive(Debug, Clone)]
pub struct ExtSplice<'a> {
    header: &'a [u8],
    version: i32,
    place: Place,
    entries: Vec<Entry<'a>>,
    /// Fields added after the existing ones, in order.
    added: Vec<(String, String)>,
}

/// Where the ext fields go.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// An `extFields` object: indexes of its `{` and `}`.
    Object { open: usize, close: usize },
    /// No `extFields`: index of the header's closing `}`.
    Absent { close: usize },
}

/// One `"key":"value"` member of the ext object.
#[derive(Debug, Clone)]
struct Entry<'a> {
    key: Cow<'a, str>,
    value: Cow<'a, str>,
    /// Index of the key's opening quote.
    start: usize,
    /// Index of the value's opening quote.
    value_start: usize,
    /// Index just past the value's closing quote.
    end: usize,
    edit: Edit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Edit {
    Keep,
    Remove,
    Replace(String),
}

// === impl ExtSplice ===

impl<'a> ExtSplice<'a> {
    /// Scans a JSON header. `None` when it is not one the scanner reads exactly (see the
    /// module notes): decode it with [`super::Header::decode`] then.
    pub fn scan(header: &'a [u8]) -> Option<Self> {
        let mut c = Cursor { b: header, i: 0 };
        c.ws();
        c.eat(b'{')?;
        let mut place = None;
        let mut entries = Vec::new();
        let (mut code, mut version, mut opaque, mut flag) = (false, None, false, false);
        c.ws();
        if c.peek()? == b'}' {
            return None; // no `code`
        }
        let close = loop {
            let key = c.string()?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            match key.as_ref() {
                "extFields" if place.is_none() => {
                    place = Some(c.ext_object(&mut entries)?);
                }
                "code" if !code => {
                    c.integer()??; // required: `null` is not a code
                    code = true;
                }
                "version" if version.is_none() => version = Some(c.integer()?.unwrap_or(0)),
                "opaque" if !opaque => {
                    c.integer()?;
                    opaque = true;
                }
                "flag" if !flag => {
                    c.integer()?;
                    flag = true;
                }
                "extFields" | "code" | "version" | "opaque" | "flag" => return None,
                _ => c.skip_value(0)?,
            }
            c.ws();
            match c.next()? {
                b',' => c.ws(),
                b'}' => break c.i - 1,
                _ => return None,
            }
        };
        c.ws();
        if c.i != header.len() || !code {
            return None;
        }
        if has_duplicates(&entries) {
            return None;
        }
        Some(Self {
            header,
            // `Header::decode` truncates the same way.
            version: version.unwrap_or(0) as i32,
            place: place.unwrap_or(Place::Absent { close }),
            entries,
            added: Vec::new(),
        })
    }

    /// The header's `version` (0 when absent or null), as [`super::Header`] reads it.
    pub fn version(&self) -> i32 {
        self.version
    }

    /// The current value of ext field `key`, edits included.
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(e) = self.entries.iter().find(|e| e.key == key) {
            return match &e.edit {
                Edit::Keep => Some(&e.value),
                Edit::Replace(v) => Some(v),
                Edit::Remove => self.added_value(key),
            };
        }
        self.added_value(key)
    }

    fn added_value(&self, key: &str) -> Option<&str> {
        self.added
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets ext field `key`: an existing field keeps its place (its key bytes are kept,
    /// its value is written anew), a new one goes after the others.
    pub fn set(&mut self, key: &str, value: String) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            if e.edit != Edit::Remove {
                e.edit = Edit::Replace(value);
                return;
            }
        }
        match self.added.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.added.push((key.to_owned(), value)),
        }
    }

    /// Removes ext field `key` if present.
    pub fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.edit = Edit::Remove;
        }
        self.added.retain(|(k, _)| k != key);
    }

    /// The ext fields as they are now (edits included): in header order, then the added
    /// ones. Keys are distinct.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let kept = self.entries.iter().filter_map(|e| match &e.edit {
            Edit::Keep => Some((e.key.as_ref(), e.value.as_ref())),
            Edit::Replace(v) => Some((e.key.as_ref(), v.as_str())),
            Edit::Remove => None,
        });
        kept.chain(self.added.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// True when an edit changed something (a field set to the value it had counts).
    pub fn is_edited(&self) -> bool {
        !self.added.is_empty() || self.entries.iter().any(|e| e.edit != Edit::Keep)
    }

    /// The header with the edits applied; every byte outside the ext members that were
    /// edited or removed is as it came.
    pub fn finish(&self) -> Vec<u8> {
        let h = self.header;
        let mut out = Vec::with_capacity(h.len() + 32 * self.added.len() + 64);
        match self.place {
            Place::Absent { .. } if self.added.is_empty() => out.extend_from_slice(h),
            Place::Absent { close } => {
                out.extend_from_slice(&h[..close]);
                // Scanning needs `code`: the object has a member before this one.
                out.extend_from_slice(b",\"extFields\":{");
                let mut first = true;
                for (k, v) in &self.added {
                    push_member(&mut out, &mut first, k, v);
                }
                out.push(b'}');
                out.extend_from_slice(&h[close..]);
            }
            Place::Object { open, close } => {
                out.extend_from_slice(&h[..=open]);
                let lead_end = self.entries.first().map_or(close, |e| e.start);
                out.extend_from_slice(&h[open + 1..lead_end]);
                let mut first = true;
                for (i, e) in self.entries.iter().enumerate() {
                    if e.edit == Edit::Remove {
                        continue;
                    }
                    if !first {
                        // The separator as it came (`,` and any whitespace around it).
                        out.extend_from_slice(&h[self.entries[i - 1].end..e.start]);
                    }
                    first = false;
                    match &e.edit {
                        Edit::Replace(v) => {
                            out.extend_from_slice(&h[e.start..e.value_start]);
                            push_json_str(&mut out, v);
                        }
                        _ => out.extend_from_slice(&h[e.start..e.end]),
                    }
                }
                for (k, v) in &self.added {
                    push_member(&mut out, &mut first, k, v);
                }
                if let Some(last) = self.entries.last() {
                    out.extend_from_slice(&h[last.end..close]);
                }
                out.extend_from_slice(&h[close..]);
            }
        }
        out
    }
}

fn has_duplicates(entries: &[Entry<'_>]) -> bool {
    let mut keys: Vec<&str> = entries.iter().map(|e| e.key.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).any(|w| w[0] == w[1])
}

fn push_member(out: &mut Vec<u8>, first: &mut bool, key: &str, value: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    push_json_str(out, key);
    out.push(b':');
    push_json_str(out, value);
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

/// A position in the header being scanned.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn eat_word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// The ext object at the cursor: its string members into `entries`.
    fn ext_object(&mut self, entries: &mut Vec<Entry<'a>>) -> Option<Place> {
        let open = self.i;
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(Place::Object {
                open,
                close: self.i - 1,
            });
        }
        loop {
            let start = self.i;
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let value_start = self.i;
            // Only strings: anything else is normalised by a full decode.
            let value = self.string()?;
            entries.push(Entry {
                key,
                value,
                start,
                value_start,
                end: self.i,
                edit: Edit::Keep,
            });
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => {
                    return Some(Place::Object {
                        open,
                        close: self.i - 1,
                    })
                }
                _ => return None,
            }
        }
    }

    /// A string literal at the cursor, unescaped only if it holds an escape.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        let len = memchr::memchr2(b'"', b'\\', &self.b[start..])?;
        let raw = &self.b[start..start + len];
        if raw.iter().any(|&c| c < 0x20) {
            return None;
        }
        self.i = start + len;
        if self.next()? == b'"' {
            return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
        }
        // An escape: decode the rest into an owned string.
        let mut out = Vec::with_capacity(len + 16);
        out.extend_from_slice(raw);
        self.i -= 1;
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => match self.next()? {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let ch = self.unicode_escape()?;
                        let mut utf8 = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                    }
                    _ => return None,
                },
                c if c < 0x20 => return None,
                c => out.push(c),
            }
        }
        String::from_utf8(out).ok().map(Cow::Owned)
    }

    /// The character of a `\u` escape (the `\u` already read); a surrogate pair makes one
    /// character, a lone surrogate is refused (as `serde_json` refuses it).
    fn unicode_escape(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        match hi {
            0xD800..=0xDBFF => {
                self.eat(b'\\')?;
                self.eat(b'u')?;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return None;
                }
                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
            }
            0xDC00..=0xDFFF => None,
            _ => char::from_u32(hi),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut n = 0;
        for _ in 0..4 {
            let d = char::from(self.next()?).to_digit(16)?;
            n = n * 16 + d;
        }
        Some(n)
    }

    /// An integer or `null` (`Some(None)`); `None` for anything else, floats included.
    fn integer(&mut self) -> Option<Option<i64>> {
        if self.peek()? == b'n' {
            self.eat_word(b"null")?;
            return Some(None);
        }
        let text = self.int_text()?;
        std::str::from_utf8(text)
            .ok()?
            .parse::<i64>()
            .ok()
            .map(Some)
    }

    /// `-?(0|[1-9][0-9]*)` not followed by a fraction or exponent, at most
    /// [`MAX_INT_DIGITS`] digits: its text, sign included.
    fn int_text(&mut self) -> Option<&'a [u8]> {
        let from = self.i;
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        let leading_zero = digits.len() > 1 && digits[0] == b'0';
        // `-0` is a float to serde_json.
        let negative_zero = negative && digits == b"0";
        if digits.is_empty() || digits.len() > MAX_INT_DIGITS || leading_zero || negative_zero {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(&self.b[from..self.i])
    }

    /// Skips one value of any JSON type (floats excepted).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.eat_word(b"true"),
            b'f' => self.eat_word(b"false"),
            b'n' => self.eat_word(b"null"),
            b'-' | b'0'..=b'9' => self.int_text().map(drop),
            b'[' | b'{' if depth >= MAX_DEPTH => None,
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Header, SerializeType};

    fn decoded(bytes: &[u8]) -> Header {
        match Header::decode(SerializeType::Json, bytes) {
            Ok(h) => h,
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn reads_borrowed_and_escaped_values() {
        let h = br#"{"code":310,"extFields":{"a":"PG","b\u0041":"x\"y\\z\u00e9\ud83d\ude00"},"version":409}"#;
        let s = ExtSplice::scan(h).unwrap();
        assert_eq!(s.version(), 409);
        let fields: Vec<_> = s.fields().collect();
        assert_eq!(fields, vec![("a", "PG"), ("bA", "x\"y\\zé😀")]);
        assert!(matches!(s.entries[0].value, Cow::Borrowed(_)));
        assert!(!s.is_edited());
        assert_eq!(s.finish(), h.to_vec(), "no edit, same bytes");
    }

    #[test]
    fn splice_keeps_every_other_byte() {
        let h = b"{ \"code\" : 10, \"extFields\" : { \"AccessKey\" : \"app\" ,\n \"topic\":\"T\",  \"Signature\":\"old\" , \"n\" : \"broker-a\" } , \"x\":[1,{\"y\":null}] }";
        let mut s = ExtSplice::scan(h).unwrap();
        s.remove("Signature");
        s.set("AccessKey", "ours".into());
        s.set("n", "b\"2".into());
        s.set("Signature", "sig".into());
        let out = String::from_utf8(s.finish()).unwrap();
        assert_eq!(
            out,
            "{ \"code\" : 10, \"extFields\" : { \"AccessKey\" : \"ours\" ,\n \"topic\":\"T\" , \"n\" : \"b\\\"2\",\"Signature\":\"sig\" } , \"x\":[1,{\"y\":null}] }",
            "the separator before a kept member is the one that came before it"
        );
        let d = decoded(out.as_bytes());
        assert_eq!(d.ext("n"), Some("b\"2"));
        assert_eq!(d.ext("Signature"), Some("sig"));
    }

    #[test]
    fn removing_the_first_and_last_members_leaves_valid_json() {
        let h = br#"{"code":1,"extFields":{"Signature":"s","a":"1","SecurityToken":"t"}}"#;
        let mut s = ExtSplice::scan(h).unwrap();
        s.remove("Signature");
        s.remove("SecurityToken");
        assert_eq!(s.finish(), br#"{"code":1,"extFields":{"a":"1"}}"#.to_vec());
        s.remove("a");
        assert_eq!(s.finish(), br#"{"code":1,"extFields":{}}"#.to_vec());
        s.set("a", "2".into());
        assert_eq!(s.get("a"), Some("2"));
        assert_eq!(s.finish(), br#"{"code":1,"extFields":{"a":"2"}}"#.to_vec());
    }

    #[test]
    fn absent_ext_fields_are_added() {
        let h = br#"{"code":34,"flag":0,"language":"JAVA","opaque":3}"#;
        let mut s = ExtSplice::scan(h).unwrap();
        assert_eq!(s.fields().count(), 0);
        assert_eq!(s.finish(), h.to_vec(), "nothing added, nothing written");
        s.set("AccessKey", "ak".into());
        let out = s.finish();
        assert_eq!(
            out,
            br#"{"code":34,"flag":0,"language":"JAVA","opaque":3,"extFields":{"AccessKey":"ak"}}"#
                .to_vec()
        );
        assert_eq!(decoded(&out).ext("AccessKey"), Some("ak"));
    }

    #[test]
    fn unusual_headers_are_left_to_the_full_decoder() {
        let refused: &[&[u8]] = &[
            br#"{"code":1,"extFields":{"queueId":3}}"#,
            br#"{"code":1,"extFields":{"a":null}}"#,
            br#"{"code":1,"extFields":{"a":"1","a":"2"}}"#,
            br#"{"code":1,"extFields":{"a":"1","\u0061":"2"}}"#,
            br#"{"code":1,"extFields":null}"#,
            br#"{"code":1,"extFields":{},"extFields":{}}"#,
            br#"{"code":1,"version":"409"}"#,
            br#"{"code":1,"version":409,"version":1}"#,
            br#"{"code":1.5}"#,
            br#"{"code":-0}"#,
            br#"{"code":null}"#,
            br#"{"opaque":1}"#,
            br#"{"code":1,"x":1e3}"#,
            br#"{"code":1,"x":"\ud800"}"#,
            br#"{"code":1,"x":"tab	here"}"#,
            br#"{"code":1} x"#,
            br#"{"code":1,}"#,
            br#"[1]"#,
            b"",
        ];
        for h in refused {
            assert!(
                ExtSplice::scan(h).is_none(),
                "scanned: {}",
                String::from_utf8_lossy(h)
            );
        }
        let deep = format!("{{\"code\":1,\"x\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(ExtSplice::scan(deep.as_bytes()).is_none());
    }

    #[test]
    fn json_strings_are_escaped_as_serde_reads_them() {
        let s = "q\"b\\n\n\u{1}\u{1f}é😀\u{7f}";
        let mut out = Vec::new();
        push_json_str(&mut out, s);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
    }
}
