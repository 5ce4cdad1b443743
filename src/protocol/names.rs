//! Names (broker names; topics and groups for namespaces) inside JSON bodies that the
//! sidecar does not otherwise parse. Broker names:
//! LOCK/UNLOCK_BATCH_MQ and their answers, RESET_CONSUMER_CLIENT_OFFSET, QUERY_ASSIGNMENT,
//! consume/topic stats. Several of these are fastjson maps keyed by MessageQueue *objects*
//! (`{{"brokerName":"b","queueId":0,"topic":"t"}:12}`), which no JSON parser reads, so
//! names are replaced in the text: every `"brokerName":"<name>"` pair is mapped and
//! everything else is copied byte for byte.

/// Maps every `"brokerName":"..."` value in `body`. Returns `None` when nothing changed.
pub fn map_broker_names(body: &[u8], map: &dyn Fn(&str) -> Option<String>) -> Option<Vec<u8>> {
    map_string_values(body, &["brokerName"], map)
}

/// Maps every string value of a key in `keys` (`"key":"value"`, at any depth, object keys
/// included) in `body`. Returns `None` when nothing changed.
pub fn map_string_values(
    body: &[u8],
    keys: &[&str],
    map: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // bytes of `body` already copied into `out`
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'"' {
            i += 1;
            continue;
        }
        let key_end = string_end(body, i);
        let is_name_key = key_end >= i + 2
            && keys
                .iter()
                .any(|k| &body[i + 1..key_end - 1] == k.as_bytes());
        i = key_end;
        if !is_name_key {
            continue;
        }
        let mut j = skip_ws(body, i);
        if body.get(j) != Some(&b':') {
            continue;
        }
        j = skip_ws(body, j + 1);
        if body.get(j) != Some(&b'"') {
            continue;
        }
        let val_end = string_end(body, j);
        i = val_end;
        if val_end < j + 2 || body[val_end - 1] != b'"' {
            break; // unterminated string: leave the rest as it is
        }
        let inner = &body[j + 1..val_end - 1];
        // Names are plain text; a value with escapes is left alone.
        let Ok(name) = std::str::from_utf8(inner) else {
            continue;
        };
        if name.contains('\\') {
            continue;
        }
        if let Some(mapped) = map(name) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
            buf.extend_from_slice(&body[copied..j + 1]);
            buf.extend_from_slice(mapped.as_bytes());
            buf.push(b'"');
            copied = val_end;
        }
    }
    let mut buf = out?;
    buf.extend_from_slice(&body[copied..]);
    Some(buf)
}

/// Index just past the string token starting at `start` (which holds `"`); the end of
/// `body` when it is not closed.
pub(crate) fn string_end(body: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    body.len()
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && body[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}
