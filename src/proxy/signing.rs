//! One cluster's signing state: its reloadable credentials, the `_UNIQUE_KEY_QUERY` rule
//! of its servers, what its servers said about our signatures, and the last credential
//! check. Requests to a cluster without credentials are never touched.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::acl::credentials::{CredentialStore, ReloadOutcome};
use crate::acl::{sign_request, sign_splice, Credentials, UniqueKeyRule};
use crate::config::UniqueKeyRuleSetting;
use crate::metrics::Metrics;
use crate::protocol::json_ext::ExtSplice;
use crate::protocol::Header;
use rmq_common::clock::now_ms;
use rmq_common::Target;

/// MQVersion ordinal of V5_0_0: servers from here on apply the 5.x rule.
const V5_0_0: i32 = 413;

/// What a credential check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// The cluster authenticated a signed request.
    Ok,
    /// The cluster does not know the AccessKey.
    UnknownAccessKey,
    /// The AccessKey is known but the signature did not verify (wrong SecretKey).
    SignatureRejected,
    /// Authenticated, but the account may not do this.
    NoPermission,
    /// No name server or broker could be reached.
    Unreachable,
    /// The cluster answered something this check does not recognise.
    Unexpected,
    /// Not run: no credentials, or nothing to check against.
    NotChecked,
}

/// The result of one credential check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Outcome.
    pub outcome: CheckOutcome,
    /// What the cluster said (secrets scrubbed) and what to do.
    pub detail: String,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// Signing state of one cluster.
#[derive(Debug)]
pub struct Signer {
    target: Target,
    store: CredentialStore,
    setting: UniqueKeyRuleSetting,
    server_version: AtomicI32,
    last_check: Mutex<Option<CheckReport>>,
    metrics: Metrics,
}

// === impl CheckOutcome ===

impl CheckOutcome {
    /// The snake_case name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Ok => "ok",
            CheckOutcome::UnknownAccessKey => "unknown_access_key",
            CheckOutcome::SignatureRejected => "signature_rejected",
            CheckOutcome::NoPermission => "no_permission",
            CheckOutcome::Unreachable => "unreachable",
            CheckOutcome::Unexpected => "unexpected",
            CheckOutcome::NotChecked => "not_checked",
        }
    }
}

// === impl CheckReport ===

impl CheckReport {
    /// A report made now.
    pub fn new(outcome: CheckOutcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
            at_ms: now_ms(),
        }
    }
}

// === impl Signer ===

impl Signer {
    /// Signing state for `target`.
    pub fn new(
        target: Target,
        store: CredentialStore,
        setting: UniqueKeyRuleSetting,
        metrics: Metrics,
    ) -> Self {
        if store.is_configured() {
            metrics.set_check(target.as_str(), "not_checked");
        }
        Self {
            metrics,
            target,
            store,
            setting,
            server_version: AtomicI32::new(0),
            last_check: Mutex::new(None),
        }
    }

    /// True when credentials are configured (requests are then signed).
    pub fn is_configured(&self) -> bool {
        self.store.is_configured()
    }

    /// The credentials store.
    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    /// Records the version a server of this cluster reported (from its responses).
    pub fn observe_server_version(&self, version: i32) {
        if version > 0 {
            self.server_version.store(version, Ordering::Relaxed);
        }
    }

    /// The last server version seen (0 = none yet).
    pub fn server_version(&self) -> i32 {
        self.server_version.load(Ordering::Relaxed)
    }

    /// The `_UNIQUE_KEY_QUERY` rule in force.
    pub fn rule(&self) -> UniqueKeyRule {
        match self.setting {
            UniqueKeyRuleSetting::V4 => UniqueKeyRule::Excluded,
            UniqueKeyRuleSetting::V5 => UniqueKeyRule::ByRequestVersion,
            UniqueKeyRuleSetting::Auto => match self.server_version() {
                v if v >= V5_0_0 => UniqueKeyRule::ByRequestVersion,
                v if v > 0 => UniqueKeyRule::Excluded,
                // Not heard from yet: TDMQ (new) speaks 5.x, self-built (old) clusters 4.x.
                _ if self.target == Target::New => UniqueKeyRule::ByRequestVersion,
                _ => UniqueKeyRule::Excluded,
            },
        }
    }

    /// Signs `header` with the current credentials; false when there are none.
    pub fn sign(&self, header: &mut Header, body: &[u8]) -> bool {
        self.signing(|creds, rule| sign_request(header, body, creds, rule))
    }

    /// [`Signer::sign`] on a scanned JSON header (see [`ExtSplice`]); false when there
    /// are no credentials (`ext` is then left as it was).
    pub fn sign_splice(&self, ext: &mut ExtSplice<'_>, body: &[u8]) -> bool {
        self.signing(|creds, rule| sign_splice(ext, body, creds, rule))
    }

    /// Runs `sign` with the current credentials and counts it; false when there are none.
    fn signing(&self, sign: impl FnOnce(&Credentials, UniqueKeyRule)) -> bool {
        let Some(creds) = self.store.get() else {
            return false;
        };
        sign(&creds, self.rule());
        self.metrics
            .signed_requests
            .with_label_values(&[self.target.as_str()])
            .inc();
        true
    }

    /// Inspects a broker or name-server answer to a signed request; logs and counts ACL
    /// refusals. The remark is logged only with both key values scrubbed out.
    pub fn note_answer(&self, code: i32, remark: Option<&str>) {
        if let Some(outcome) = classify_refusal(code, remark.unwrap_or("")) {
            self.metrics
                .signature_refusals
                .with_label_values(&[self.target.as_str(), outcome.as_str()])
                .inc();
            tracing::warn!(
                cluster = %self.target,
                code,
                ?outcome,
                remark = %self.scrub(remark.unwrap_or("")),
                refusals = self.rejections(),
                "the cluster refused a signed request"
            );
        }
    }

    /// Refusals seen so far (read from the metric, the one place they are counted).
    pub fn rejections(&self) -> u64 {
        crate::metrics::CHECK_OUTCOMES
            .iter()
            .map(|o| {
                self.metrics
                    .signature_refusals
                    .with_label_values(&[self.target.as_str(), o])
                    .get()
            })
            .sum()
    }

    /// Requests signed so far (read from the metric).
    pub fn signed(&self) -> u64 {
        self.metrics
            .signed_requests
            .with_label_values(&[self.target.as_str()])
            .get()
    }

    /// `text` with the configured AccessKey and SecretKey values replaced.
    pub fn scrub(&self, text: &str) -> String {
        let Some(creds) = self.store.get() else {
            return text.to_owned();
        };
        let mut out = text.to_owned();
        for secret in [creds.secret_key.expose(), creds.access_key.as_str()] {
            if !secret.is_empty() {
                out = out.replace(secret, "<redacted>");
            }
        }
        if let Some(token) = &creds.security_token {
            out = out.replace(token.as_str(), "<redacted>");
        }
        out
    }

    /// The AccessKey in use, shortened for display (it can be a token in TDMQ's setups).
    pub fn access_key_hint(&self) -> Option<String> {
        self.store.get().map(|c| {
            let head: String = c.access_key.chars().take(4).collect();
            format!("{head}… ({} chars)", c.access_key.chars().count())
        })
    }

    /// Stores a check result.
    pub fn set_check(&self, report: CheckReport) {
        self.metrics
            .set_check(self.target.as_str(), report.outcome.as_str());
        *self.last_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }

    /// The last check result.
    pub fn last_check(&self) -> Option<CheckReport> {
        self.last_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the credential sources and logs what changed.
    pub fn reload(&self) -> ReloadOutcome {
        let outcome = self.store.reload();
        match &outcome {
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Updated => {
                self.metrics
                    .credential_reloads
                    .with_label_values(&[self.target.as_str(), "updated"])
                    .inc();
                tracing::info!(cluster = %self.target, "credentials reloaded; new requests use them")
            }
            ReloadOutcome::Failed(reason) => {
                self.metrics
                    .credential_reloads
                    .with_label_values(&[self.target.as_str(), "failed"])
                    .inc();
                tracing::warn!(
                cluster = %self.target,
                %reason,
                failures = self.store.failures(),
                "credential reload failed; still signing with the previous credentials"
                )
            }
        }
        outcome
    }
}

/// Whether an answer with `code` can be an ACL refusal (SYSTEM_ERROR from 4.x ACL,
/// NO_PERMISSION): only those are decoded to read their remark. Every other answer
/// (an empty long-poll's PULL_NOT_FOUND, say) is relayed without a look.
pub fn may_be_refusal(code: i32) -> bool {
    code == 1 || code == 16
}

/// What an answer says about our credentials, if it is an ACL refusal. Shapes measured on
/// Apache RocketMQ (the remark decides; the code differs by server):
/// - 5.3.3 broker, ACL 2.0: code 16, "User:<ak> is not found.", "check signature failed.",
///   "username cannot be null.", "User:<ak> has no permission to access Topic:<t> ...";
/// - 5.3.3 proxy: the same remarks with code 1;
/// - 4.9.x broker, ACL 1.0: code 1, "...AclException: No acl config for <ak>, ...",
///   "...Check signature failed for accessKey=<ak>", "No accessKey is configured",
///   "No default permission for ...", "Need admin permission for request code=...".
pub fn classify_refusal(code: i32, remark: &str) -> Option<CheckOutcome> {
    if !may_be_refusal(code) {
        return None;
    }
    let r = remark.to_ascii_lowercase();
    if (r.contains("user") && r.contains("not found"))
        || r.contains("no acl config for")
        || r.contains("username cannot be null")
        || r.contains("no accesskey is configured")
    {
        return Some(CheckOutcome::UnknownAccessKey);
    }
    if r.contains("signature") {
        return Some(CheckOutcome::SignatureRejected);
    }
    if r.contains("permission") || r.contains("aclexception") || code == 16 {
        return Some(CheckOutcome::NoPermission);
    }
    None
}
