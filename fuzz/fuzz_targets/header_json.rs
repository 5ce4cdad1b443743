//! `Header::decode(Json, bytes)` on arbitrary bytes: never panics; a header it accepts
//! reads back unchanged from `to_json`, from `encode_frame` through the frame decoder,
//! and from `to_binary` when the binary form can carry it; `peek_summary` agrees with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketmq_sidecar::protocol::{Header, SerializeType};
use rocketmq_sidecar_fuzz::{check_round_trips, check_summary};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::decode(SerializeType::Json, data) else {
        return;
    };
    check_summary(SerializeType::Json, data, &h);
    check_round_trips(&h);
});
