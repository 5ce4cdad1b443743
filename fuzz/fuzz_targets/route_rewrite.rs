//! `protocol::route` on arbitrary name-server bodies: `parse_lenient`, then
//! `rewrite_topic_route`, `rewrite_cluster_info` and `rewrite_topic_list` with a small
//! reversible `RouteMapper`, then `to_compact_json`.
//!
//! Asserts: no panic; `quote_bare_keys` leaves standard JSON as it is; the compact output
//! parses back with plain serde_json to the same value (before and after rewriting); when
//! every rewrite succeeds, no address the mapper would replace is left
//! (`broker_addresses`) and the inverse mapping gives back the parsed body exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketmq_sidecar::protocol::route::{
    broker_addresses, parse_lenient, quote_bare_keys, rewrite_cluster_info, rewrite_topic_list,
    rewrite_topic_route, to_compact_json, RouteMapper,
};
use rocketmq_sidecar_fuzz::{json_eq, Backward, Forward};
use serde_json::Value;

fn reparses_to(value: &Value) {
    let text = to_compact_json(value);
    match serde_json::from_slice::<Value>(&text) {
        Ok(back) => assert!(json_eq(&back, value), "compact JSON changed the value"),
        Err(e) => panic!("to_compact_json wrote invalid JSON: {e}"),
    }
}

/// All three rewrites; true when every one accepted the body's shape.
fn rewrite_all(v: &mut Value, mapper: &dyn RouteMapper) -> bool {
    let route = rewrite_topic_route(v, mapper).is_ok();
    let cluster = rewrite_cluster_info(v, mapper).is_ok();
    let list = rewrite_topic_list(v, mapper).is_ok();
    route && cluster && list
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let quoted = quote_bare_keys(text);
        if serde_json::from_str::<Value>(text).is_ok() {
            assert_eq!(quoted, text, "quote_bare_keys changed standard JSON");
        }
    }
    let Ok(parsed) = parse_lenient(data) else {
        return;
    };
    reparses_to(&parsed);

    let mut v = parsed.clone();
    if !rewrite_all(&mut v, &Forward) {
        return;
    }
    reparses_to(&v);
    for addr in broker_addresses(&v) {
        assert!(
            Forward.local_addr(&addr).is_none() || addr.starts_with("local/"),
            "upstream address {addr:?} survived the rewrite"
        );
    }
    assert!(
        rewrite_all(&mut v, &Backward),
        "the rewritten body lost its shape"
    );
    assert!(
        json_eq(&v, &parsed),
        "rewriting back did not restore the body:\n  {parsed}\n  {v}"
    );
});
