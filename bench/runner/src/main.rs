//! `lameduck-bench`: lameduck against the naive `axum::serve(..).with_graceful_shutdown(..)`
//! baseline (and, in parts 1 and 2, against that baseline with a sleep as long as
//! lameduck's delay before its graceful shutdown), in the same run, on this machine. See
//! BENCHMARKS.md.
//!
//! 1. failed requests across a shutdown ([`failed_requests`]);
//! 2. a rolling restart behind nginx ([`rolling_restart`]);
//! 3. request-path overhead with wrk, and the `InFlightLayer` criterion benchmark
//!    ([`overhead`]);
//! 4. drain speed: SIGTERM → exit with idle connections and with slow requests in flight
//!    ([`drain_speed`]);
//! 5. resident memory per connection ([`memory`]);
//! 6. failed RPCs across a shutdown, gRPC: part 1's method with lameduck-tonic's `greeter`
//!    against tonic's own `serve_with_shutdown` ([`grpc`]).
//!
//! `lameduck-bench all --out DIR [--quick]` runs everything and writes `results.json`,
//! `table.md`, CSVs and `shutdown.png` to DIR, and prints the table. `results.json` leaves
//! out the load reports' `failures_at` lists (a time for each failed request, thousands
//! for plain axum): the timeline CSVs have their shape. The exit status is
//! non-zero when a part could not run — not when a goal is missed (goals are reported) —
//! except that `--quick` asserts lameduck's 0 failed requests in part 1.

mod drain_speed;
mod failed_requests;
mod grpc;
mod instructions;
mod memory;
mod overhead;
mod process;
mod rolling_restart;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::process::{Bins, TempDir};

/// lameduck's benchmarks, side by side with plain axum (see BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(name = "lameduck-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every part, then the table.
    All(Opts),
    /// Part 1: failed requests across a shutdown.
    FailedRequests(Opts),
    /// Part 2: rolling restart of 3 replicas behind nginx.
    RollingRestart(Opts),
    /// Part 3: request-path overhead (wrk, criterion).
    Overhead(Opts),
    /// Part 4: drain speed (idle connections, slow requests).
    DrainSpeed(Opts),
    /// Part 5: resident memory per connection.
    Memory(Opts),
    /// Part 6: failed RPCs across a shutdown, gRPC (lameduck-tonic against tonic's own
    /// `serve_with_shutdown`).
    Grpc(Opts),
}

#[derive(Debug, Clone, Args)]
struct Opts {
    /// Where results go (results.json, table.md, *.csv, shutdown.png) [default:
    /// bench/results, or target/bench-quick with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Smaller sizes and shorter runs (every part still runs); asserts lameduck's 0 failed
    /// requests in part 1.
    #[arg(long)]
    quick: bool,
    /// Where the release binaries are (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The workspace root, for `cargo bench` (default: the current directory).
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
    /// Do not run the criterion micro-benchmark.
    #[arg(long)]
    skip_criterion: bool,
    /// Replace the block between `<!-- results:begin -->` and `<!-- results:end -->` in
    /// this file (BENCHMARKS.md) with the table. Not with --quick.
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Keep the temp dir with the services' logs and nginx's config (kept anyway when a
    /// part fails).
    #[arg(long)]
    keep_temp: bool,
}

/// Everything one invocation measured (`results.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) date: String,
    pub(crate) mode: String,
    pub(crate) command: String,
    pub(crate) machine: table::Machine,
    pub(crate) tools: Vec<String>,
    pub(crate) failed_requests: Option<failed_requests::Outcome>,
    pub(crate) rolling_restart: Option<rolling_restart::Outcome>,
    pub(crate) overhead: Option<overhead::Outcome>,
    pub(crate) drain_speed: Option<drain_speed::Outcome>,
    pub(crate) memory: Option<memory::Outcome>,
    #[serde(default)]
    pub(crate) grpc: Option<grpc::Outcome>,
    /// Parts that could not run, and why.
    pub(crate) errors: Vec<String>,
    /// Wall time of the whole run, s.
    pub(crate) elapsed_s: f64,
    /// Share of the machine's CPU time taken by the hypervisor for other guests during
    /// the run (`steal` in /proc/stat), %: what makes throughput figures noisy.
    #[serde(default)]
    pub(crate) steal_percent: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    FailedRequests,
    RollingRestart,
    Overhead,
    DrainSpeed,
    Memory,
    Grpc,
}

impl Part {
    fn title(self) -> &'static str {
        match self {
            Part::FailedRequests => "[1] failed requests across a shutdown",
            Part::RollingRestart => "[2] rolling restart behind nginx",
            Part::Overhead => "[3] request-path overhead",
            Part::DrainSpeed => "[4] drain speed",
            Part::Memory => "[5] memory per connection",
            Part::Grpc => "[6] failed RPCs across a shutdown (gRPC)",
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (parts, opts) = match cli.command {
        Command::All(o) => (
            vec![
                Part::FailedRequests,
                Part::RollingRestart,
                Part::Overhead,
                Part::DrainSpeed,
                Part::Memory,
                Part::Grpc,
            ],
            o,
        ),
        Command::FailedRequests(o) => (vec![Part::FailedRequests], o),
        Command::RollingRestart(o) => (vec![Part::RollingRestart], o),
        Command::Overhead(o) => (vec![Part::Overhead], o),
        Command::DrainSpeed(o) => (vec![Part::DrainSpeed], o),
        Command::Memory(o) => (vec![Part::Memory], o),
        Command::Grpc(o) => (vec![Part::Grpc], o),
    };
    // On Ctrl-C or SIGTERM, drop everything: the guards kill what was started.
    let interrupted = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    };
    let outcome = tokio::select! {
        outcome = run(parts, opts) => outcome,
        signal = interrupted => Err(anyhow::anyhow!("interrupted by {signal}; stopped every service started")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lameduck-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the parts; Ok(false) when a part could not run (or quick mode's assertion failed).
async fn run(parts: Vec<Part>, opts: Opts) -> Result<bool> {
    let started = Instant::now();
    let cpu_at_start = table::cpu_times();
    if opts.quick && opts.doc.is_some() {
        bail!("--doc is for full runs: quick results do not go into the documentation");
    }
    let needs_many_fds = !opts.quick
        && parts
            .iter()
            .any(|p| matches!(p, Part::DrainSpeed | Part::Memory));
    let nofile = process::raise_nofile_limit(if needs_many_fds { 12_000 } else { 4_096 })?;
    let bins = Bins::new(opts.bin_dir.clone())?;
    let out = opts.out.clone().unwrap_or_else(|| {
        PathBuf::from(if opts.quick {
            "target/bench-quick"
        } else {
            "bench/results"
        })
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut temp = TempDir::new("run")?;
    if opts.keep_temp {
        temp.keep();
    }

    let mut results = Results {
        date: utc_now(),
        mode: if opts.quick { "quick" } else { "full" }.to_owned(),
        // `bench/run` says how it was called; the runner's own arguments otherwise.
        command: std::env::var("LAMEDUCK_BENCH_COMMAND")
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| {
                std::env::args()
                    .map(|a| {
                        // The runner's own path, relative to the workspace where it can be.
                        match a.find("target/release/") {
                            Some(i) => a[i..].to_owned(),
                            None => a,
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        machine: table::Machine::detect(nofile),
        tools: tools().await,
        ..Results::default()
    };
    eprintln!(
        "lameduck-bench: {} mode, results to {}, logs in {}",
        results.mode,
        out.display(),
        temp.path().display()
    );
    for part in parts {
        eprintln!("== {}", part.title());
        let dir = temp.path().join(format!("{part:?}"));
        std::fs::create_dir_all(&dir)?;
        let part_started = Instant::now();
        let outcome = run_part(part, &bins, &opts, &dir, &mut results).await;
        eprintln!("   ({:.1} s)", part_started.elapsed().as_secs_f64());
        if let Err(e) = outcome {
            eprintln!("   could not run: {e:#}");
            results.errors.push(format!("{}: {e:#}", part.title()));
        }
    }

    if opts.quick
        && let Some(o) = &results.failed_requests
        && o.lameduck.failures() > 0
    {
        results.errors.push(format!(
            "quick-mode assertion: lameduck had {} failed requests in part 1 (expected 0): {:?}",
            o.lameduck.failures(),
            o.lameduck
                .trials
                .iter()
                .flat_map(|t| &t.report.errors)
                .collect::<Vec<_>>()
        ));
    }

    if let Some(o) = &results.failed_requests
        && let Err(e) = plot(o, &out, temp.path()).await
    {
        results.errors.push(format!("plot: {e:#}"));
    }
    results.elapsed_s = started.elapsed().as_secs_f64();
    results.steal_percent = table::steal_percent(cpu_at_start, table::cpu_times());
    let markdown = table::markdown(&results);
    table::write_csvs(&results, &out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&without_failure_lists(serde_json::to_value(&results)?))?,
    )?;
    std::fs::write(out.join("table.md"), &markdown)?;
    if let Some(doc) = &opts.doc {
        update_doc(doc, &markdown, &out)?;
    }
    println!("{markdown}");
    eprintln!(
        "lameduck-bench: done in {:.0} s; results in {}",
        results.elapsed_s,
        out.display()
    );
    if results.errors.is_empty() {
        Ok(true)
    } else {
        temp.keep();
        eprintln!("lameduck-bench: {} problem(s):", results.errors.len());
        for e in &results.errors {
            eprintln!("- {e}");
        }
        eprintln!("logs kept in {}", temp.path().display());
        Ok(false)
    }
}

async fn run_part(
    part: Part,
    bins: &Bins,
    opts: &Opts,
    dir: &Path,
    results: &mut Results,
) -> Result<()> {
    match part {
        Part::FailedRequests => {
            results.failed_requests = Some(failed_requests::run(bins, opts.quick, dir).await?);
        }
        Part::RollingRestart => {
            results.rolling_restart = Some(rolling_restart::run(bins, opts.quick, dir).await?);
        }
        Part::Overhead => {
            results.overhead = Some(
                overhead::run(bins, opts.quick, dir, &opts.workspace, opts.skip_criterion).await?,
            );
        }
        Part::DrainSpeed => {
            results.drain_speed = Some(drain_speed::run(bins, opts.quick, dir).await?);
        }
        Part::Memory => {
            results.memory = Some(memory::run(bins, opts.quick, dir).await?);
        }
        Part::Grpc => {
            results.grpc = Some(grpc::run(bins, opts.quick, dir).await?);
        }
    }
    Ok(())
}

/// Versions of the outside tools, best effort.
async fn tools() -> Vec<String> {
    let mut out = Vec::new();
    for (program, args) in [
        ("rustc", &["--version"][..]),
        ("nginx", &["-v"][..]),
        ("wrk", &["-v"][..]),
        ("valgrind", &["--version"][..]),
    ] {
        let Ok(Ok(o)) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::process::Command::new(program)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        else {
            continue;
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if let Some(line) = text.lines().next() {
            let line = line
                .trim()
                .trim_start_matches("nginx version: ")
                .split(" Copyright")
                .next()
                .unwrap_or_default()
                .trim();
            out.push(line.to_owned());
        }
    }
    out
}

const PLOT: &str = include_str!("plot.py");

/// `shutdown.png` from part 1's first trial per side (lameduck, plain axum, axum + the
/// same delay), with python3 + matplotlib.
async fn plot(o: &failed_requests::Outcome, out: &Path, temp: &Path) -> Result<()> {
    let script = temp.join("plot.py");
    std::fs::write(&script, PLOT)?;
    let delay_s = o.settings.shutdown_delay_ms as f64 / 1000.0;
    let png = out.join("shutdown.png");
    let mut args = vec![
        script.display().to_string(),
        png.display().to_string(),
        (o.settings.before_ms as f64 / 1000.0).to_string(),
        (o.settings.window_ms as f64 / 1000.0).to_string(),
    ];
    for side in o.sides() {
        let first = side.trials.first().context("part 1 has no trial to plot")?;
        let csv = out.join(format!("shutdown_timeline_{}.csv", side.label()));
        std::fs::write(&csv, first.report.timeline_csv())?;
        let title = match (side.side, side.delayed) {
            (process::Side::Lameduck, _) => format!(
                "lameduck ({}, LAMEDUCK_SHUTDOWN_DELAY={delay_s} s)",
                side.service
            ),
            (process::Side::Baseline, false) => format!(
                "plain axum ({}: axum::serve + with_graceful_shutdown)",
                side.service
            ),
            (process::Side::Baseline, true) => format!(
                "axum + the same delay ({}, BASELINE_SHUTDOWN_DELAY={delay_s} s)",
                side.service
            ),
        };
        args.push(csv.display().to_string());
        args.push(title);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    process::run_command("python3", &args, std::time::Duration::from_secs(120))
        .await
        .context("python3 + matplotlib (`bench/run` installs matplotlib with pip)")?;
    Ok(())
}

const BEGIN: &str = "<!-- results:begin -->";
const END: &str = "<!-- results:end -->";

/// Replaces the results block of the documentation with the new table.
/// `value` without any `failures_at` list, at any depth.
fn without_failure_lists(mut value: serde_json::Value) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("failures_at");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

fn update_doc(doc: &Path, markdown: &str, out: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no `{BEGIN}` … `{END}` block", doc.display());
    };
    if end < begin {
        bail!("{}: `{END}` comes before `{BEGIN}`", doc.display());
    }
    let image = out.join("shutdown.png");
    let image = if image.is_file() {
        format!(
            "\n![Requests per second and failed requests across a shutdown: lameduck, plain axum, axum + the same delay]({})\n",
            image.display()
        )
    } else {
        String::new()
    };
    let new = format!(
        "{}{BEGIN}\n<!-- written by `bench/run`; do not edit by hand -->\n{markdown}{image}{}",
        &text[..begin],
        &text[end..]
    );
    std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))?;
    Ok(())
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        (rest % 3600) / 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(0),
        u32::try_from(d).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_results_leave_out_failure_lists_at_any_depth() {
        let results = serde_json::json!({
            "part": {"trials": [{"report": {"failures_at": [{"start_ms": 1}], "failed": 1}}]},
            "failures_at": [],
            "kept": [1, 2],
        });
        assert_eq!(
            super::without_failure_lists(results),
            serde_json::json!({"part": {"trials": [{"report": {"failed": 1}}]}, "kept": [1, 2]})
        );
    }

    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn doc_block_is_replaced() -> Result<()> {
        let dir = TempDir::new("doc-test")?;
        let doc = dir.path().join("B.md");
        std::fs::write(&doc, format!("intro\n{BEGIN}\nold\n{END}\nafter\n"))?;
        update_doc(&doc, "NEW TABLE\n", dir.path())?;
        let text = std::fs::read_to_string(&doc)?;
        assert!(text.starts_with("intro\n<!-- results:begin -->\n"));
        assert!(text.contains("NEW TABLE\n<!-- results:end -->\nafter\n"));
        assert!(!text.contains("old"));
        std::fs::write(&doc, "no markers")?;
        assert!(update_doc(&doc, "x", dir.path()).is_err());
        Ok(())
    }
}
