//! `lameduck`: the lameduck SDK's command for what cannot link it. Distroless images have
//! no shell, `curl` or `sleep`, and the platform may deliver an exec hook more than once:
//!
//! - `run -- CMD`: a supervisor for a program that cannot link the SDK: PID 1 duties,
//!   the admin endpoints, the lame duck, the stop signal and the deadline ([`run`]);
//! - `probe URL`: the kubelet's HTTP probe as an exec probe ([`probe`]), or a gRPC health
//!   check for `grpc://` URLs ([`grpc_probe`]);
//! - `prestop`: the preStop hook, calling `/shutdown` and/or sleeping ([`prestop`]);
//! - `once --key K -- CMD`: once-per-container execution of at-least-once hooks ([`once`]);
//! - `install DIR`: copies this binary into a shared volume, for images without `cp`
//!   ([`install`]);
//! - `wait-ready URL`: waits until an http:// or tcp:// URL is ready ([`wait_ready`]);
//! - `simulate -- CMD`: plays the kubelet's termination sequence against a service under
//!   load and judges it ([`simulate`]).
//!
//! Exit codes are documented in `lameduck help` and in the crate's README.
//!
//! For images, build it statically (`RUSTFLAGS="-C target-feature=+crt-static" cargo build
//! --release -p lameduck-cli --target x86_64-unknown-linux-gnu`): it then needs nothing at
//! run time, not even libc, and runs in `distroless/static` or `scratch`. Host names are
//! resolved by static glibc's built-in `files` and `dns` sources; IP literals are never
//! resolved. See the README, "Building for images".

// Unsafe code is denied (not forbidden) for one audited block: the `pre_exec` hook in
// `child.rs`, which lets the `once` command inherit the key's lock (so a killed runner's
// leftover processes keep the key locked) and sets PR_SET_PDEATHSIG.
#![deny(unsafe_code)]

mod child;
mod cli;
mod duration;
mod grpc_probe;
mod grpc_target;
mod header;
mod hook_log;
mod http_get;
mod install;
mod on_panic;
mod once;
mod prestop;
mod probe;
mod regular_file;
mod run;
mod simulate;
mod state;
mod target;
mod wait_ready;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::hook_log::HookLog;
use crate::target::Target;

/// Exit code of `once` when lameduck itself failed before running the command (the
/// convention of `env`, `timeout` and `docker run`).
const ONCE_INTERNAL_ERROR: u8 = 125;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help / --version.
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let ready = match args
                .ready
                .as_deref()
                .map(run::ReadyProbe::parse)
                .transpose()
            {
                Ok(ready) => ready,
                Err(err) => usage_error("run", &err),
            };
            ExitCode::from(run::run(run::Plan {
                command: args.command,
                ready,
                stop_signal: args.stop_signal,
            }))
        }
        Command::Probe(args) if grpc_target::is_grpc(&args.url) => {
            // Every bad grpc:// URL is a usage error: there is no older behaviour to keep.
            let target = grpc_target::GrpcTarget::parse(&args.url)
                .unwrap_or_else(|err| usage_error("probe", &err));
            let headers = parse_headers("probe", &args.headers);
            let metadata = grpc_probe::Metadata::new(&headers)
                .unwrap_or_else(|err| usage_error("probe", &err));
            match grpc_probe::run(&target, &metadata, args.timeout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(failure) => {
                    eprintln!("lameduck probe: {failure}");
                    ExitCode::from(failure.exit_code())
                }
            }
        }
        Command::Probe(args) => {
            let url = match Target::parse(&args.url) {
                Ok(url) => url,
                // A port that is not a port is a usage error (2), never port 80.
                Err(err) if err.is_bad_port() => usage_error("probe", &err),
                // Other bad URLs keep their documented exit code 1, on one line.
                Err(err) => {
                    eprintln!("lameduck probe: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let headers = parse_headers("probe", &args.headers);
            match probe::run(url, headers, args.timeout) {
                probe::Verdict::Success { warning } => {
                    if let Some(warning) = warning {
                        eprintln!("lameduck probe: {warning}");
                    }
                    ExitCode::SUCCESS
                }
                probe::Verdict::Failure(reason) => {
                    eprintln!("lameduck probe: {reason}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Prestop(args) => {
            let url = match args.url.as_deref().map(Target::parse).transpose() {
                Ok(url) => url,
                Err(err) => usage_error("prestop", &err),
            };
            let headers = parse_headers("prestop", &args.headers);
            let mut log = HookLog::open(args.log_to, "lameduck prestop");
            let plan = prestop::Plan {
                url,
                headers,
                timeout: args.timeout,
                sleep: args.sleep,
            };
            prestop::run(plan, &mut log);
            ExitCode::SUCCESS
        }
        Command::Once(args) => match once::run(&args.key, &args.state_dir, &args.command) {
            // Exit codes from wait(2) fit in a byte; 128 + signal number does too.
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(ONCE_INTERNAL_ERROR)),
            Err(err) => {
                eprintln!("lameduck once: {err}");
                ExitCode::from(ONCE_INTERNAL_ERROR)
            }
        },
        Command::Install(args) => match install::run(&args.dir) {
            Ok(installed) => {
                eprintln!("lameduck install: installed {}", installed.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("lameduck install: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Simulate(args) => {
            let http_url = |flag: &str, text: &str| match Target::parse(text) {
                Ok(url) => url,
                Err(err) => usage_error("simulate", &format!("{flag}: {err}")),
            };
            let ready = http_url("--ready", &args.ready);
            let live = args.live.as_deref().map(|u| http_url("--live", u));
            let prestop = args.prestop.as_deref().map(|u| http_url("--prestop", u));
            let traffic = http_url("--traffic", &args.traffic);
            let mut load = match lameduck_load::LoadConfig::new(&args.traffic) {
                Ok(load) => load,
                Err(err) => usage_error("simulate", &format!("--traffic: {err}")),
            };
            load.connections = usize::from(args.clients);
            load.rate = args.rate;
            load.duration = None;
            load.request_timeout = args.request_timeout;
            if args.propagation > args.grace {
                usage_error(
                    "simulate",
                    &format!(
                        "--propagation {} is longer than --grace {}: traffic cannot outlast the grace period",
                        duration::display(args.propagation),
                        duration::display(args.grace)
                    ),
                );
            }
            ExitCode::from(simulate::run(simulate::Plan {
                command: args.command,
                ready,
                live,
                prestop,
                load,
                traffic,
                before: args.before,
                propagation: args.propagation,
                grace: args.grace,
                startup_timeout: args.startup_timeout,
                probe_period: args.probe_period,
                json: args.json,
                plot: args.plot,
                service_log: args.service_log,
                pod_env: !args.no_pod_env,
            }))
        }
        Command::WaitReady(args) => {
            let probe = match wait_ready::parse(&args.url) {
                Ok(probe) => probe,
                Err(err) => usage_error("wait-ready", &err),
            };
            match wait_ready::run(&probe, args.timeout) {
                wait_ready::Outcome::Ready(after) => {
                    eprintln!(
                        "lameduck wait-ready: {probe} ready after {}",
                        duration::display(after)
                    );
                    ExitCode::SUCCESS
                }
                wait_ready::Outcome::TimedOut(reason) => {
                    eprintln!(
                        "lameduck wait-ready: {probe} not ready after {}: {reason}",
                        duration::display(args.timeout)
                    );
                    ExitCode::FAILURE
                }
                wait_ready::Outcome::Internal(err) => {
                    eprintln!("lameduck wait-ready: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Exits as clap does for a bad argument (status 2, with the subcommand's usage), for a
/// URL checked after parsing. The message is `err`'s, which never shows credentials;
/// clap's own value-parser message would repeat the argument as given.
fn usage_error(subcommand: &str, err: &dyn std::fmt::Display) -> ! {
    let mut command = Cli::command();
    command.build();
    match command.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(ErrorKind::ValueValidation, err).exit(),
        None => command.error(ErrorKind::ValueValidation, err).exit(),
    }
}

/// The `--header` arguments, parsed here rather than by clap, whose message would repeat a
/// malformed one as typed (a secret, often); a bad one is a usage error that does not.
fn parse_headers(subcommand: &str, raw: &[String]) -> Vec<header::Header> {
    raw.iter()
        .map(|h| header::parse(h).unwrap_or_else(|err| usage_error(subcommand, &err)))
        .collect()
}
