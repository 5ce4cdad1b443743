//! What the sidecar (`rmq-sidecar`, the data plane in every pod) and the injector
//! (`rmq-injector`, the control-plane webhook) agree on, and the few pieces of server
//! plumbing both use. Nothing here knows RocketMQ's wire protocol or Kubernetes' API.
//!
//! # Layout
//! - [`cluster`]: [`Target`], the id of a cluster (`old` or `new`); [`Role`] and
//!   [`RoleTargets`], where a pod's producers and consumers go.
//! - [`clock`]: wall-clock milliseconds, as every persisted and reported timestamp uses.
//! - [`contract`]: the pod contract: annotation keys and values, labels, environment
//!   variable names, ports, paths and state file names.
//! - [`serve`]: the one accept loop every server of both binaries runs (connection cap,
//!   shutdown, accept back-off).
//! - [`http`]: small HTTP/1.1 response helpers and a bounded JSON body reader.
//! - [`metrics`]: describing and encoding a Prometheus registry.
//! - [`logging`]: `tracing` set-up with a filter that can change at runtime.

pub mod clock;
pub mod cluster;
pub mod contract;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod serve;

pub use cluster::{Role, RoleTargets, Target};
