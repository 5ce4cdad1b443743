//! Describing and encoding a Prometheus registry, the same way for the sidecar's and the
//! injector's metrics (`list-metrics` and `GET /metrics` of both binaries).

use prometheus::{Encoder, Registry, TextEncoder};

/// One declared family: name, type, help, label names.
pub type FamilyInfo = (String, &'static str, String, Vec<String>);

/// Families from their descriptors, sorted by name.
pub fn describe(descs: Vec<(&prometheus::core::Desc, &'static str)>) -> Vec<FamilyInfo> {
    let mut out: Vec<FamilyInfo> = descs
        .into_iter()
        .map(|(d, kind)| {
            (
                d.fq_name.clone(),
                kind,
                d.help.clone(),
                d.variable_labels.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A registry in the text exposition format (version 0.0.4), with its content type.
pub fn encode_text(registry: &Registry) -> (Vec<u8>, String) {
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    (out, encoder.format_type().to_owned())
}

/// Prints `families` one per line as `name<TAB>type<TAB>labels<TAB>help` (the format
/// `list-metrics` prints and the dashboard and alert tests read).
pub fn print_families(families: &[FamilyInfo]) {
    for (name, kind, help, labels) in families {
        println!("{name}\t{kind}\t{}\t{help}", labels.join(","));
    }
}
