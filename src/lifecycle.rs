//! The process lifecycle of `rmq-sidecar`: validation (one function for `check` and
//! `run`), logging and runtime set-up, signals, drain and exit codes.
//!
//! - Exit 64 (EX_USAGE, as linkerd2-proxy): the configuration, a credential source or the
//!   command line is invalid; nothing was bound.
//! - Exit 1: the sidecar could not start (a port taken, unreadable persisted state).
//! - SIGTERM or `POST /shutdown`: stop accepting, keep relaying until the app's
//!   connections close or `drain_seconds` pass, exit 0. A second SIGTERM exits 130 at once.
//! - SIGINT: exit 130 at once.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use rmq_common::logging::LogControl;
use tokio::signal::unix::{signal, SignalKind};

use crate::acl::credentials::CredentialStore;
use crate::config::{Config, ConfigError, Env};
use crate::App;

/// Exit code for a bad configuration or command line (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code after SIGINT or a second SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The file or a variable is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A cluster's credential source cannot be read (the message never holds a secret).
    #[error("invalid configuration: credentials of cluster '{target}': {source}")]
    Credentials {
        /// Which cluster.
        target: rmq_common::Target,
        /// Why.
        source: crate::acl::credentials::CredentialError,
    },
}

/// Everything `run` checks before it binds anything; `check` runs exactly this, so a
/// configuration `check` accepts is one `run` starts with.
pub fn validate(path: Option<&Path>, env: &dyn Env) -> Result<Config, ValidationError> {
    let config = Config::load(path, env)?;
    for c in [&config.old, &config.new] {
        CredentialStore::new(c.credentials.clone()).map_err(|source| {
            ValidationError::Credentials {
                target: c.target,
                source,
            }
        })?;
    }
    Ok(config)
}

/// `rmq-sidecar check`: validates and prints what would run.
pub fn check(path: Option<&Path>, env: &dyn Env) -> ExitCode {
    let config = match validate(path, env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-sidecar: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for c in [&config.old, &config.new] {
        println!(
            "credentials of cluster '{}': {}",
            c.target,
            c.credentials.describe()
        );
    }
    println!(
        "configuration is valid: target={} old={} new={} namesrv listen={}",
        config.target,
        config.old.namesrv.join(";"),
        config.new.namesrv.join(";"),
        config.namesrv_listen
    );
    ExitCode::SUCCESS
}

/// `rmq-sidecar [run]`: validates, sets up logging and the runtime, serves until a
/// signal, drains, exits.
pub fn run(path: Option<&Path>, env: &dyn Env) -> ExitCode {
    let config = match validate(path, env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-sidecar: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = match LogControl::init(&config.log, config.log_format) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            // validate() checked the filter; this is a second subscriber (a bug).
            eprintln!("rmq-sidecar: cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(serve(config, log))
}

/// The tokio runtime: two workers (a sidecar shares its pod's CPU; more threads would
/// only add memory).
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("rmq-sidecar: cannot start the runtime: {e}");
            None
        }
    }
}

async fn serve(config: Config, log: Arc<LogControl>) -> ExitCode {
    let drain = config.drain;
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let running = match App::new(config).with_log_control(log).start().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = running.shutdown_requested() => tracing::info!("POST /shutdown: draining"),
        _ = int.recv() => {
            tracing::info!("SIGINT: exiting now");
            return ExitCode::from(EXIT_INTERRUPTED);
        }
    }
    tracing::info!(
        open_connections = running.conns.count(),
        drain_seconds = drain.as_secs(),
        "SIGTERM: still serving until the app's connections close or the drain period ends"
    );
    tokio::select! {
        idle = running.drain(drain) => {
            if idle {
                tracing::info!("no client connection left; exiting");
            } else {
                tracing::info!(open_connections = running.conns.count(), "drain period over; exiting");
            }
            ExitCode::SUCCESS
        }
        _ = term.recv() => {
            tracing::info!("second SIGTERM: exiting now");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: exiting now");
            ExitCode::from(EXIT_INTERRUPTED)
        }
    }
}
