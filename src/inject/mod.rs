//! Kubernetes sidecar injection: the mutating admission webhook
//! (`rmq-sidecar inject-webhook`) and the same patch offline (`rmq-sidecar inject -f`).
//!
//! - [`config`]: the `injector.toml` settings.
//! - [`patch`]: the pure pod mutation (what is added, idempotently).
//! - [`diff`]: RFC 6902 JSON Patch from the pod before and after.
//! - [`workload`]: the pod's workload and its key in the stage ConfigMap.
//! - [`review`]: AdmissionReview v1 in, AdmissionReview out (pure).
//! - [`kube`]: the one API call (read the stage ConfigMap).
//! - [`tls`]: the serving certificate, re-read when its files change.
//! - [`webhook`]: the HTTPS and health servers.
//! - [`offline`]: manifests in, injected manifests out.

pub mod config;
pub mod diff;
pub mod kube;
pub mod metrics;
pub mod offline;
pub mod patch;
pub mod review;
pub mod tls;
pub mod webhook;
pub mod workload;

pub use config::InjectorConfig;
