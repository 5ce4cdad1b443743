//! `rmq-injector`: parses the command line and hands over to
//! [`rmq_injector::lifecycle`].

use std::path::PathBuf;
use std::process::ExitCode;

use rmq_common::RoleTargets;
use rmq_injector::lifecycle::{self, EXIT_CONFIG};

const USAGE: &str = "\
rmq-injector: the rocketmq-sidecar Kubernetes injector

USAGE:
    rmq-injector webhook --config injector.toml
                                         the mutating admission webhook (HTTPS)
    rmq-injector inject -f FILE|- --config injector.toml [--route ROUTE]
                                         print FILE with the sidecar injected into its pod
                                         templates; --route sets their route annotation:
                                         old, new or producer=new,consumer=old
    rmq-injector list-metrics            print every metric family (name, type, labels, help)
    rmq-injector --version | --help
";

#[derive(Debug)]
enum Command {
    Webhook(PathBuf),
    Inject {
        file: PathBuf,
        config: PathBuf,
        route: Option<RoleTargets>,
    },
    ListMetrics,
    Help,
    Version,
}

fn parse_args(args: Vec<String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut subcommand: Option<String> = None;
    let mut config = None;
    let mut file = None;
    let mut route = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "webhook" | "inject" | "list-metrics" if subcommand.is_none() => {
                subcommand = Some(arg.clone())
            }
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            s if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]))
            }
            "-f" | "--filename" => file = Some(PathBuf::from(value("-f")?)),
            "--route" => {
                let v = value("--route")?;
                route = Some(RoleTargets::parse(&v).map_err(|e| format!("--route: {e}"))?);
            }
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    let Some(sub) = subcommand else {
        return Err("which command? webhook, inject or list-metrics".into());
    };
    let only = |allowed: &[&str]| -> Result<(), String> {
        let given = [
            ("--config", config.is_some()),
            ("-f", file.is_some()),
            ("--route", route.is_some()),
        ];
        match given.iter().find(|(n, set)| *set && !allowed.contains(n)) {
            Some((n, _)) => Err(format!("{n} does not apply to '{sub}'")),
            None => Ok(()),
        }
    };
    Ok(match sub.as_str() {
        "webhook" => {
            only(&["--config"])?;
            Command::Webhook(config.ok_or("webhook needs --config injector.toml")?)
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
            only(&[])?;
            Command::ListMetrics
        }
    })
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1).collect()) {
        Ok(Command::Webhook(path)) => lifecycle::webhook(&path),
        Ok(Command::Inject {
            file,
            config,
            route,
        }) => lifecycle::inject_offline(&file, &config, route),
        Ok(Command::ListMetrics) => lifecycle::list_metrics(),
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("rmq-injector {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rmq-injector: {e}\n\n{USAGE}");
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
        assert!(matches!(
            parse_args(args("inject -f x.yaml --config i.toml --route new")),
            Ok(Command::Inject {
                route: Some(r),
                ..
            }) if r == RoleTargets::both(rmq_common::Target::New)
        ));
        assert!(matches!(
            parse_args(args("inject -f x --config i.toml --route producer=new,consumer=old")),
            Ok(Command::Inject { route: Some(r), .. }) if r.whole().is_none()
        ));
        assert!(matches!(
            parse_args(args("webhook --config i.toml")),
            Ok(Command::Webhook(_))
        ));
        for (line, message) in [
            ("", "which command?"),
            ("inject -f x.yaml", "inject needs --config"),
            ("webhook", "webhook needs --config"),
            (
                "list-metrics --route new",
                "--route does not apply to 'list-metrics'",
            ),
            (
                "inject -f x --config c --route sideways",
                "--route: 'sideways' is not a route",
            ),
        ] {
            match parse_args(args(line)) {
                Err(e) => assert!(e.contains(message), "{line}: {e}"),
                Ok(_) => panic!("{line} was accepted"),
            }
        }
    }
}
