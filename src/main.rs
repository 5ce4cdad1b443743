//! `rmq-sidecar`: parses the command line and hands over. What each command does lives in
//! the library: [`rocketmq_sidecar::lifecycle`] (`run`, `check`),
//! [`rocketmq_sidecar::wait_ready`] and [`rocketmq_sidecar::metrics`] (`list-metrics`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rocketmq_sidecar::config::ProcessEnv;
use rocketmq_sidecar::lifecycle::{self, EXIT_CONFIG};
use rocketmq_sidecar::{metrics, wait_ready};

const USAGE: &str = "\
rmq-sidecar: RocketMQ migration sidecar (the data plane in every pod)

USAGE:
    rmq-sidecar [--config PATH]          run (defaults + RMQ_SIDECAR_* variables without --config)
    rmq-sidecar check [--config PATH]    validate the configuration exactly as run does, and exit
    rmq-sidecar list-metrics             print every metric family (name, type, labels, help)
    rmq-sidecar wait-ready [--url URL] [--timeout-seconds N]
                                         wait until the sidecar's /ready answers 200
                                         (default http://127.0.0.1:9879/ready, 120 s)
    rmq-sidecar --version | --help

The Kubernetes injector is a separate binary: rmq-injector.
";

#[derive(Debug)]
enum Command {
    Run(Option<PathBuf>),
    Check(Option<PathBuf>),
    ListMetrics,
    WaitReady { url: String, timeout: Duration },
    Help,
    Version,
}

fn parse_args(args: Vec<String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut subcommand: Option<String> = None;
    let mut config = None;
    let mut url = None;
    let mut timeout = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "run" | "check" | "list-metrics" | "wait-ready" if subcommand.is_none() => {
                subcommand = Some(arg.clone())
            }
            "inject" | "inject-webhook" => {
                return Err(format!(
                    "'{arg}' moved to the injector binary: rmq-injector {}",
                    if arg == "inject" { "inject" } else { "webhook" }
                ))
            }
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            s if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]))
            }
            "--url" => url = Some(value("--url")?),
            "--timeout-seconds" => {
                let v = value("--timeout-seconds")?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout-seconds '{v}' is not a number of seconds"))?;
                timeout = Some(Duration::from_secs(n));
            }
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    let sub = subcommand.unwrap_or_else(|| "run".into());
    let only = |allowed: &[&str]| -> Result<(), String> {
        let given = [
            ("--config", config.is_some()),
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
    match parse_args(std::env::args().skip(1).collect()) {
        Ok(Command::Run(path)) => lifecycle::run(path.as_deref(), &ProcessEnv),
        Ok(Command::Check(path)) => lifecycle::check(path.as_deref(), &ProcessEnv),
        Ok(Command::ListMetrics) => metrics::list_metrics(),
        Ok(Command::WaitReady { url, timeout }) => wait_ready::run(&url, timeout),
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("rmq-sidecar {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmq-sidecar: {e}\n\n{USAGE}");
            ExitCode::from(EXIT_CONFIG)
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
            parse_args(args("check --config c.toml")),
            Ok(Command::Check(Some(_)))
        ));
        assert!(matches!(
            parse_args(args("wait-ready --timeout-seconds 5")),
            Ok(Command::WaitReady { timeout, .. }) if timeout == Duration::from_secs(5)
        ));
        for (line, message) in [
            ("run --url x", "--url does not apply to 'run'"),
            (
                "inject -f x.yaml",
                "moved to the injector binary: rmq-injector inject",
            ),
            ("inject-webhook", "rmq-injector webhook"),
            ("wait-ready --timeout-seconds soon", "is not a number"),
            ("check --bogus", "unknown argument '--bogus'"),
        ] {
            match parse_args(args(line)) {
                Err(e) => assert!(e.contains(message), "{line}: {e}"),
                Ok(_) => panic!("{line} was accepted"),
            }
        }
    }
}
