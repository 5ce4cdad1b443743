//! ACL signing through the sidecar against in-process fakes that authenticate like a
//! 5.x broker: requests to a cluster with credentials are re-signed after every rewrite,
//! requests to a cluster without credentials pass byte for byte, broker requests and
//! responses are never touched, credential files are reloaded, the credential check
//! reports each outcome, and the SecretKey appears nowhere. A large request that is renamed
//! and re-signed reaches the broker exactly as expected, its body as the app sent it.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;

const AK: &str = "sidecar-role";
const SK: &str = "s3cr3t-sidecar-key-0123";

fn config(
    old_ns: SocketAddr,
    new_ns: SocketAddr,
    bind: &str,
    secret_file: &Path,
    extra_new: &str,
) -> String {
    format!(
        "target = \"new\"\n[listen]\nnamesrv = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nhealth = \"127.0.0.1:0\"\nbroker_bind = \"{bind}\"\n\
         [upstream]\nnamesrv_timeout_ms = 1000\nconnect_timeout_ms = 1000\n\
         [clusters.old]\nnamesrv = \"{old_ns}\"\n\
         [clusters.new]\nnamesrv = \"{new_ns}\"\naccess_key = \"{AK}\"\nsecret_key_file = \"{}\"\ncheck_topic = \"T\"\n{extra_new}",
        secret_file.display()
    )
}

/// A fake ACL broker serving topic T, a sidecar targeting new with the secret in
/// `dir/secretKey`.
async fn acl_setup(
    dir: &Path,
    bind: &str,
) -> (FakeBroker, FakeNameServer, rocketmq_sidecar::app::Running) {
    let broker = FakeBroker::start_acl("new-a", AK, SK).await;
    let old_ns = FakeNameServer::start(HashMap::new()).await;
    let route = HashMap::from([("T".into(), fastjson_route("broker-a", broker.addr))]);
    let new_ns = FakeNameServer::start(route).await;
    let cfg = config(old_ns.addr, new_ns.addr, bind, &dir.join("secretKey"), "");
    let sidecar = start_sidecar(&cfg).await;
    (broker, new_ns, sidecar)
}

async fn route_doc(admin: SocketAddr) -> (String, Value) {
    let (_, body) = http(admin, "GET", "/route", None).await;
    (body.clone(), serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn requests_to_a_cluster_with_credentials_are_signed_after_rewrites() {
    let dir = tempdir("signed");
    std::fs::write(dir.join("secretKey"), format!("{SK}\n")).unwrap();
    let (broker, new_ns, sidecar) = acl_setup(&dir, "127.83.0.0/16").await;
    let local = local_master(sidecar.namesrv_addr, "T").await;

    // The app signs for itself with other credentials: they are replaced, not kept.
    let mut app = FrameClient::connect(local).await;
    let send = request(
        310,
        5,
        &[
            ("a", "PG"),
            ("b", "T"),
            ("n", "new~broker-a"),
            ("AccessKey", "app-key"),
            ("Signature", "bogus"),
            ("SecurityToken", "app-token"),
        ],
    );
    let (resp, _) = app.call(&send, "héllo €".as_bytes()).await;
    assert_eq!(
        resp.code, 0,
        "the broker authenticated the re-signed send: {:?}",
        resp.remark
    );
    let seen = broker.seen_code(310);
    let h = &seen[0].0;
    assert_eq!(h.ext("AccessKey"), Some(AK));
    assert_eq!(h.ext("n"), Some("broker-a"), "renamed before signing");
    assert_eq!(
        h.ext("SecurityToken"),
        None,
        "the app's token is not forwarded"
    );

    // Oneway requests and requests in the binary header form are signed too.
    let mut oneway = request(
        15,
        6,
        &[
            ("consumerGroup", "G"),
            ("topic", "T"),
            ("queueId", "0"),
            ("commitOffset", "9"),
        ],
    );
    oneway.flag |= 2;
    app.send(&oneway, b"").await;
    assert_eventually!(
        !broker.seen_code(15).is_empty(),
        5,
        "oneway update reached the broker"
    );
    assert_eq!(broker.seen_code(15)[0].0.ext("AccessKey"), Some(AK));

    // The name server was asked with a signed request as well.
    let ns_seen = new_ns.seen.lock().unwrap().clone();
    assert!(ns_seen.iter().any(|(h, _, _)| h.code == 105
        && h.ext("AccessKey") == Some(AK)
        && h.ext("Signature").is_some()));

    // A broker -> client request reaches the app unsigned and unchanged.
    broker
        .push(&request(40, 99, &[("consumerGroup", "G")]), b"")
        .await;
    let pushed = app.next().await.unwrap();
    assert_eq!(header_of(&pushed).ext("AccessKey"), None);

    // The credential check ran at startup and passed; the secret is nowhere in the answer.
    let admin = sidecar.admin_addr;
    assert_eventually!(
        route_doc(admin).await.1["credentials"]["new"]["check"]["outcome"] == "ok",
        10,
        "check ok"
    );
    let (text, doc) = route_doc(admin).await;
    assert!(!text.contains(SK), "secret in GET /route");
    assert_eq!(doc["credentials"]["new"]["configured"], true);
    assert_eq!(doc["credentials"]["old"]["configured"], false);
    assert!(
        doc["credentials"]["new"]["signed_requests"]
            .as_u64()
            .unwrap()
            >= 3
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn requests_to_a_cluster_without_credentials_pass_byte_for_byte() {
    let dir = tempdir("plain");
    std::fs::write(dir.join("secretKey"), SK).unwrap();
    let old_broker = FakeBroker::start("old-a", Duration::ZERO).await;
    let old_ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", old_broker.addr),
    )]))
    .await;
    let new_ns = FakeNameServer::start(HashMap::new()).await;
    let cfg = config(
        old_ns.addr,
        new_ns.addr,
        "127.84.0.0/16",
        &dir.join("secretKey"),
        "",
    )
    .replace("target = \"new\"", "target = \"old\"");
    let sidecar = start_sidecar(&cfg).await;
    let local = local_master(sidecar.namesrv_addr, "T").await;
    let mut app = FrameClient::connect(local).await;
    let own = request(
        310,
        5,
        &[
            ("b", "T"),
            ("AccessKey", "app-key"),
            ("Signature", "app-signature"),
        ],
    )
    .encode_frame(b"x");
    app.send_raw(&own).await;
    assert_eventually!(
        !old_broker.seen_code(310).is_empty(),
        5,
        "send reached the old broker"
    );
    assert_eq!(
        old_broker.seen_code(310)[0].2,
        own.to_vec(),
        "an app that signs for itself passes untouched"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn wrong_secret_is_reported_then_a_fixed_secret_file_is_picked_up() {
    let dir = tempdir("reload");
    let write_version = |v: &str, secret: &str| kubelet_write(&dir, v, &[("secretKey", secret)]);
    let wrong = "wrong-secret-value-987";
    write_version("v1", wrong);
    let (_broker, _new_ns, sidecar) = acl_setup(&dir, "127.85.0.0/16").await;
    let admin = sidecar.admin_addr;

    let (status, body) = http(admin, "POST", "/credentials/check", None).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc["new"]["check"]["outcome"], "signature_rejected",
        "{doc}"
    );
    assert!(!body.contains(wrong) && !body.contains(SK));

    let local = local_master(sidecar.namesrv_addr, "T").await;
    let mut app = FrameClient::connect(local).await;
    let (resp, _) = app.call(&request(310, 1, &[("b", "T")]), b"m").await;
    assert_eq!(resp.code, 16, "a wrongly signed send is refused");
    assert_eventually!(
        route_doc(admin).await.1["credentials"]["new"]["refusals"]
            .as_u64()
            .unwrap()
            >= 1,
        5,
        "refusal counted"
    );

    write_version("v2", SK);
    assert_eventually!(
        app.call(&request(310, 2, &[("b", "T")]), b"m").await.0.code == 0,
        10,
        "the fixed secret is used within a few seconds"
    );
    assert_eventually!(
        route_doc(admin).await.1["credentials"]["new"]["check"]["outcome"] == "ok",
        10,
        "re-checked after reload"
    );
    let (text, doc) = route_doc(admin).await;
    assert!(!text.contains(wrong) && !text.contains(SK));
    assert_eq!(doc["credentials"]["new"]["reloads"]["updated"], 1);

    // A broken update (empty file) keeps the good credentials.
    write_version("v3", "   ");
    assert_eventually!(
        route_doc(admin).await.1["credentials"]["new"]["reloads"]["failed"]
            .as_u64()
            .unwrap()
            >= 1,
        10,
        "failed reload counted"
    );
    let (resp, _) = app.call(&request(310, 3, &[("b", "T")]), b"m").await;
    assert_eq!(resp.code, 0, "still signing with the last good secret");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn swapped_access_and_secret_keys_are_diagnosed_not_swapped() {
    let dir = tempdir("swapped");
    // The operator put the SecretKey in access_key and the AccessKey in the secret file.
    std::fs::write(dir.join("secretKey"), AK).unwrap();
    let broker = FakeBroker::start_acl("new-a", AK, SK).await;
    let old_ns = FakeNameServer::start(HashMap::new()).await;
    let new_ns = FakeNameServer::start(HashMap::from([(
        "T".into(),
        fastjson_route("broker-a", broker.addr),
    )]))
    .await;
    let cfg = config(
        old_ns.addr,
        new_ns.addr,
        "127.86.0.0/16",
        &dir.join("secretKey"),
        "",
    )
    .replace(
        &format!("access_key = \"{AK}\""),
        &format!("access_key = \"{SK}\""),
    );
    let sidecar = start_sidecar(&cfg).await;
    let (_, body) = http(sidecar.admin_addr, "POST", "/credentials/check", None).await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc["new"]["check"]["outcome"], "unknown_access_key",
        "{doc}"
    );
    assert!(
        doc["new"]["check"]["detail"]
            .as_str()
            .unwrap()
            .contains("look swapped"),
        "{doc}"
    );
    // The 5.x remark echoes the AccessKey it got, which here is the secret: scrubbed.
    assert!(!body.contains(SK), "{body}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_large_request_is_renamed_and_re_signed_and_reaches_the_broker_byte_for_byte() {
    use rocketmq_sidecar::acl::{signature, SecretKey, UniqueKeyRule};
    use rocketmq_sidecar::protocol::{encode_frame, SerializeType};

    let dir = tempdir("large");
    std::fs::write(dir.join("secretKey"), format!("{SK}\n")).unwrap();
    let (broker, _new_ns, sidecar) = acl_setup(&dir, "127.97.0.0/16").await;
    let local = local_master(sidecar.namesrv_addr, "T").await;
    let mut app = FrameClient::connect(local).await;

    // 3 MiB: far past the relay's batch of small frames, so it leaves as the new head and
    // the body it arrived with, in vectored writes.
    let body: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect();
    let header = r#"{"code":310,"extFields":{"a":"PG","b":"T","n":"new~broker-a","AccessKey":"app-key","Signature":"bogus"},"flag":0,"language":"JAVA","opaque":77,"version":409}"#;
    app.send_raw(&encode_frame(SerializeType::Json, header.as_bytes(), &body))
        .await;
    loop {
        let f = app.next().await.expect("an answer");
        if f.is_response() && f.opaque() == 77 {
            let h = header_of(&f);
            assert_eq!(h.code, 0, "the broker authenticated it: {:?}", h.remark);
            break;
        }
    }

    // What the broker must receive: the app's header with the name unprefixed, our
    // AccessKey in place of the app's, the app's Signature replaced by ours at the end;
    // every other byte as the app sent it, and the body unchanged.
    let ext: serde_json::Map<String, Value> = [
        ("a", "PG"),
        ("b", "T"),
        ("n", "broker-a"),
        ("AccessKey", AK),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), Value::from(*v)))
    .collect();
    let sig = signature(
        &ext,
        &body,
        &SecretKey::new(SK),
        UniqueKeyRule::ByRequestVersion,
        409,
    );
    let expected_header = format!(
        r#"{{"code":310,"extFields":{{"a":"PG","b":"T","n":"broker-a","AccessKey":"{AK}","Signature":"{sig}"}},"flag":0,"language":"JAVA","opaque":77,"version":409}}"#
    );
    let expected = encode_frame(SerializeType::Json, expected_header.as_bytes(), &body);
    let seen = broker.seen_code(310);
    let (_, _, raw) = seen
        .iter()
        .find(|(h, _, _)| h.opaque == 77)
        .expect("the broker got the request");
    assert_eq!(raw.len(), expected.len());
    assert_eq!(
        &raw[..8 + expected_header.len()],
        &expected[..8 + expected_header.len()]
    );
    assert!(raw[..] == expected[..], "the body differs");
}
