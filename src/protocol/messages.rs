//! Stored messages as brokers hand them out (the body of a pull answer, of a message query,
//! of a transaction check): a run of records in the commit-log layout
//! (`MessageDecoder.decode`):
//!
//! ```text
//! totalSize i32 | magic i32 | bodyCRC i32 | queueId i32 | flag i32 | queueOffset i64 |
//! physicalOffset i64 | sysFlag i32 | bornTimestamp i64 | bornHost 8|20 | storeTimestamp i64 |
//! storeHost 8|20 | reconsumeTimes i32 | preparedTransactionOffset i64 |
//! bodyLength i32 | body | topicLength i8 (v1) or i16 (v2) | topic | propertiesLength i16 | properties
//! ```
//!
//! [`map_messages`] changes the topic and the properties that name a topic or group of each
//! record, in one pass, copying everything else (bodies included, compressed or not) as it
//! is, and fixing each record's `totalSize`.

/// `MessageDecoder.MESSAGE_MAGIC_CODE`: one-byte topic length.
pub const MAGIC_V1: i32 = -626_843_481;
/// `MessageDecoder.MESSAGE_MAGIC_CODE_V2`: two-byte topic length.
pub const MAGIC_V2: i32 = -626_843_477;
/// `sysFlag` bit: the born host is IPv6 (16 + 4 bytes instead of 4 + 4).
const BORNHOST_V6: i32 = 1 << 4;
/// `sysFlag` bit: the store host is IPv6.
const STOREHOST_V6: i32 = 1 << 5;
/// Between a property's name and its value.
const NAME_VALUE: u8 = 1;
/// Between properties.
const PROPERTY_END: u8 = 2;

/// Properties whose value is a topic or a group: the original topic of a retry message, the
/// real topic of a scheduled one, the producer group of a transactional one.
pub const NAMED_PROPERTIES: [&str; 3] = ["RETRY_TOPIC", "REAL_TOPIC", "PGROUP"];

/// Why a run of records could not be read; the body is then relayed as it came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A record runs past the end of the body, or a length is negative.
    #[error("message record at byte {0} is truncated or has a bad length")]
    Truncated(usize),
    /// Not a message record.
    #[error("message record at byte {at} has magic {magic:#x}")]
    Magic {
        /// Where.
        at: usize,
        /// What was there.
        magic: i32,
    },
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at + 4)
        .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Maps the topic and the [`NAMED_PROPERTIES`] of every record in `body`. `None` when
/// nothing changed (the caller relays the body as it came).
pub fn map_messages(
    body: &[u8],
    map: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, MessageError> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut pos = 0;
    while pos < body.len() {
        let bad = MessageError::Truncated(pos);
        let total = i32_at(body, pos).ok_or(bad.clone())?;
        let total = usize::try_from(total).map_err(|_| bad.clone())?;
        let end = pos
            .checked_add(total)
            .filter(|e| *e <= body.len())
            .ok_or(bad.clone())?;
        let magic = i32_at(body, pos + 4).ok_or(bad.clone())?;
        let wide_topic = match magic {
            MAGIC_V1 => false,
            MAGIC_V2 => true,
            _ => return Err(MessageError::Magic { at: pos, magic }),
        };
        let sys_flag = i32_at(body, pos + 36).ok_or(bad.clone())?;
        let born = if sys_flag & BORNHOST_V6 == 0 { 8 } else { 20 };
        let store = if sys_flag & STOREHOST_V6 == 0 { 8 } else { 20 };
        // totalSize..sysFlag (40), bornTimestamp (8), bornHost, storeTimestamp (8),
        // storeHost, reconsumeTimes (4), preparedTransactionOffset (8).
        let body_len_at = pos + 40 + 8 + born + 8 + store + 4 + 8;
        let body_len = i32_at(body, body_len_at).ok_or(bad.clone())?;
        let body_len = usize::try_from(body_len).map_err(|_| bad.clone())?;
        let topic_len_at = body_len_at + 4 + body_len;
        let (topic_len, topic_at) = if wide_topic {
            let b = body
                .get(topic_len_at..topic_len_at + 2)
                .ok_or(bad.clone())?;
            (
                usize::from(u16::from_be_bytes([b[0], b[1]])),
                topic_len_at + 2,
            )
        } else {
            let b = *body.get(topic_len_at).ok_or(bad.clone())?;
            (usize::from(b), topic_len_at + 1)
        };
        let props_len_at = topic_at + topic_len;
        let pl = body
            .get(props_len_at..props_len_at + 2)
            .ok_or(bad.clone())?;
        let props_len = usize::from(u16::from_be_bytes([pl[0], pl[1]]));
        let props_at = props_len_at + 2;
        if props_at + props_len > end {
            return Err(bad);
        }
        // A topic that is not UTF-8 is no name the mapping knows: left byte for byte.
        let new_topic = std::str::from_utf8(&body[topic_at..props_len_at])
            .ok()
            .and_then(map);
        let props = &body[props_at..props_at + props_len];
        let new_props = map_properties(props, map);
        if new_topic.is_some() || new_props.is_some() {
            let topic_bytes = new_topic
                .as_deref()
                .map_or(&body[topic_at..props_len_at], str::as_bytes);
            let props_bytes = new_props.as_deref().unwrap_or(props);
            let max_topic = if wide_topic { u16::MAX as usize } else { 127 };
            if topic_bytes.len() > max_topic || props_bytes.len() > i16::MAX as usize {
                // Longer than the record can say: leave this record as it is.
                pos = end;
                continue;
            }
            let buf = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 256));
            buf.extend_from_slice(&body[copied..pos]);
            let new_total = (topic_len_at - pos)
                + if wide_topic { 2 } else { 1 }
                + topic_bytes.len()
                + 2
                + props_bytes.len()
                + (end - (props_at + props_len));
            buf.extend_from_slice(&(new_total as i32).to_be_bytes());
            buf.extend_from_slice(&body[pos + 4..topic_len_at]);
            if wide_topic {
                buf.extend_from_slice(&(topic_bytes.len() as u16).to_be_bytes());
            } else {
                buf.push(topic_bytes.len() as u8);
            }
            buf.extend_from_slice(topic_bytes);
            buf.extend_from_slice(&(props_bytes.len() as u16).to_be_bytes());
            buf.extend_from_slice(props_bytes);
            buf.extend_from_slice(&body[props_at + props_len..end]);
            copied = end;
        }
        pos = end;
    }
    Ok(out.map(|mut buf| {
        buf.extend_from_slice(&body[copied..]);
        buf
    }))
}

/// Maps the values of [`NAMED_PROPERTIES`] in a properties string
/// (`name\x01value\x02name\x01value\x02`). `None` when nothing changed.
pub fn map_properties(props: &[u8], map: &dyn Fn(&str) -> Option<String>) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut start = 0;
    while start < props.len() {
        let end = props[start..]
            .iter()
            .position(|b| *b == PROPERTY_END)
            .map_or(props.len(), |i| start + i);
        let pair = &props[start..end];
        if let Some(sep) = pair.iter().position(|b| *b == NAME_VALUE) {
            let name = &pair[..sep];
            if NAMED_PROPERTIES.iter().any(|n| n.as_bytes() == name) {
                let value_at = start + sep + 1;
                if let Ok(value) = std::str::from_utf8(&props[value_at..end]) {
                    if let Some(mapped) = map(value) {
                        let buf = out.get_or_insert_with(|| Vec::with_capacity(props.len() + 64));
                        buf.extend_from_slice(&props[copied..value_at]);
                        buf.extend_from_slice(mapped.as_bytes());
                        copied = end;
                    }
                }
            }
        }
        start = end + 1;
    }
    out.map(|mut buf| {
        buf.extend_from_slice(&props[copied..]);
        buf
    })
}

/// A stored-message record, for tests and fuzzing: `topic`, `properties`, `body`, IPv4 hosts.
pub fn encode_record(
    magic: i32,
    topic: &str,
    properties: &[u8],
    payload: &[u8],
    queue_offset: i64,
) -> Vec<u8> {
    encode_record_with(0, magic, topic, properties, payload, queue_offset)
}

/// [`encode_record`] with `sys_flag` (IPv6 host bits give 16-byte addresses; the compressed
/// bit only marks the payload).
pub fn encode_record_with(
    sys_flag: i32,
    magic: i32,
    topic: &str,
    properties: &[u8],
    payload: &[u8],
    queue_offset: i64,
) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&0i32.to_be_bytes()); // totalSize, set below
    r.extend_from_slice(&magic.to_be_bytes());
    r.extend_from_slice(&0x1234_5678i32.to_be_bytes()); // bodyCRC
    r.extend_from_slice(&3i32.to_be_bytes()); // queueId
    r.extend_from_slice(&0i32.to_be_bytes()); // flag
    r.extend_from_slice(&queue_offset.to_be_bytes());
    r.extend_from_slice(&(4096 + queue_offset).to_be_bytes()); // physicalOffset
    r.extend_from_slice(&sys_flag.to_be_bytes());
    r.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    let host = |v6: bool, last: u8| -> Vec<u8> {
        let mut h = if v6 { vec![0xfd; 15] } else { vec![10, 0, 0] };
        h.push(last);
        h.extend_from_slice(&[0, 0, 0x30, 0x39]);
        h
    };
    r.extend_from_slice(&host(sys_flag & BORNHOST_V6 != 0, 1));
    r.extend_from_slice(&1_700_000_000_001i64.to_be_bytes());
    r.extend_from_slice(&host(sys_flag & STOREHOST_V6 != 0, 2));
    r.extend_from_slice(&1i32.to_be_bytes()); // reconsumeTimes
    r.extend_from_slice(&0i64.to_be_bytes());
    r.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    r.extend_from_slice(payload);
    if magic == MAGIC_V2 {
        r.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    } else {
        r.push(topic.len() as u8);
    }
    r.extend_from_slice(topic.as_bytes());
    r.extend_from_slice(&(properties.len() as u16).to_be_bytes());
    r.extend_from_slice(properties);
    let total = r.len() as i32;
    r[..4].copy_from_slice(&total.to_be_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwrap_ns(name: &str) -> Option<String> {
        let ns = crate::protocol::namespace::Namespace::parse("ns").unwrap();
        let out = ns.unwrap(name);
        (out != name).then(|| out.into_owned())
    }

    #[test]
    fn topics_and_named_properties_change_and_nothing_else() {
        let props =
            b"UNIQ_KEY\x01ABC\x02RETRY_TOPIC\x01ns%Orders\x02PGROUP\x01ns%PG\x02KEYS\x01k1\x02";
        let a = encode_record(MAGIC_V1, "%RETRY%ns%G", props, b"\x00\x01body-bytes\xff", 7);
        let b = encode_record(MAGIC_V2, "ns%Orders", b"KEYS\x01k2\x02", b"second", 8);
        let c = encode_record(MAGIC_V1, "OtherTopic", b"KEYS\x01k3\x02", b"third", 9);
        let batch = [a.clone(), b, c.clone()].concat();
        let out = map_messages(&batch, &unwrap_ns).unwrap().unwrap();
        let expect = [
            encode_record(
                MAGIC_V1,
                "%RETRY%G",
                b"UNIQ_KEY\x01ABC\x02RETRY_TOPIC\x01Orders\x02PGROUP\x01PG\x02KEYS\x01k1\x02",
                b"\x00\x01body-bytes\xff",
                7,
            ),
            encode_record(MAGIC_V2, "Orders", b"KEYS\x01k2\x02", b"second", 8),
            c.clone(),
        ]
        .concat();
        assert_eq!(out, expect);
        // Nothing to change: no copy.
        assert_eq!(map_messages(&c, &unwrap_ns).unwrap(), None);
        assert_eq!(map_messages(b"", &unwrap_ns).unwrap(), None);
    }

    #[test]
    fn ipv6_hosts_and_compressed_bodies_are_stepped_over() {
        // sysFlag: compressed body (bit 0), IPv6 born and store hosts (bits 4 and 5).
        let flag = 1 | BORNHOST_V6 | STOREHOST_V6;
        let zipped = [0x78, 0x9c, 0x01, 0x02, 0x03, 0xff];
        let a = encode_record_with(flag, MAGIC_V2, "ns%T", b"PGROUP\x01ns%PG\x02", &zipped, 5);
        let out = map_messages(&a, &unwrap_ns).unwrap().unwrap();
        assert_eq!(
            out,
            encode_record_with(flag, MAGIC_V2, "T", b"PGROUP\x01PG\x02", &zipped, 5)
        );
    }

    /// Found by the `messages` fuzz target: a lossy UTF-8 conversion changed a topic that was
    /// not UTF-8 when it was mapped.
    #[test]
    fn a_topic_that_is_not_utf8_is_left_byte_for_byte() {
        let mut a = encode_record(MAGIC_V1, "ns%T", b"", b"one", 1);
        let topic_at = a.len() - 2 - 4; // ..., topic (4 bytes), properties length (2)
        a[topic_at + 3] = 0xff;
        let wrap = |n: &str| Some(format!("x%{n}"));
        assert_eq!(map_messages(&a, &wrap).unwrap(), None);
    }

    #[test]
    fn a_bad_record_is_an_error_not_a_panic() {
        let a = encode_record(MAGIC_V1, "ns%T", b"", b"x", 1);
        for cut in [3, 10, a.len() - 1] {
            assert!(map_messages(&a[..cut], &unwrap_ns).is_err(), "cut at {cut}");
        }
        let mut wrong = a.clone();
        wrong[4..8].copy_from_slice(&7i32.to_be_bytes());
        assert!(matches!(
            map_messages(&wrong, &unwrap_ns),
            Err(MessageError::Magic { .. })
        ));
        let mut negative = a;
        negative[..4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(map_messages(&negative, &unwrap_ns).is_err());
    }

    #[test]
    fn properties_without_named_values_are_left_alone() {
        assert_eq!(
            map_properties(b"KEYS\x01a\x02TAGS\x01b\x02", &unwrap_ns),
            None
        );
        assert_eq!(
            map_properties(b"PGROUP\x01ns%PG", &unwrap_ns).unwrap(),
            b"PGROUP\x01PG".to_vec()
        );
    }
}
