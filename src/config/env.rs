//! Environment overrides, read through the [`Env`] trait (a map in tests). The variable
//! names are part of the pod contract (`rmq_common::contract::env`).

use std::collections::HashMap;

/// Where variables come from: the process, or a map in tests.
pub trait Env {
    /// The value of `key`, if set (an empty value counts as unset).
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

pub use rmq_common::contract::env::*;

// === impl ProcessEnv ===

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.trim().is_empty()).cloned()
    }
}
