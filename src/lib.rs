//! rocketmq-sidecar: a per-pod RocketMQ name server and broker relay that carries an
//! application from an old cluster to a new one without redeploying it.
//!
//! # Layout
//! - [`protocol`]: the remoting protocol, pure (frames, headers, route bodies).
//! - [`config`]: `config.toml` + environment, validated into [`Config`].
//! - [`routing`]: the pod's target cluster, switched at runtime and persisted.
//! - [`proxy`]: the name-server role, the per-broker listeners and the frame relay.
//! - [`admin`]: the admin and health HTTP servers.
//! - [`app`]: wiring, readiness and graceful shutdown.
//! - [`inject`]: the Kubernetes injector (admission webhook and offline `inject`).

pub mod acl;
pub mod admin;
pub mod annotation;
pub mod app;
pub mod config;
pub mod health;
pub mod inject;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod state;

pub use app::App;
pub use config::Config;
