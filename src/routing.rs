//! The pod's route: which cluster its clients are sent to. A switch validates, persists
//! (when a state dir is set) and only then publishes the new state through a `watch`
//! channel; a failed switch leaves the running state as it was.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use rmq_common::clock::now_ms;
use rmq_common::contract;
use rmq_common::Target;

use crate::config::Config;
use crate::state;

/// File name of the persisted route inside the state dir.
pub const ROUTE_FILE: &str = contract::ROUTE_FILE;

/// A published route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteState {
    /// Cluster the pod's clients go to.
    pub target: Target,
    /// Incremented by every switch that changed the target.
    pub generation: u64,
    /// When the target last changed (Unix milliseconds; 0 = never switched).
    pub changed_at_ms: u64,
}

/// Why a switch was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The target cluster has no name servers configured.
    #[error("cluster '{0}' has no name servers configured; set clusters.{0}.namesrv first")]
    NotConfigured(Target),
    /// The new state could not be persisted; nothing changed.
    #[error("could not persist the route to {path}: {source}; the route is unchanged")]
    Persist {
        /// File that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why persisted state could not be loaded at startup.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file exists but cannot be read or parsed. Starting on the configured target
    /// instead could silently move the pod back to `old`, so startup stops.
    #[error("persisted route {path} is unreadable ({reason}); fix or remove it deliberately")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Owner of the route: validates and applies switches.
#[derive(Debug)]
pub struct RouteSwitch {
    tx: watch::Sender<RouteState>,
    file: Option<PathBuf>,
    configured: [bool; 2],
    lock: Mutex<()>,
}

// === impl RouteSwitch ===

impl RouteSwitch {
    /// Starts from the persisted route if there is one, else from the configured target.
    pub fn load(config: &Config) -> Result<(Self, bool), LoadError> {
        let file = config.state_dir.as_ref().map(|d| d.join(ROUTE_FILE));
        let mut restored = false;
        let mut initial = RouteState {
            target: config.target,
            generation: 0,
            changed_at_ms: 0,
        };
        if let Some(path) = &file {
            let corrupt = |reason: String| LoadError::Corrupt {
                path: path.clone(),
                reason,
            };
            if let Some(bytes) = state::read_optional(path).map_err(|e| corrupt(e.to_string()))? {
                initial = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                restored = true;
            }
        }
        let configured = [
            !config.old.namesrv.is_empty(),
            !config.new.namesrv.is_empty(),
        ];
        let (tx, _) = watch::channel(initial);
        Ok((
            Self {
                tx,
                file,
                configured,
                lock: Mutex::new(()),
            },
            restored,
        ))
    }

    /// The current route.
    pub fn current(&self) -> RouteState {
        *self.tx.borrow()
    }

    /// A receiver that sees every published route.
    pub fn subscribe(&self) -> watch::Receiver<RouteState> {
        self.tx.subscribe()
    }

    /// Switches to `target`. Idempotent: switching to the current target changes nothing
    /// and returns `Ok((state, false))`.
    pub fn switch(&self, target: Target) -> Result<(RouteState, bool), SwitchError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current();
        if current.target == target {
            return Ok((current, false));
        }
        if !self.configured[target.index()] {
            return Err(SwitchError::NotConfigured(target));
        }
        let next = RouteState {
            target,
            generation: current.generation + 1,
            changed_at_ms: now_ms(),
        };
        if let Some(path) = &self.file {
            let bytes = serde_json::to_vec_pretty(&next).unwrap_or_default();
            state::write_atomic(path, &bytes).map_err(|source| SwitchError::Persist {
                path: path.clone(),
                source,
            })?;
        }
        self.tx.send_replace(next);
        Ok((next, true))
    }
}
