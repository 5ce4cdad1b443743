//! Where a cluster's credentials come from (a value from the environment, or a file such
//! as a mounted Kubernetes Secret) and how they are reloaded. The kubelet updates a
//! mounted Secret by swapping a `..data` symlink; re-reading the files every few seconds
//! and comparing contents follows that without inotify. A broken update keeps the last
//! good credentials, says why and is counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::sign::{Credentials, SecretKey};

/// Where one credential value comes from. `Debug` never shows a value.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    /// Given directly (an environment variable, or `access_key` in config.toml).
    Value(String),
    /// Read from a file on every reload; surrounding whitespace is trimmed.
    File(PathBuf),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Value(_) => f.write_str("Value(<redacted>)"),
            Source::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// The sources of one cluster's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSources {
    /// AccessKey.
    pub access_key: Option<Source>,
    /// SecretKey (never given inline in config.toml).
    pub secret_key: Option<Source>,
    /// Optional SecurityToken.
    pub security_token: Option<Source>,
}

/// Why credentials could not be loaded. Never contains a secret value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// A file could not be read.
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        /// Which value.
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// Only one of AccessKey and SecretKey is configured.
    #[error("{0} is configured without {1}; configure both or neither")]
    Incomplete(&'static str, &'static str),
}

/// Outcome of one reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The sources hold what was already loaded.
    Unchanged,
    /// New credentials are in use.
    Updated,
    /// The sources are broken; the previous credentials stay in use.
    Failed(String),
}

/// The credentials in use for one cluster, reloadable.
#[derive(Debug)]
pub struct CredentialStore {
    sources: CredentialSources,
    current: RwLock<Option<Arc<Credentials>>>,
    failures: AtomicU64,
    updates: AtomicU64,
}

// === impl CredentialSources ===

impl CredentialSources {
    /// True when nothing is configured (requests pass as the app sent them).
    pub fn is_empty(&self) -> bool {
        self.access_key.is_none() && self.secret_key.is_none() && self.security_token.is_none()
    }

    /// Where each value comes from, for operators (never the values themselves).
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "none (requests pass as the app sent them)".to_owned();
        }
        let one = |name: &str, s: &Option<Source>| match s {
            None => format!("{name}: -"),
            Some(Source::Value(_)) => format!("{name}: value"),
            Some(Source::File(p)) => format!("{name}: file {}", p.display()),
        };
        [
            one("AccessKey", &self.access_key),
            one("SecretKey", &self.secret_key),
            one("SecurityToken", &self.security_token),
        ]
        .join(", ")
    }

    /// Reads every source. `Ok(None)` when nothing is configured.
    pub fn load(&self) -> Result<Option<Credentials>, CredentialError> {
        if self.is_empty() {
            return Ok(None);
        }
        let access_key = read(self.access_key.as_ref(), "AccessKey")?;
        let secret_key = read(self.secret_key.as_ref(), "SecretKey")?;
        let security_token = read(self.security_token.as_ref(), "SecurityToken")?;
        match (access_key, secret_key) {
            (Some(ak), Some(sk)) => Ok(Some(Credentials {
                access_key: ak,
                secret_key: SecretKey::new(sk),
                security_token,
            })),
            (Some(_), None) => Err(CredentialError::Incomplete("AccessKey", "SecretKey")),
            (None, Some(_)) => Err(CredentialError::Incomplete("SecretKey", "AccessKey")),
            (None, None) => Err(CredentialError::Incomplete(
                "SecurityToken",
                "AccessKey and SecretKey",
            )),
        }
    }
}

fn read(source: Option<&Source>, what: &'static str) -> Result<Option<String>, CredentialError> {
    let value = match source {
        None => return Ok(None),
        Some(Source::Value(v)) => v.trim().to_owned(),
        Some(Source::File(path)) => std::fs::read_to_string(path)
            .map_err(|e| CredentialError::Read {
                what,
                path: path.clone(),
                reason: e.kind().to_string(),
            })?
            .trim()
            .to_owned(),
    };
    if value.is_empty() {
        return Err(CredentialError::Empty(what));
    }
    Ok(Some(value))
}

// === impl CredentialStore ===

impl CredentialStore {
    /// Loads the sources once; an error here is a startup error.
    pub fn new(sources: CredentialSources) -> Result<Self, CredentialError> {
        let initial = sources.load()?.map(Arc::new);
        Ok(Self {
            sources,
            current: RwLock::new(initial),
            failures: AtomicU64::new(0),
            updates: AtomicU64::new(0),
        })
    }

    /// The credentials to sign with now (`None`: forward requests as the app sent them).
    pub fn get(&self) -> Option<Arc<Credentials>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True when credentials are configured for this cluster.
    pub fn is_configured(&self) -> bool {
        !self.sources.is_empty()
    }

    /// Re-reads the sources.
    pub fn reload(&self) -> ReloadOutcome {
        match self.sources.load() {
            Ok(next) => {
                let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
                if cur.as_deref() == next.as_ref() {
                    return ReloadOutcome::Unchanged;
                }
                *cur = next.map(Arc::new);
                self.updates.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Updated
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Failed(e.to_string())
            }
        }
    }

    /// Failed reloads so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Successful changes so far.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }
}
