//! `protocol::messages::map_messages` (pulled messages of a namespaced cluster) on arbitrary
//! bodies: never panics; a rewritten body parses again; unwrapping after wrapping equals
//! unwrapping alone (every record, topic and named property); the identity mapping changes
//! nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketmq_sidecar::protocol::messages::map_messages;
use rocketmq_sidecar::protocol::namespace::Namespace;

fuzz_target!(|data: &[u8]| {
    let Ok(ns) = Namespace::parse("fuzz|ns") else {
        return;
    };
    let wrap = |n: &str| {
        let w = ns.wrap(n);
        (w != n).then(|| w.into_owned())
    };
    let unwrap = |n: &str| {
        let u = ns.unwrap(n);
        (u != n).then(|| u.into_owned())
    };
    let apply = |body: &[u8], f: &dyn Fn(&str) -> Option<String>| -> Option<Vec<u8>> {
        map_messages(body, f)
            .ok()
            .map(|out| out.unwrap_or_else(|| body.to_vec()))
    };
    let Some(wrapped) = apply(data, &wrap) else {
        return; // not a run of records: relayed as it came
    };
    let round_trip = apply(&wrapped, &unwrap).expect("a rewritten body still parses");
    let unwrapped = apply(data, &unwrap).expect("it parsed once");
    assert_eq!(round_trip, unwrapped, "unwrap(wrap(x)) != unwrap(x)");
    if let Ok(Some(same)) = map_messages(data, &|n| Some(n.to_owned())) {
        assert_eq!(same, data, "the identity mapping changed the body");
    }
});
