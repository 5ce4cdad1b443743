//! ACL credentials: loading from values and files, reload across a kubelet-style
//! `..data` symlink swap, and broken updates that keep the last good credentials.
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
