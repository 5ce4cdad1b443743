//! `protocol::names::map_broker_names` on arbitrary bodies (LOCK_BATCH_MQ, reset-offset
//! and other fastjson bodies keyed by MessageQueue objects): never panics; adding a
//! prefix and stripping it again gives back the exact bytes; only names change; the
//! identity mapping changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketmq_sidecar::protocol::names::map_broker_names;
use rocketmq_sidecar_fuzz::NAME_PREFIX;

fuzz_target!(|data: &[u8]| {
    let forward = map_broker_names(data, &|n| Some(format!("{NAME_PREFIX}{n}")));
    let sent = match &forward {
        Some(out) => {
            assert_ne!(&out[..], data, "Some(..) means something changed");
            let grown = out.len() - data.len();
            assert_eq!(grown % NAME_PREFIX.len(), 0, "only prefixes were added");
            out.clone()
        }
        None => data.to_vec(),
    };
    let back = map_broker_names(&sent, &|n| n.strip_prefix(NAME_PREFIX).map(str::to_owned));
    assert_eq!(
        forward.is_some(),
        back.is_some(),
        "the same names are found"
    );
    assert_eq!(
        back.unwrap_or(sent),
        data,
        "stripping the prefix undoes adding it"
    );

    if let Some(same) = map_broker_names(data, &|n| Some(n.to_owned())) {
        assert_eq!(same, data, "the identity mapping changed the body");
    }
    assert!(map_broker_names(data, &|_| None).is_none());
});
