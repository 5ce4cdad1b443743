//! The injector's metrics, in a registry of their own (the injector process serves no
//! relay metrics).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use rmq_common::metrics::{describe, encode_text, FamilyInfo};

/// Every injector metric family.
#[derive(Clone)]
pub struct InjectorMetrics {
    registry: Registry,
    /// `rmq_sidecar_injector_admissions_total{outcome}`.
    pub admissions: IntCounterVec,
    /// `rmq_sidecar_injector_admission_duration_seconds{outcome}`.
    pub admission_duration: HistogramVec,
    /// `rmq_sidecar_injector_malformed_reviews_total{reason}`.
    pub malformed: IntCounterVec,
    /// `rmq_sidecar_injector_stage_lookups_total{result}`.
    pub stage_lookups: IntCounterVec,
    /// `rmq_sidecar_injector_cert_reloads_total{result}`.
    pub cert_reloads: IntCounterVec,
    /// `rmq_sidecar_injector_connections_refused_total{listener}`.
    pub connections_refused: IntCounterVec,
}

impl InjectorMetrics {
    /// Declares every family in `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let admissions = counter(
            "rmq_sidecar_injector_admissions_total",
            "Pod admissions answered, by outcome (injected, already_injected, ignored, skipped_host_network, uninjectable_admitted, denied).",
            "outcome",
        )?;
        let malformed = counter(
            "rmq_sidecar_injector_malformed_reviews_total",
            "Requests to /inject that were not an AdmissionReview v1 (answered 400), by reason.",
            "reason",
        )?;
        let stage_lookups = counter(
            "rmq_sidecar_injector_stage_lookups_total",
            "Workload stage lookups in the stage ConfigMap, by result (found, absent, error, invalid).",
            "result",
        )?;
        let cert_reloads = counter(
            "rmq_sidecar_injector_cert_reloads_total",
            "Serving certificate loads after a file change, by result (ok, error).",
            "result",
        )?;
        let connections_refused = counter(
            "rmq_sidecar_injector_connections_refused_total",
            "Connections closed at accept because the listener (webhook, health) was at its connection cap.",
            "listener",
        )?;
        for l in ["webhook", "health"] {
            connections_refused.with_label_values(&[l]);
        }
        let admission_duration = HistogramVec::new(
            HistogramOpts::new(
                "rmq_sidecar_injector_admission_duration_seconds",
                "Time to answer one admission review, stage lookup included.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["outcome"],
        )?;
        registry.register(Box::new(admission_duration.clone()))?;
        Ok(Self {
            registry,
            admissions,
            admission_duration,
            malformed,
            stage_lookups,
            cert_reloads,
            connections_refused,
        })
    }

    /// Every family as (name, type, help, label names), for `rmq-injector list-metrics`.
    pub fn families(&self) -> Vec<FamilyInfo> {
        use prometheus::core::Collector;
        let mut descs = Vec::new();
        for c in [
            &self.admissions,
            &self.malformed,
            &self.stage_lookups,
            &self.cert_reloads,
            &self.connections_refused,
        ] {
            descs.extend(c.desc().into_iter().map(|d| (d, "counter")));
        }
        descs.extend(
            self.admission_duration
                .desc()
                .into_iter()
                .map(|d| (d, "histogram")),
        );
        describe(descs)
    }

    /// The text exposition format and its content type.
    pub fn encode(&self) -> (Vec<u8>, String) {
        encode_text(&self.registry)
    }
}
