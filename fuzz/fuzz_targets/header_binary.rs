//! `Header::decode(RocketMq, bytes)` on arbitrary bytes: never panics; whatever it
//! accepts is something the binary form can carry (so `to_binary` must give it back
//! unchanged), and it round-trips through JSON too; `peek_summary` agrees with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketmq_sidecar::protocol::{Header, SerializeType};
use rocketmq_sidecar_fuzz::{binary_can_carry, check_round_trips, check_summary};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::decode(SerializeType::RocketMq, data) else {
        return;
    };
    assert!(
        binary_can_carry(&h),
        "the binary decoder produced a header the binary form cannot carry: {h:?}"
    );
    check_summary(SerializeType::RocketMq, data, &h);
    check_round_trips(&h);
});
