//! The ACL signer (`acl::sign_request`) on a decoded header and an arbitrary body.
//! Input: `[flags][header length: u16 BE][header][body...]`; flags bit 0 picks the binary
//! header form, bit 1 the 4.9.x `_UNIQUE_KEY_QUERY` rule, bit 2 adds a SecurityToken.
//!
//! Asserts: no panic; signing twice, or signing the original again, gives the same header;
//! only AccessKey, SecurityToken and Signature change; the signature is what a server
//! recomputes (`acl::signature`) from the JSON header the sidecar sends, and from the
//! binary form when it can carry the header. For JSON headers, the splice path
//! (`acl::sign_json_header`, no decode) either declines or gives a header that decodes to
//! the same header as the decoding path (so the same signature); it never accepts a header
//! the decoder rejects, and unedited it gives back the bytes it read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketmq_sidecar::acl::sign::{ACCESS_KEY, SECURITY_TOKEN, SIGNATURE};
use rocketmq_sidecar::acl::{
    sign_json_header, sign_request, signature, Credentials, SecretKey, UniqueKeyRule,
};
use rocketmq_sidecar::protocol::json_ext::ExtSplice;
use rocketmq_sidecar::protocol::{Header, SerializeType};
use rocketmq_sidecar_fuzz::{binary_can_carry, header_eq};

/// What a server verifies: the signature over the ext fields it decoded.
fn server_verifies(
    wire: &[u8],
    form: SerializeType,
    body: &[u8],
    c: &Credentials,
    rule: UniqueKeyRule,
) {
    let h = match Header::decode(form, wire) {
        Ok(h) => h,
        Err(e) => panic!("signed header does not decode ({form:?}): {e}"),
    };
    let ext = h.ext_fields.clone().unwrap_or_default();
    let expected = signature(&ext, body, &c.secret_key, rule, h.version);
    assert_eq!(
        h.ext(SIGNATURE),
        Some(expected.as_str()),
        "server would reject ({form:?})"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, hi, lo], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let header_len = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
    let (header, body) = rest.split_at(header_len);
    let form = if flags & 1 == 0 {
        SerializeType::Json
    } else {
        SerializeType::RocketMq
    };
    let rule = if flags & 2 == 0 {
        UniqueKeyRule::ByRequestVersion
    } else {
        UniqueKeyRule::Excluded
    };
    let creds = Credentials {
        access_key: "RocketMQ".to_owned(),
        secret_key: SecretKey::new("12345678"),
        security_token: (flags & 4 != 0).then(|| "sts-token".to_owned()),
    };
    let spliced = match form {
        SerializeType::Json => sign_json_header(header, body, &creds, rule),
        SerializeType::RocketMq => None,
    };
    if form == SerializeType::Json {
        if let Some(scan) = ExtSplice::scan(header) {
            let same = scan.finish() == header;
            assert!(same, "an unedited splice changed the header");
        }
    }
    let Ok(original) = Header::decode(form, header) else {
        assert!(
            spliced.is_none(),
            "the splice path signed a header the decoder rejects"
        );
        return;
    };

    let mut signed = original.clone();
    sign_request(&mut signed, body, &creds, rule);
    let sig = signed.ext(SIGNATURE).map(str::to_owned);
    assert!(
        sig.as_ref().is_some_and(|s| s.len() == 28),
        "no HMAC-SHA1 signature: {sig:?}"
    );
    assert_eq!(signed.ext(ACCESS_KEY), Some("RocketMQ"));
    assert_eq!(signed.ext(SECURITY_TOKEN), creds.security_token.as_deref());

    let mut twice = signed.clone();
    sign_request(&mut twice, body, &creds, rule);
    assert!(
        header_eq(&twice, &signed),
        "signing a signed header changed it"
    );
    let mut again = original.clone();
    sign_request(&mut again, body, &creds, rule);
    assert!(header_eq(&again, &signed), "signing is not deterministic");

    // Nothing but the three ACL fields changed.
    let mut stripped = signed.clone();
    let mut orig = original.clone();
    for h in [&mut stripped, &mut orig] {
        if let Some(ext) = h.ext_fields.as_mut() {
            for k in [ACCESS_KEY, SECURITY_TOKEN, SIGNATURE] {
                ext.shift_remove(k);
            }
        }
        if h.ext_fields.as_ref().is_some_and(|e| e.is_empty()) {
            h.ext_fields = None;
        }
    }
    assert_eq!(stripped, orig, "signing changed more than the ACL fields");

    if let Some(spliced) = &spliced {
        let h = match Header::decode(SerializeType::Json, spliced) {
            Ok(h) => h,
            Err(e) => panic!("the spliced header does not decode: {e}"),
        };
        assert!(
            header_eq(&h, &signed),
            "the splice path and the decoding path disagree"
        );
        server_verifies(spliced, SerializeType::Json, body, &creds, rule);
    }

    server_verifies(&signed.to_json(), SerializeType::Json, body, &creds, rule);
    if binary_can_carry(&signed) {
        server_verifies(
            &signed.to_binary(),
            SerializeType::RocketMq,
            body,
            &creds,
            rule,
        );
    }
});
