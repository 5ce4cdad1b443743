//! Configuration: the documented config.toml, environment overrides, and one test per
//! kind of invalid value, each naming the key.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use rocketmq_sidecar::config::Config;
use rocketmq_sidecar::Target;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn err(text: &str, vars: &[(&str, &str)]) -> String {
    Config::from_toml_str(text, &env(vars))
        .unwrap_err()
        .to_string()
}

#[test]
fn documented_config_toml_states_the_defaults() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let from_file =
        Config::from_toml_str(&text, &env(&[("RMQ_SIDECAR_OLD_NAMESRV", "10.0.0.1:9876")]))
            .unwrap();
    let from_defaults =
        Config::from_toml_str("", &env(&[("RMQ_SIDECAR_OLD_NAMESRV", "10.0.0.1:9876")])).unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_defaults:?}"));
    assert_eq!(from_defaults.namesrv_listen.to_string(), "127.0.0.1:9876");
    assert_eq!(from_defaults.admin_listen.to_string(), "127.0.0.1:9878");
    assert_eq!(from_defaults.health_listen.to_string(), "0.0.0.0:9879");
    assert_eq!(from_defaults.drain.as_secs(), 30);
    assert_eq!(from_defaults.frame_max_bytes, 16 * 1024 * 1024);
    assert_eq!(from_defaults.new.broker_name_prefix, "new~");
}

#[test]
fn environment_overrides_the_file() {
    let text = "target = \"old\"\n[clusters.old]\nnamesrv = \"a:1\"\n";
    let c = Config::from_toml_str(
        text,
        &env(&[
            ("RMQ_SIDECAR_OLD_NAMESRV", "10.0.0.1:9876; 10.0.0.2:9876"),
            ("RMQ_SIDECAR_NEW_NAMESRV", "tdmq:9876"),
            ("RMQ_SIDECAR_TARGET", "new"),
            ("RMQ_SIDECAR_LISTEN", "127.0.0.1:19876"),
            ("RMQ_SIDECAR_ADMIN", "127.0.0.1:19878"),
            ("RMQ_SIDECAR_METRICS", "0.0.0.0:19879"),
            ("RMQ_SIDECAR_BROKER_BIND", "127.9.0.0/16"),
            ("RMQ_SIDECAR_STATE_DIR", "/var/run/rmq"),
            ("RMQ_SIDECAR_ADMIN_TOKEN_FILE", "/etc/token"),
            ("RMQ_SIDECAR_DRAIN_SECONDS", "5"),
            ("RMQ_SIDECAR_LOG", "debug"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.target,
        rocketmq_sidecar::config::RoleTargets::both(Target::New)
    );
    assert_eq!(c.old.namesrv, vec!["10.0.0.1:9876", "10.0.0.2:9876"]);
    assert_eq!(c.new.namesrv, vec!["tdmq:9876"]);
    assert_eq!(c.namesrv_listen.port(), 19876);
    assert_eq!(c.admin_listen.port(), 19878);
    assert_eq!(c.health_listen.port(), 19879);
    assert_eq!(c.broker_bind.to_string(), "127.9.0.0/16");
    assert_eq!(c.state_dir.unwrap().to_str(), Some("/var/run/rmq"));
    assert_eq!(c.admin_token_file.unwrap().to_str(), Some("/etc/token"));
    assert_eq!(c.drain.as_secs(), 5);
    assert_eq!(c.log, "debug");
}

#[test]
fn missing_target_name_servers_names_key_and_variable() {
    let e = err("", &[]);
    assert!(
        e.contains("clusters.old.namesrv") && e.contains("RMQ_SIDECAR_OLD_NAMESRV"),
        "{e}"
    );
}

#[test]
fn bad_values_name_their_key() {
    let ok_old = "[clusters.old]\nnamesrv = \"a:1\"\n";
    for (text, vars, key) in [
        ("target = \"mid\"", vec![], "target"),
        (
            "",
            vec![("RMQ_SIDECAR_TARGET", "sideways")],
            "RMQ_SIDECAR_TARGET",
        ),
        ("drain_seconds = 99999", vec![], "drain_seconds"),
        (
            "",
            vec![("RMQ_SIDECAR_DRAIN_SECONDS", "soon")],
            "drain_seconds",
        ),
        ("frame_max_bytes = 10", vec![], "frame_max_bytes"),
        ("log_format = \"xml\"", vec![], "log_format"),
        ("[listen]\nnamesrv = \"nowhere\"", vec![], "listen.namesrv"),
        (
            "[listen]\nnamesrv = \"0.0.0.0:9876\"",
            vec![],
            "listen.namesrv",
        ),
        (
            "[listen]\nbroker_bind = \"10.0.0.0/8\"",
            vec![],
            "listen.broker_bind",
        ),
        (
            "[listen]\nbroker_bind = \"127.0.0.0/40\"",
            vec![],
            "listen.broker_bind",
        ),
        (
            "[listen]\nbroker_fallback_ports = \"9-5\"",
            vec![],
            "listen.broker_fallback_ports",
        ),
        (
            "[listen]\nadmin = \"127.0.0.1:9876\"",
            vec![],
            "three different addresses",
        ),
        (
            "[upstream]\nconnect_timeout_ms = 0",
            vec![],
            "upstream.connect_timeout_ms",
        ),
        (
            "[clusters.new]\nnamesrv = \"host-without-port\"",
            vec![],
            "clusters.new.namesrv",
        ),
        (
            "[clusters.new]\nbroker_name_prefix = \"\"",
            vec![],
            "clusters.new.broker_name_prefix",
        ),
        (
            "[clusters.new]\nbroker_name_prefix = \"a:b\"",
            vec![],
            "clusters.new.broker_name_prefix",
        ),
    ] {
        let text = if text.starts_with("[clusters.old]") {
            text.to_owned()
        } else {
            format!("{text}\n{ok_old}")
        };
        let e = err(&text, &vars);
        assert!(e.contains(key), "expected '{key}' in: {e}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let e = err(
        "[clusters.old]\nnamesrv = \"a:1\"\nnamesrv_list = \"x\"\n",
        &[],
    );
    assert!(
        e.contains("unknown field") && e.contains("namesrv_list"),
        "{e}"
    );
}

#[test]
fn secrets_are_never_inline() {
    let e = err(
        "[clusters.old]\nnamesrv = \"a:1\"\n[clusters.new]\nsecret_key = \"hunter22\"\n",
        &[],
    );
    assert!(
        e.contains("clusters.new.secret_key")
            && e.contains("secret_key_file")
            && e.contains("RMQ_SIDECAR_NEW_SECRET_KEY"),
        "{e}"
    );
    assert!(
        !e.contains("hunter22"),
        "the refused value is not echoed: {e}"
    );
    let e = err(
        "[clusters.old]\nnamesrv = \"a:1\"\nsecurity_token = \"t\"\n",
        &[],
    );
    assert!(e.contains("clusters.old.security_token"), "{e}");
}

#[test]
fn credential_sources_come_from_env_before_the_file() {
    use rocketmq_sidecar::acl::credentials::Source;
    let text = "[clusters.old]\nnamesrv = \"a:1\"\n[clusters.new]\naccess_key = \"file-ak\"\nsecret_key_file = \"/etc/sk\"\nunique_key_rule = \"v4\"\ncheck_topic = \"T\"\n";
    let c = Config::from_toml_str(text, &env(&[])).unwrap();
    assert_eq!(
        c.new.credentials.access_key,
        Some(Source::Value("file-ak".into()))
    );
    assert_eq!(
        c.new.credentials.secret_key,
        Some(Source::File("/etc/sk".into()))
    );
    assert_eq!(c.new.check_topic.as_deref(), Some("T"));
    let c = Config::from_toml_str(
        text,
        &env(&[
            ("RMQ_SIDECAR_NEW_ACCESS_KEY_FILE", "/run/ak"),
            ("RMQ_SIDECAR_NEW_SECRET_KEY", "from-env"),
            ("RMQ_SIDECAR_NEW_SECURITY_TOKEN_FILE", "/run/token"),
            ("RMQ_SIDECAR_OLD_ACCESS_KEY", "old-ak"),
            ("RMQ_SIDECAR_OLD_SECRET_KEY_FILE", "/run/old-sk"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.new.credentials.access_key,
        Some(Source::File("/run/ak".into()))
    );
    assert_eq!(
        c.new.credentials.secret_key,
        Some(Source::Value("from-env".into()))
    );
    assert_eq!(
        c.new.credentials.security_token,
        Some(Source::File("/run/token".into()))
    );
    assert_eq!(
        c.old.credentials.access_key,
        Some(Source::Value("old-ak".into()))
    );
    assert_eq!(
        c.old.credentials.secret_key,
        Some(Source::File("/run/old-sk".into()))
    );
    assert!(
        !format!("{c:?}").contains("from-env"),
        "Debug of a config never shows a secret"
    );
    let e = err(
        "[clusters.old]\nnamesrv = \"a:1\"\nunique_key_rule = \"v6\"\n",
        &[],
    );
    assert!(e.contains("clusters.old.unique_key_rule"), "{e}");
}

#[test]
fn namespaces_come_from_the_file_or_the_environment_and_are_checked() {
    let text = "[clusters.old]\nnamesrv = \"a:1\"\n[clusters.new]\nnamesrv = \"b:1\"\nnamespace = \"rocketmq-abc|ns1\"\n";
    let c = Config::from_toml_str(text, &env(&[])).unwrap();
    assert_eq!(
        c.new.namespace.as_ref().map(|n| n.as_str()),
        Some("rocketmq-abc|ns1")
    );
    assert!(c.old.namespace.is_none(), "no namespace unless set");
    let c =
        Config::from_toml_str(text, &env(&[("RMQ_SIDECAR_NEW_NAMESPACE", "MQ_INST_x|y")])).unwrap();
    assert_eq!(
        c.new.namespace.as_ref().map(|n| n.as_str()),
        Some("MQ_INST_x|y")
    );
    let e = err(&text.replace("rocketmq-abc|ns1", "bad%ns"), &[]);
    assert!(
        e.contains("clusters.new.namespace") && e.contains("'%' is not allowed"),
        "{e}"
    );
    let e = err(text, &[("RMQ_SIDECAR_OLD_NAMESPACE", "with space")]);
    assert!(
        e.contains("clusters.old.namespace") && e.contains("RMQ_SIDECAR_OLD_NAMESPACE"),
        "{e}"
    );
}
