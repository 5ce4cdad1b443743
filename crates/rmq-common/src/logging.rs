//! Logging: `tracing` with a filter that can be changed at runtime (`PUT /log-level`),
//! human-readable lines by default or one JSON object per line.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

// === impl LogFormat ===

impl LogFormat {
    /// Parses "text" or "json" (surrounding blanks ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    /// "text" or "json".
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Checks a filter directive without installing anything: what `rmq-sidecar check` and
/// start-up both run, so a filter `check` accepts is one the process starts with.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter.trim())
        .map(|_| ())
        .map_err(|e| format!("'{filter}' is not a log filter ({e}); e.g. \"info\" or \"info,rocketmq_sidecar=debug\""))
}

/// The live log filter.
#[derive(Debug)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    current: Mutex<String>,
}

// === impl LogControl ===

impl LogControl {
    /// Installs the global subscriber with `filter` and `format`.
    pub fn init(filter: &str, format: LogFormat) -> Result<Self, String> {
        validate_filter(filter)?;
        let env_filter = EnvFilter::try_new(filter.trim()).map_err(|e| e.to_string())?;
        let (filter_layer, handle) = reload::Layer::new(env_filter);
        let ansi = std::io::stderr().is_terminal();
        let output = match format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(std::io::stderr)
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(filter_layer)
            .with(output)
            .try_init()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            handle: Some(handle),
            current: Mutex::new(filter.to_owned()),
        })
    }

    /// A control for a process whose logging is set up elsewhere (tests): reads work,
    /// changes are refused.
    pub fn fixed(filter: &str) -> Self {
        Self {
            handle: None,
            current: Mutex::new(filter.to_owned()),
        }
    }

    /// The filter in force.
    pub fn get(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the filter; an invalid directive changes nothing.
    pub fn set(&self, filter: &str) -> Result<(), String> {
        let parsed =
            EnvFilter::try_new(filter.trim()).map_err(|e| format!("invalid filter: {e}"))?;
        let Some(handle) = &self.handle else {
            return Err("this process's log filter is not controllable".to_owned());
        };
        handle.reload(parsed).map_err(|e| e.to_string())?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = filter.trim().to_owned();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_before_anything_is_installed() {
        assert!(validate_filter("info,rocketmq_sidecar=debug").is_ok());
        let e = validate_filter("x=y=z==").unwrap_err();
        assert!(e.contains("'x=y=z=='") && e.contains("e.g."), "{e}");
        assert_eq!(LogFormat::parse(" json "), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("yaml"), None);
    }
}
