//! `rmq-injector`: the rocketmq-sidecar injector, the control-plane half. It adds the
//! sidecar to pods (the mutating admission webhook, `rmq-injector webhook`) and to
//! manifests (`rmq-injector inject -f`). It runs apart from the data plane so the pods'
//! sidecars carry no TLS server, YAML parser or Kubernetes client; what the two agree on
//! (annotation keys, labels, env variables, ports) is `rmq_common::contract`.
//!
//! # Layout
//! Dependencies point down this list (tested by `tests/layout.rs` of the workspace root).
//! - [`lifecycle`]: the process: logging, runtime, signals, exit codes.
//! - [`webhook`]: the HTTPS and health servers.
//! - [`offline`]: manifests in, injected manifests out.
//! - [`review`]: AdmissionReview v1 in, AdmissionReview out (pure).
//! - [`patch`]: the pure pod mutation (what is added, idempotently).
//! - [`diff`]: RFC 6902 JSON Patch from the pod before and after.
//! - [`workload`]: the pod's workload and its key in the stage ConfigMap.
//! - [`kube`]: the one API call (read the stage ConfigMap).
//! - [`tls`]: the serving certificate, re-read when its files change.
//! - [`metrics`]: the injector's Prometheus families.
//! - [`config`]: the `injector.toml` settings.

pub mod config;
pub mod diff;
pub mod kube;
pub mod lifecycle;
pub mod metrics;
pub mod offline;
pub mod patch;
pub mod review;
pub mod tls;
pub mod webhook;
pub mod workload;

pub use config::InjectorConfig;
