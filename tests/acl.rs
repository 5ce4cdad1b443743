//! ACL credentials: loading from values and files, reload across a kubelet-style
//! `..data` symlink swap, and broken updates that keep the last good credentials; the
//! rewriter's signing of JSON requests by splicing, against the decoding path.
#![allow(clippy::unwrap_used)]

mod support;

use support::{kubelet_write, tempdir};

use std::path::Path;

use rocketmq_sidecar::acl::credentials::{
    CredentialError, CredentialSources, CredentialStore, ReloadOutcome, Source,
};

fn file_sources(root: &Path) -> CredentialSources {
    CredentialSources {
        access_key: Some(Source::File(root.join("accessKey"))),
        secret_key: Some(Source::File(root.join("secretKey"))),
        security_token: None,
    }
}

#[test]
fn nothing_configured_means_no_signing() {
    let store = CredentialStore::new(CredentialSources::default()).unwrap();
    assert!(store.get().is_none());
    assert!(!store.is_configured());
}

#[test]
fn values_are_trimmed_and_both_keys_are_required() {
    let only_ak = CredentialSources {
        access_key: Some(Source::Value("ak".into())),
        ..Default::default()
    };
    assert_eq!(
        only_ak.load().unwrap_err(),
        CredentialError::Incomplete("AccessKey", "SecretKey")
    );
    let both = CredentialSources {
        access_key: Some(Source::Value(" role-a\n".into())),
        secret_key: Some(Source::Value("secret-1\n".into())),
        security_token: None,
    };
    let c = both.load().unwrap().unwrap();
    assert_eq!(c.access_key, "role-a");
    assert_eq!(c.secret_key.expose(), "secret-1");
}

#[test]
fn reload_follows_the_symlink_swap_and_keeps_old_credentials_when_broken() {
    let root = tempdir("acl");
    kubelet_write(
        &root,
        "v1",
        &[("accessKey", "role-a"), ("secretKey", "secret-1")],
    );
    let store = CredentialStore::new(file_sources(&root)).unwrap();
    assert_eq!(store.get().unwrap().secret_key.expose(), "secret-1");
    assert_eq!(store.reload(), ReloadOutcome::Unchanged);

    kubelet_write(
        &root,
        "v2",
        &[("accessKey", "role-a"), ("secretKey", "secret-2")],
    );
    assert_eq!(store.reload(), ReloadOutcome::Updated);
    assert_eq!(store.get().unwrap().secret_key.expose(), "secret-2");

    kubelet_write(
        &root,
        "v3",
        &[("accessKey", "role-a"), ("secretKey", "  \n")],
    );
    match store.reload() {
        ReloadOutcome::Failed(reason) => {
            assert!(reason.contains("SecretKey is empty"), "{reason}");
            assert!(!reason.contains("secret-2"));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        store.get().unwrap().secret_key.expose(),
        "secret-2",
        "last good credentials stay"
    );
    assert_eq!(store.failures(), 1);

    std::fs::remove_file(root.join("secretKey")).unwrap();
    assert!(
        matches!(store.reload(), ReloadOutcome::Failed(r) if r.contains("cannot read SecretKey"))
    );
    assert_eq!(store.get().unwrap().secret_key.expose(), "secret-2");
    std::fs::remove_dir_all(&root).ok();
}

/// Known answers computed by Apache RocketMQ's own `AclClientRPCHook` (rocketmq-acl 4.9.8,
/// cross-checked against rocketmq-client 5.3.3), regenerated and compared by
/// `tests/interop/test_acl_vectors.py`. Our signer must give the same Signature, and for
/// `QUERY_MESSAGE` the one each server version verifies.
#[test]
fn signatures_match_the_official_java_implementation() {
    use rocketmq_sidecar::acl::{sign_request, Credentials, SecretKey, UniqueKeyRule};
    use rocketmq_sidecar::protocol::{Header, SerializeType};
    use serde_json::Value;

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/acl_vectors.json"
    ))
    .unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 9, "fixture has every case");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    };
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let body = case["body_base64"].as_str().map(b64).unwrap_or_default();
        let creds = Credentials {
            access_key: case["access_key"].as_str().unwrap().to_owned(),
            secret_key: SecretKey::new(case["secret_key"].as_str().unwrap()),
            security_token: case["security_token"].as_str().map(str::to_owned),
        };
        let version = case["version"].as_i64().unwrap() as i32;
        let base = match case.get("ext_json_in").and_then(Value::as_str) {
            // As a C++ client sends it: JSON numbers and booleans in extFields.
            Some(raw) => Header::decode(SerializeType::Json, raw.as_bytes()).unwrap(),
            None => {
                let mut h = Header::request(case["code"].as_i64().unwrap() as i32, 1);
                h.version = version;
                for (k, v) in case["ext_fields_in"].as_object().unwrap() {
                    h.set_ext(k, v.as_str().unwrap());
                }
                h
            }
        };
        let has_unique = base.ext("_UNIQUE_KEY_QUERY").is_some();
        let java = case["signature"].as_str().unwrap();
        let without = case["signature_without_unique_key"]
            .as_str()
            .unwrap_or(java);
        for (rule, expected) in [
            (UniqueKeyRule::Excluded, without),
            (
                UniqueKeyRule::ByRequestVersion,
                if version > 399 { java } else { without },
            ),
        ] {
            let mut h = base.clone();
            sign_request(&mut h, &body, &creds, rule);
            assert_eq!(h.ext("Signature"), Some(expected), "{name} with {rule:?}");
            if !has_unique || expected == java {
                let out = case["ext_fields_out"].as_object().unwrap();
                let ours = h.ext_fields.clone().unwrap();
                assert_eq!(
                    ours.len(),
                    out.len(),
                    "{name}: same fields as the Java hook leaves"
                );
                for (k, v) in out {
                    assert_eq!(ours.get(k), Some(v), "{name}: field {k}");
                }
            }
        }
    }
}

/// A rewriter for a cluster with prefix `new~` and credentials (the 5.x rule).
fn signing_rewriter() -> rocketmq_sidecar::proxy::rename::FrameRewriter {
    use rocketmq_sidecar::config::UniqueKeyRuleSetting;
    use rocketmq_sidecar::metrics::Metrics;
    use rocketmq_sidecar::proxy::rename::{FrameRewriter, Renamer};
    use rocketmq_sidecar::proxy::signing::Signer;
    use rocketmq_sidecar::Target;
    use std::sync::Arc;

    let store = CredentialStore::new(CredentialSources {
        access_key: Some(Source::Value("sidecar-ak".into())),
        secret_key: Some(Source::Value("sidecar-sk".into())),
        security_token: Some(Source::Value("sts".into())),
    })
    .unwrap();
    let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
    let signer = Signer::new(Target::New, store, UniqueKeyRuleSetting::V5, metrics);
    FrameRewriter::new(Renamer::new("new~"), Some(Arc::new(signer)), None)
}

/// What the decoding path makes of `header`: names without the prefix, then signed.
fn decoded_and_signed(
    form: rocketmq_sidecar::protocol::SerializeType,
    header: &[u8],
    body: &[u8],
) -> rocketmq_sidecar::protocol::Header {
    use rocketmq_sidecar::acl::{sign_request, Credentials, SecretKey, UniqueKeyRule};
    let mut h = rocketmq_sidecar::protocol::Header::decode(form, header).unwrap();
    for key in ["bname", "n"] {
        if let Some(v) = h
            .ext(key)
            .and_then(|v| v.strip_prefix("new~"))
            .map(str::to_owned)
        {
            h.set_ext(key, v);
        }
    }
    let creds = Credentials {
        access_key: "sidecar-ak".into(),
        secret_key: SecretKey::new("sidecar-sk"),
        security_token: Some("sts".into()),
    };
    sign_request(&mut h, body, &creds, UniqueKeyRule::ByRequestVersion);
    h
}

#[test]
fn the_rewriter_splices_json_requests_and_agrees_with_the_decoding_path() {
    use rocketmq_sidecar::acl::{signature, SecretKey, UniqueKeyRule};
    use rocketmq_sidecar::protocol::{encode_frame, Header, OutFrame, RawFrame, SerializeType};

    let rw = signing_rewriter();
    let body: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 241) as u8).collect();
    // Not in the order `Header::to_json` writes, with whitespace: a decode and re-encode
    // would not keep these bytes.
    let spliced_json = br#"{"version":409, "code":310,"language":"JAVA","extFields":{"a":"PG","b":"T","n":"new~broker-a","AccessKey":"app","Signature":"bogus","SecurityToken":"app-sts","e":"caf\u00e9"},"opaque":7, "flag":0,"serializeTypeCurrentRPC":"JSON"}"#;
    // C++ puts numbers into extFields: the scanner leaves those to the full decode.
    let cpp_json = br#"{"code":310,"extFields":{"a":"PG","b":"T","n":"new~broker-a","d":4},"flag":0,"language":"CPP","opaque":8,"version":409}"#;
    let binary = Header::decode(SerializeType::Json, spliced_json)
        .unwrap()
        .to_binary();
    let cases: [(SerializeType, &[u8], bool); 3] = [
        (SerializeType::Json, spliced_json, true),
        (SerializeType::Json, cpp_json, false),
        (SerializeType::RocketMq, &binary, false),
    ];
    for (form, header, splices) in cases {
        let raw = encode_frame(form, header, &body);
        let frame = RawFrame::parse(raw, usize::MAX).unwrap();
        let body_at = frame.body().as_ptr();
        let out = rw.client_to_broker(frame).unwrap();
        let OutFrame::Split {
            head,
            body: sent_body,
        } = &out
        else {
            panic!("a signed frame is a new head and the body: {out:?}");
        };
        assert_eq!(sent_body.as_ptr(), body_at, "the body is not copied");
        if splices {
            // Everything before the ext object is as it came.
            let at = header
                .windows(13)
                .position(|w| w == b"\"extFields\":{")
                .unwrap();
            assert_eq!(&head[8..8 + at + 13], &header[..at + 13]);
            assert!(head.ends_with(br#"},"opaque":7, "flag":0,"serializeTypeCurrentRPC":"JSON"}"#));
        }
        let sent = RawFrame::parse(out.into_bytes(), usize::MAX).unwrap();
        assert_eq!(&sent.body()[..], &body[..]);
        let h = Header::decode(SerializeType::Json, sent.header_bytes()).unwrap();
        assert_eq!(h, decoded_and_signed(form, header, &body), "{form:?}");
        assert_eq!(h.ext("n"), Some("broker-a"));
        assert_eq!(h.ext("SecurityToken"), Some("sts"));
        let expected = signature(
            h.ext_fields.as_ref().unwrap(),
            &body,
            &SecretKey::new("sidecar-sk"),
            UniqueKeyRule::ByRequestVersion,
            409,
        );
        assert_eq!(h.ext("Signature"), Some(expected.as_str()));
    }
}
