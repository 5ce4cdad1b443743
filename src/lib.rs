//! rocketmq-sidecar: a per-pod RocketMQ name server and broker relay that carries an
//! application from an old cluster to a new one without redeploying it. This crate is the
//! data plane (`rmq-sidecar`); the Kubernetes injector is the separate `rmq-injector`
//! crate, and what both agree on (the pod contract) is `rmq_common`.
//!
//! # Layout
//! Each module in one line; dependencies point down this list, never up (tested by
//! `tests/layout.rs`).
//! - [`lifecycle`]: the process: one validation for `check` and `run`, signals, drain, exit codes.
//! - [`app`]: wiring: builds the state ([`app::Core`], no sockets), binds, starts every server.
//! - [`admin`]: the admin and health HTTP servers, one endpoint table, JSON views.
//! - [`annotation`]: follows the pod's route annotation (downward API file) and switches.
//! - [`gates`]: the migration gates: every switch checked against the order that loses messages.
//! - [`proxy`]: the name-server role, the per-broker listeners, the frame relay, renaming, signing, the credential check.
//! - [`preflight`]: `GET /preflight`: what the pod uses, checked against a cluster before a switch.
//! - [`routing`]: the pod's target cluster, switched at runtime and persisted.
//! - [`health`]: the readiness latch and the last upstream answer or failure.
//! - [`config`]: `config.toml` + environment, validated into [`Config`].
//! - [`acl`]: RocketMQ ACL signing (pure) and credential loading.
//! - [`metrics`]: every Prometheus family of the sidecar, declared once.
//! - [`heap`]: hands freed heap memory back to the system after a burst of connections.
//! - [`state`]: atomic writes of the state files.
//! - [`protocol`]: the remoting protocol, pure (frames, headers, route bodies, codes); knows no sockets.
//! - [`wait_ready`]: `rmq-sidecar wait-ready`, the postStart hook of post-start mode.

pub mod acl;
pub mod admin;
pub mod annotation;
pub mod app;
pub mod config;
pub mod gates;
pub mod health;
pub mod heap;
pub mod lifecycle;
pub mod metrics;
pub mod preflight;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod state;
pub mod wait_ready;

pub use app::App;
pub use config::Config;
pub use rmq_common::Target;
