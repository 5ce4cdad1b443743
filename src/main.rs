//! `rmq-sidecar`: run the sidecar, or `check` a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use rocketmq_sidecar::config::{Config, ProcessEnv};
use rocketmq_sidecar::logging::LogControl;
use rocketmq_sidecar::App;
use tokio::signal::unix::{signal, SignalKind};

/// Exit code for a bad configuration (EX_USAGE, as linkerd2-proxy does).
const EXIT_CONFIG: u8 = 64;

const USAGE: &str = "\
rmq-sidecar: RocketMQ migration sidecar

USAGE:
    rmq-sidecar [--config PATH]          run (defaults + RMQ_SIDECAR_* variables without --config)
    rmq-sidecar check [--config PATH]    validate the configuration and exit
    rmq-sidecar list-metrics             print every metric family (name, type, labels, help)
    rmq-sidecar --version | --help
";

enum Command {
    Run(Option<PathBuf>),
    Check(Option<PathBuf>),
    ListMetrics,
}

fn parse_args() -> Result<Command, String> {
    let mut args = std::env::args().skip(1);
    let mut check = false;
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "check" if !check && config.is_none() => check = true,
            "run" => {}
            "list-metrics" => return Ok(Command::ListMetrics),
            "--config" | "-c" => {
                config = Some(PathBuf::from(args.next().ok_or("--config needs a path")?));
            }
            s if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]))
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--version" | "-V" => {
                println!("rmq-sidecar {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(if check {
        Command::Check(config)
    } else {
        Command::Run(config)
    })
}

fn main() -> ExitCode {
    let command = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-sidecar: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (path, check_only) = match command {
        Command::Run(p) => (p, false),
        Command::Check(p) => (p, true),
        Command::ListMetrics => return list_metrics(),
    };
    let config = match Config::load(path.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-sidecar: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        for c in [&config.old, &config.new] {
            if let Err(e) =
                rocketmq_sidecar::acl::credentials::CredentialStore::new(c.credentials.clone())
            {
                eprintln!(
                    "rmq-sidecar: invalid configuration: credentials of cluster '{}': {e}",
                    c.target
                );
                return ExitCode::from(EXIT_CONFIG);
            }
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
        return ExitCode::SUCCESS;
    }
    let log = match LogControl::init(&config.log, config.log_format) {
        Ok(l) => std::sync::Arc::new(l),
        Err(e) => {
            eprintln!("rmq-sidecar: invalid configuration: log: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rmq-sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, log))
}

/// Prints every metric family: name, type, label names, help.
fn list_metrics() -> ExitCode {
    match rocketmq_sidecar::metrics::Metrics::new(prometheus::Registry::new()) {
        Ok(m) => {
            for (name, kind, help, labels) in m.families() {
                println!("{name}\t{kind}\t{}\t{help}", labels.join(","));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmq-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, log: std::sync::Arc<LogControl>) -> ExitCode {
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
            return ExitCode::from(130);
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
            ExitCode::from(130)
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: exiting now");
            ExitCode::from(130)
        }
    }
}
