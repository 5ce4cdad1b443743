//! The pod's route: where its producers and where its consumers go. A switch validates,
//! persists (when a state dir is set) and only then publishes the new state through a
//! `watch` channel; a failed switch leaves the running state as it was.
//!
//! Each role has its own target, generation and change time; `generation` of the whole
//! route counts every change of either role. The state file is written in version 2
//! (`{"version":2,"producer":{…},"consumer":{…},…}`); a version-1 file (one `target` for
//! the whole pod, written before per-role routing) is read as both roles on that target.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use rmq_common::clock::now_ms;
use rmq_common::contract;
use rmq_common::{Role, RoleTargets, Target};

use crate::config::Config;
use crate::state;

/// File name of the persisted route inside the state dir.
pub const ROUTE_FILE: &str = contract::ROUTE_FILE;

/// Where one role goes, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRoute {
    /// The cluster this role's clients are sent to.
    pub target: Target,
    /// Incremented by every switch that changed this role's target.
    pub generation: u64,
    /// When this role's target last changed (Unix milliseconds; 0 = never switched).
    pub changed_at_ms: u64,
}

/// A published route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteState {
    /// Where the pod's producers send.
    pub producer: RoleRoute,
    /// Where the pod's consumers receive from.
    pub consumer: RoleRoute,
    /// Incremented by every switch that changed either role.
    pub generation: u64,
    /// When either role last changed (Unix milliseconds; 0 = never switched).
    pub changed_at_ms: u64,
}

/// A requested change: the roles to move (a `None` role stays where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteRequest {
    /// New target of the producers.
    pub producer: Option<Target>,
    /// New target of the consumers.
    pub consumer: Option<Target>,
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

/// The state file, version 2.
#[derive(Debug, Serialize, Deserialize)]
struct PersistedV2 {
    version: u32,
    producer: RoleRoute,
    consumer: RoleRoute,
    generation: u64,
    changed_at_ms: u64,
}

/// The state file before per-role routing: one target for the whole pod.
#[derive(Debug, Deserialize)]
struct PersistedV1 {
    target: Target,
    generation: u64,
    changed_at_ms: u64,
}

// === impl RouteState ===

impl RouteState {
    /// Both roles on `targets`, never switched.
    pub fn initial(targets: RoleTargets) -> Self {
        let role = |target| RoleRoute {
            target,
            generation: 0,
            changed_at_ms: 0,
        };
        Self {
            producer: role(targets.producer),
            consumer: role(targets.consumer),
            generation: 0,
            changed_at_ms: 0,
        }
    }

    /// Where each role goes.
    pub fn targets(&self) -> RoleTargets {
        RoleTargets {
            producer: self.producer.target,
            consumer: self.consumer.target,
        }
    }

    /// The route of `role`.
    pub fn role(&self, role: Role) -> &RoleRoute {
        match role {
            Role::Producer => &self.producer,
            Role::Consumer => &self.consumer,
        }
    }

    /// `Some(target)` when the whole pod is on one cluster.
    pub fn whole(&self) -> Option<Target> {
        self.targets().whole()
    }

    /// Whether the pod plays any role on `cluster`.
    pub fn uses(&self, cluster: Target) -> bool {
        self.producer.target == cluster || self.consumer.target == cluster
    }

    /// Reads a state file of either version.
    fn from_file(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(2) => {
                let v: PersistedV2 = serde_json::from_value(value).map_err(|e| e.to_string())?;
                Ok(Self {
                    producer: v.producer,
                    consumer: v.consumer,
                    generation: v.generation,
                    changed_at_ms: v.changed_at_ms,
                })
            }
            Some(other) => Err(format!(
                "version {other} is newer than this sidecar understands (2)"
            )),
            None => {
                let v: PersistedV1 = serde_json::from_value(value).map_err(|e| e.to_string())?;
                let role = RoleRoute {
                    target: v.target,
                    generation: v.generation,
                    changed_at_ms: v.changed_at_ms,
                };
                Ok(Self {
                    producer: role,
                    consumer: role,
                    generation: v.generation,
                    changed_at_ms: v.changed_at_ms,
                })
            }
        }
    }

    fn to_file(self) -> Vec<u8> {
        let doc = PersistedV2 {
            version: 2,
            producer: self.producer,
            consumer: self.consumer,
            generation: self.generation,
            changed_at_ms: self.changed_at_ms,
        };
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }
}

// === impl RouteRequest ===

impl RouteRequest {
    /// Both roles to `target`.
    pub fn whole(target: Target) -> Self {
        Self {
            producer: Some(target),
            consumer: Some(target),
        }
    }

    /// Each role to where `targets` says.
    pub fn to(targets: RoleTargets) -> Self {
        Self {
            producer: Some(targets.producer),
            consumer: Some(targets.consumer),
        }
    }

    /// The request for `role`.
    pub fn get(&self, role: Role) -> Option<Target> {
        match role {
            Role::Producer => self.producer,
            Role::Consumer => self.consumer,
        }
    }
}

// === impl RouteSwitch ===

impl RouteSwitch {
    /// Starts from the persisted route if there is one, else from the configured target.
    pub fn load(config: &Config) -> Result<(Self, bool), LoadError> {
        let file = config.state_dir.as_ref().map(|d| d.join(ROUTE_FILE));
        let mut restored = false;
        let mut initial = RouteState::initial(config.target);
        if let Some(path) = &file {
            let corrupt = |reason: String| LoadError::Corrupt {
                path: path.clone(),
                reason,
            };
            if let Some(bytes) = state::read_optional(path).map_err(|e| corrupt(e.to_string()))? {
                initial = RouteState::from_file(&bytes).map_err(corrupt)?;
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

    /// Moves the requested roles. Idempotent: a request that changes nothing returns
    /// `Ok((state, vec![]))`; otherwise the roles that moved.
    pub fn switch(&self, request: RouteRequest) -> Result<(RouteState, Vec<Role>), SwitchError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current();
        let moved: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| {
                request
                    .get(*r)
                    .is_some_and(|t| t != current.role(*r).target)
            })
            .collect();
        if moved.is_empty() {
            return Ok((current, moved));
        }
        for role in &moved {
            if let Some(target) = request.get(*role) {
                if !self.configured[target.index()] {
                    return Err(SwitchError::NotConfigured(target));
                }
            }
        }
        let now = now_ms();
        let mut next = current;
        for role in &moved {
            let slot = match role {
                Role::Producer => &mut next.producer,
                Role::Consumer => &mut next.consumer,
            };
            if let Some(target) = request.get(*role) {
                *slot = RoleRoute {
                    target,
                    generation: slot.generation + 1,
                    changed_at_ms: now,
                };
            }
        }
        next.generation = current.generation + 1;
        next.changed_at_ms = now;
        if let Some(path) = &self.file {
            state::write_atomic(path, &next.to_file()).map_err(|source| SwitchError::Persist {
                path: path.clone(),
                source,
            })?;
        }
        self.tx.send_replace(next);
        Ok((next, moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_of_both_versions_are_read() {
        let v1 = br#"{"target":"new","generation":3,"changed_at_ms":1700000000000}"#;
        let s = RouteState::from_file(v1).unwrap();
        assert_eq!(s.targets(), RoleTargets::both(Target::New));
        assert_eq!(
            (s.generation, s.producer.generation, s.consumer.generation),
            (3, 3, 3)
        );
        let split = RouteState {
            producer: RoleRoute {
                target: Target::New,
                generation: 2,
                changed_at_ms: 5,
            },
            consumer: RoleRoute {
                target: Target::Old,
                generation: 1,
                changed_at_ms: 4,
            },
            generation: 3,
            changed_at_ms: 5,
        };
        let written = split.to_file();
        assert!(String::from_utf8_lossy(&written).contains("\"version\": 2"));
        assert_eq!(RouteState::from_file(&written).unwrap(), split);
        assert!(RouteState::from_file(br#"{"version":3,"x":1}"#)
            .unwrap_err()
            .contains("newer"));
        assert!(RouteState::from_file(
            br#"{"target":"sideways","generation":1,"changed_at_ms":0}"#
        )
        .is_err());
    }
}
