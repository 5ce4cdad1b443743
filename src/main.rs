//! `rmq-sidecar`: run the sidecar, `check` a configuration, run the Kubernetes injector
//! (`inject-webhook`, offline `inject`), or `wait-ready` for a postStart hook.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rocketmq_sidecar::config::{Config, LogFormat, ProcessEnv, Target};
use rocketmq_sidecar::inject::config::Uninjectable;
use rocketmq_sidecar::inject::InjectorConfig;
use rocketmq_sidecar::logging::LogControl;
use rocketmq_sidecar::App;
use tokio::signal::unix::{signal, SignalKind};

mod wait_ready;

/// How long the injector keeps answering after SIGTERM.
const INJECTOR_DRAIN: Duration = Duration::from_secs(5);

/// Exit code for a bad configuration or usage (EX_USAGE, as linkerd2-proxy does).
const EXIT_CONFIG: u8 = 64;

const USAGE: &str = "\
rmq-sidecar: RocketMQ migration sidecar

USAGE:
    rmq-sidecar [--config PATH]          run (defaults + RMQ_SIDECAR_* variables without --config)
    rmq-sidecar check [--config PATH]    validate the configuration and exit
    rmq-sidecar list-metrics             print every metric family (name, type, labels, help)
    rmq-sidecar inject-webhook --config injector.toml
                                         the Kubernetes mutating admission webhook
    rmq-sidecar inject -f FILE|- --config injector.toml [--route old|new]
                                         print FILE with the sidecar injected into its pod
                                         templates (--route sets their route annotation)
    rmq-sidecar wait-ready [--url URL] [--timeout-seconds N]
                                         wait until the sidecar's /ready answers 200
                                         (default http://127.0.0.1:9879/ready, 120 s)
    rmq-sidecar --version | --help
";

enum Command {
    Run(Option<PathBuf>),
    Check(Option<PathBuf>),
    ListMetrics,
    InjectWebhook(PathBuf),
    Inject {
        file: PathBuf,
        config: PathBuf,
        route: Option<Target>,
    },
    WaitReady {
        url: String,
        timeout: Duration,
    },
}

fn parse_args(args: Vec<String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut subcommand: Option<String> = None;
    let mut config = None;
    let mut file = None;
    let mut route = None;
    let mut url = None;
    let mut timeout = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "run" | "check" | "list-metrics" | "inject-webhook" | "inject" | "wait-ready"
                if subcommand.is_none() =>
            {
                subcommand = Some(arg.clone())
            }
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            s if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]))
            }
            "-f" | "--filename" => file = Some(PathBuf::from(value("-f")?)),
            "--route" => {
                let v = value("--route")?;
                route = Some(
                    Target::parse(&v)
                        .ok_or_else(|| format!("--route '{v}' is not a target; use old or new"))?,
                );
            }
            "--url" => url = Some(value("--url")?),
            "--timeout-seconds" => {
                let v = value("--timeout-seconds")?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout-seconds '{v}' is not a number of seconds"))?;
                timeout = Some(Duration::from_secs(n));
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
    let sub = subcommand.unwrap_or_else(|| "run".into());
    let only = |allowed: &[&str]| -> Result<(), String> {
        let given = [
            ("--config", config.is_some()),
            ("-f", file.is_some()),
            ("--route", route.is_some()),
            ("--url", url.is_some()),
            ("--timeout-seconds", timeout.is_some()),
        ];
        match given.iter().find(|(n, set)| *set && !allowed.contains(n)) {
            Some((n, _)) => Err(format!("{n} does not apply to '{sub}'")),
            None => Ok(()),
        }
    };
    Ok(match sub.as_str() {
        "run" => {
            only(&["--config"])?;
            Command::Run(config)
        }
        "check" => {
            only(&["--config"])?;
            Command::Check(config)
        }
        "list-metrics" => {
            only(&[])?;
            Command::ListMetrics
        }
        "inject-webhook" => {
            only(&["--config"])?;
            Command::InjectWebhook(config.ok_or("inject-webhook needs --config injector.toml")?)
        }
        "inject" => {
            only(&["--config", "-f", "--route"])?;
            Command::Inject {
                file: file.ok_or("inject needs -f FILE (or -f - for stdin)")?,
                config: config.ok_or(
                    "inject needs --config injector.toml (image, name servers: the webhook's settings)",
                )?,
                route,
            }
        }
        _ => {
            only(&["--url", "--timeout-seconds"])?;
            Command::WaitReady {
                url: url.unwrap_or_else(|| "http://127.0.0.1:9879/ready".into()),
                timeout: timeout.unwrap_or(Duration::from_secs(120)),
            }
        }
    })
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1).collect()) {
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
        Command::InjectWebhook(path) => return inject_webhook(&path),
        Command::Inject {
            file,
            config,
            route,
        } => return inject_offline(&file, &config, route),
        Command::WaitReady { url, timeout } => return wait_ready::run(&url, timeout),
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
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(run(config, log))
}

/// The tokio runtime of `run` and `inject-webhook`: two workers (a sidecar shares its
/// pod's CPU; more threads would only add memory).
fn runtime() -> Option<tokio::runtime::Runtime> {
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

/// Prints every metric family: name, type, label names, help.
fn list_metrics() -> ExitCode {
    let sidecar = rocketmq_sidecar::metrics::Metrics::new(prometheus::Registry::new());
    let injector =
        rocketmq_sidecar::inject::metrics::InjectorMetrics::new(prometheus::Registry::new());
    match sidecar.and_then(|s| Ok((s, injector?))) {
        Ok((sidecar, injector)) => {
            for (name, kind, help, labels) in
                sidecar.families().into_iter().chain(injector.families())
            {
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

/// `inject-webhook`: serves until SIGTERM/SIGINT.
fn inject_webhook(path: &std::path::Path) -> ExitCode {
    let config = match InjectorConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-sidecar: invalid injector configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let filter = env("RMQ_SIDECAR_LOG").unwrap_or_else(|| "info".into());
    let format = match env("RMQ_SIDECAR_LOG_FORMAT").as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            eprintln!("rmq-sidecar: RMQ_SIDECAR_LOG_FORMAT '{other}' is not text or json");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = LogControl::init(&filter, format) {
        eprintln!("rmq-sidecar: RMQ_SIDECAR_LOG: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let mut server = tokio::spawn(rocketmq_sidecar::inject::webhook::run(config));
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
                // The API server may still pick this replica until the endpoints drop it;
                // with failurePolicy Fail a refused call would fail a pod creation.
                tracing::info!(
                    seconds = INJECTOR_DRAIN.as_secs(),
                    "SIGTERM: still answering while the Service's endpoints drop this replica"
                );
                tokio::select! {
                    _ = tokio::time::sleep(INJECTOR_DRAIN) => ExitCode::SUCCESS,
                    _ = term.recv() => ExitCode::from(130),
                    _ = int.recv() => ExitCode::from(130),
                }
            }
            _ = int.recv() => ExitCode::from(130),
        }
    })
}

/// `inject -f`: the injected manifest on stdout, one note per template on stderr.
fn inject_offline(
    file: &std::path::Path,
    config: &std::path::Path,
    route: Option<Target>,
) -> ExitCode {
    let config = match InjectorConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rmq-sidecar: invalid injector configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            Ok(_) => Ok(s),
            Err(e) => Err(e),
        }
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rmq-sidecar: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    // Offline there is nobody to admit a pod "unchanged": the policy still decides
    // whether a template that cannot be injected fails the command.
    let policy: Uninjectable = config.uninjectable;
    match rocketmq_sidecar::inject::offline::inject_manifest(
        &text,
        &config.sidecar,
        route.map(Target::as_str),
        policy,
    ) {
        Ok(out) => {
            for note in &out.notes {
                eprintln!("rmq-sidecar inject: {note}");
            }
            print!("{}", out.yaml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmq-sidecar inject: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn subcommands_take_only_their_options() {
        assert!(matches!(parse_args(args("")), Ok(Command::Run(None))));
        assert!(matches!(
            parse_args(args("inject -f x.yaml --config i.toml --route new")),
            Ok(Command::Inject {
                route: Some(Target::New),
                ..
            })
        ));
        assert!(matches!(
            parse_args(args("wait-ready --timeout-seconds 5")),
            Ok(Command::WaitReady { timeout, .. }) if timeout == Duration::from_secs(5)
        ));
        for (line, message) in [
            ("inject -f x.yaml", "inject needs --config"),
            ("inject-webhook", "inject-webhook needs --config"),
            ("run --route new", "--route does not apply to 'run'"),
            ("inject -f x --config c --route sideways", "is not a target"),
            ("wait-ready --timeout-seconds soon", "is not a number"),
        ] {
            match parse_args(args(line)) {
                Err(e) => assert!(e.contains(message), "{line}: {e}"),
                Ok(_) => panic!("{line} was accepted"),
            }
        }
    }
}
