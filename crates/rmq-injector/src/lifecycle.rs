//! The process lifecycle of `rmq-injector`: configuration, logging, runtime, signals and
//! exit codes.
//!
//! - Exit 64: the configuration or the command line is invalid; nothing was bound.
//! - Exit 1: the webhook could not start, or `inject` could not read or inject its input.
//! - SIGTERM: keep answering for [`DRAIN`] while the Service's endpoints drop this replica
//!   (with `failurePolicy: Fail` a refused call would fail a pod creation), then exit 0.
//! - SIGINT, or a second SIGTERM: exit 130 at once.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use rmq_common::contract::env;
use rmq_common::logging::{LogControl, LogFormat};
use rmq_common::metrics::print_families;
use rmq_common::RoleTargets;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Uninjectable;
use crate::metrics::InjectorMetrics;
use crate::InjectorConfig;

/// How long the webhook keeps answering after SIGTERM.
pub const DRAIN: Duration = Duration::from_secs(5);
/// Exit code for a bad configuration or command line (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code after SIGINT or a second SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// `rmq-injector webhook`: serves until SIGTERM/SIGINT.
pub fn webhook(path: &Path) -> ExitCode {
    let config = match InjectorConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-injector: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
    let filter = var(env::LOG).unwrap_or_else(|| "info".into());
    let format = match var(env::LOG_FORMAT) {
        None => LogFormat::Text,
        Some(v) => match LogFormat::parse(&v) {
            Some(f) => f,
            None => {
                eprintln!(
                    "rmq-injector: {} '{v}' is not text or json",
                    env::LOG_FORMAT
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    if let Err(e) = LogControl::init(&filter, format) {
        eprintln!("rmq-injector: {}: {e}", env::LOG);
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rmq-injector: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: InjectorConfig) -> ExitCode {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let mut server = tokio::spawn(crate::webhook::run(config));
    tokio::select! {
        result = &mut server => match result {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "injector cannot start");
                ExitCode::FAILURE
            }
            Err(e) => {
                tracing::error!(error = %e, "injector stopped");
                ExitCode::FAILURE
            }
        },
        _ = term.recv() => {
            tracing::info!(
                seconds = DRAIN.as_secs(),
                "SIGTERM: still answering while the Service's endpoints drop this replica"
            );
            tokio::select! {
                _ = tokio::time::sleep(DRAIN) => ExitCode::SUCCESS,
                _ = term.recv() => ExitCode::from(EXIT_INTERRUPTED),
                _ = int.recv() => ExitCode::from(EXIT_INTERRUPTED),
            }
        }
        _ = int.recv() => ExitCode::from(EXIT_INTERRUPTED),
    }
}

/// `rmq-injector inject -f`: the injected manifest on stdout, one note per template on
/// stderr.
pub fn inject_offline(file: &Path, config: &Path, route: Option<RoleTargets>) -> ExitCode {
    let config = match InjectorConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-injector: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rmq-injector: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    // Offline there is nobody to admit a pod "unchanged": the policy still decides
    // whether a template that cannot be injected fails the command.
    let policy: Uninjectable = config.uninjectable;
    match crate::offline::inject_manifest(
        &text,
        &config.sidecar,
        route.map(|r| r.to_string()).as_deref(),
        policy,
    ) {
        Ok(out) => {
            for note in &out.notes {
                eprintln!("rmq-injector inject: {note}");
            }
            print!("{}", out.yaml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmq-injector inject: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rmq-injector list-metrics`: every family of the injector, one per line.
pub fn list_metrics() -> ExitCode {
    match InjectorMetrics::new(prometheus::Registry::new()) {
        Ok(m) => {
            print_families(&m.families());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmq-injector: cannot declare metrics: {e}");
            ExitCode::FAILURE
        }
    }
}
