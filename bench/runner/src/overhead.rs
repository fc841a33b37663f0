//! Part 3: request-path overhead.
//!
//! Throughput and p99 latency of a trivial handler (`GET /`) with lameduck (`hello`,
//! `lameduck_axum::serve`) and without (`baseline-axum`, bare `axum::serve`), measured
//! by wrk (`wrk -t1 -c64 -dNs --latency`). On a machine with two or more cores the server
//! runs on CPU 0 and wrk on CPU 1 (`taskset`), so that the two do not take turns on the
//! same cores: the server is saturated on one core and the figure is its cost per request.
//! Runs alternate (A B, then B A) so drift hits both sides alike; each pair gives a ratio,
//! and the median ratio is reported with the spread. Both services run for the whole part
//! (the one not under load is idle). Then the criterion micro-benchmark of `InFlightLayer`
//! (`cargo bench -p lameduck-http --bench layer`), if it exists.
//!
//! The absolute numbers are this machine's; the ratio is the result.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::instructions::{self, Instructions};
use crate::process::{Bins, Side, Spec, run_command};

const READY_WITHIN: Duration = Duration::from_secs(15);

/// What part 3 runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) threads: u32,
    pub(crate) connections: u32,
    /// Seconds per wrk run.
    pub(crate) duration_s: u32,
    /// A B pairs.
    pub(crate) pairs: usize,
    /// A warm-up wrk run per side first, seconds.
    pub(crate) warmup_s: u32,
    /// The server's CPUs and wrk's (`taskset -c`), when the machine has two cores or more.
    pub(crate) server_cpus: Option<String>,
    pub(crate) wrk_cpus: Option<String>,
    /// Seconds of wrk per side under callgrind.
    #[serde(default)]
    pub(crate) callgrind_s: u32,
    /// criterion `--warm-up-time` and `--measurement-time`, seconds.
    pub(crate) criterion_warm_up_s: f64,
    pub(crate) criterion_measurement_s: f64,
}

impl Settings {
    pub(crate) fn new(quick: bool, cores: usize) -> Settings {
        let pinned = cores >= 2;
        Settings {
            threads: 1,
            connections: 64,
            duration_s: if quick { 1 } else { 2 },
            pairs: if quick { 4 } else { 20 },
            warmup_s: 1,
            server_cpus: pinned.then(|| "0".to_owned()),
            wrk_cpus: pinned.then(|| match cores {
                2 => "1".to_owned(),
                _ => format!("1-{}", cores - 1),
            }),
            callgrind_s: if quick { 2 } else { 5 },
            criterion_warm_up_s: if quick { 0.3 } else { 1.0 },
            criterion_measurement_s: if quick { 1.0 } else { 3.0 },
        }
    }

    /// The program and its arguments.
    fn wrk_command(&self, seconds: u32, url: &str) -> (String, Vec<String>) {
        let wrk = vec![
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{seconds}s"),
            "--latency".to_owned(),
            url.to_owned(),
        ];
        match &self.wrk_cpus {
            Some(cpus) => (
                "taskset".to_owned(),
                ["-c".to_owned(), cpus.clone(), "wrk".to_owned()]
                    .into_iter()
                    .chain(wrk)
                    .collect(),
            ),
            None => ("wrk".to_owned(), wrk),
        }
    }
}

/// What one wrk run printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Wrk {
    pub(crate) requests_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) requests: u64,
    /// Socket errors (connect + read + write + timeout) and non-2xx/3xx responses.
    pub(crate) errors: u64,
    /// The server's CPU time over the run divided by the requests wrk completed, ns.
    #[serde(default)]
    pub(crate) server_cpu_ns_per_request: f64,
}

/// One A B pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pair {
    pub(crate) lameduck: Wrk,
    pub(crate) baseline: Wrk,
    /// lameduck's requests/s over the baseline's.
    pub(crate) throughput_ratio: f64,
    /// lameduck's p99 over the baseline's.
    pub(crate) p99_ratio: f64,
    /// lameduck's server CPU time per request over the baseline's.
    #[serde(default)]
    pub(crate) cpu_ratio: f64,
}

/// One criterion benchmark's estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Bench {
    /// e.g. `axum router/with InFlightLayer`.
    pub(crate) id: String,
    /// The middle of criterion's `time: [low mid high]`, ns per iteration.
    pub(crate) ns: f64,
}

/// The micro-benchmark's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Criterion {
    pub(crate) command: String,
    /// Set when it was not run, and why.
    pub(crate) skipped: Option<String>,
    pub(crate) benches: Vec<Bench>,
}

impl Criterion {
    /// (bare, with the layer) for a group, ns.
    pub(crate) fn group(&self, group: &str) -> Option<(f64, f64)> {
        let find = |suffix: &str| {
            self.benches
                .iter()
                .find(|b| b.id == format!("{group}/{suffix}"))
                .map(|b| b.ns)
        };
        Some((find("bare")?, find("with InFlightLayer")?))
    }
}

/// Part 3's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) settings: Settings,
    pub(crate) wrk_version: String,
    pub(crate) command: String,
    pub(crate) pairs: Vec<Pair>,
    pub(crate) median_throughput_ratio: f64,
    /// The spread of the pairs' throughput ratios.
    pub(crate) min_throughput_ratio: f64,
    pub(crate) max_throughput_ratio: f64,
    pub(crate) median_p99_ratio: f64,
    /// Server CPU time per request: the cost with the noise of a shared machine (other
    /// tenants' steal time) mostly taken out.
    #[serde(default)]
    pub(crate) median_cpu_ratio: f64,
    #[serde(default)]
    pub(crate) lameduck_median_cpu_ns: f64,
    #[serde(default)]
    pub(crate) baseline_median_cpu_ns: f64,
    pub(crate) lameduck_median_rps: f64,
    pub(crate) baseline_median_rps: f64,
    pub(crate) lameduck_median_p99_us: f64,
    pub(crate) baseline_median_p99_us: f64,
    /// User-space instructions per request (callgrind).
    pub(crate) instructions: Instructions,
    pub(crate) criterion: Criterion,
}

pub(crate) async fn run(
    bins: &Bins,
    quick: bool,
    dir: &Path,
    workspace: &Path,
    skip_criterion: bool,
) -> Result<Outcome> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let settings = Settings::new(quick, cores);
    let wrk_version = wrk_version().await?;
    let mut lameduck = Spec::lameduck("hello", bins.get("hello")?, dir, Duration::ZERO, &[])?;
    let mut baseline = Spec::baseline(bins.get("baseline-axum")?)?;
    lameduck.cpus.clone_from(&settings.server_cpus);
    baseline.cpus.clone_from(&settings.server_cpus);
    let lameduck = lameduck.start(dir, READY_WITHIN).await?;
    let baseline = baseline.start(dir, READY_WITHIN).await?;
    let url = |side: Side| match side {
        Side::Lameduck => lameduck.url("/"),
        Side::Baseline => baseline.url("/"),
    };
    for side in Side::BOTH {
        wrk(settings.wrk_command(settings.warmup_s, &url(side)))
            .await
            .with_context(|| format!("wrk warm-up against {}", side.label()))?;
    }
    let measure = |side: Side| {
        let command = settings.wrk_command(settings.duration_s, &url(side));
        let service = match side {
            Side::Lameduck => &lameduck,
            Side::Baseline => &baseline,
        };
        async move {
            let cpu_before = service.cpu_ns()?;
            let mut run = wrk(command)
                .await
                .with_context(|| format!("wrk against {}", side.label()))?;
            let cpu = service.cpu_ns()?.saturating_sub(cpu_before);
            run.server_cpu_ns_per_request = cpu as f64 / run.requests.max(1) as f64;
            Ok::<_, anyhow::Error>(run)
        }
    };
    let mut pairs = Vec::new();
    for n in 0..settings.pairs {
        // A B, then B A: whatever drifts during a pair favours each side equally often.
        let (a, b) = if n % 2 == 0 {
            let a = measure(Side::Lameduck).await?;
            (a, measure(Side::Baseline).await?)
        } else {
            let b = measure(Side::Baseline).await?;
            (measure(Side::Lameduck).await?, b)
        };
        let pair = Pair {
            throughput_ratio: a.requests_per_sec / b.requests_per_sec,
            p99_ratio: a.p99_us / b.p99_us,
            cpu_ratio: a.server_cpu_ns_per_request / b.server_cpu_ns_per_request,
            lameduck: a,
            baseline: b,
        };
        eprintln!(
            "  [3] pair {}: lameduck {:.0} req/s p99 {:.0} µs {:.2} µs CPU/req, baseline {:.0} req/s p99 {:.0} µs {:.2} µs CPU/req → throughput ×{:.3}, p99 ×{:.3}, CPU ×{:.3}",
            n + 1,
            pair.lameduck.requests_per_sec,
            pair.lameduck.p99_us,
            pair.lameduck.server_cpu_ns_per_request / 1000.0,
            pair.baseline.requests_per_sec,
            pair.baseline.p99_us,
            pair.baseline.server_cpu_ns_per_request / 1000.0,
            pair.throughput_ratio,
            pair.p99_ratio,
            pair.cpu_ratio
        );
        pairs.push(pair);
    }
    lameduck.sigterm()?;
    baseline.sigterm()?;
    lameduck.wait_exit(Duration::from_secs(30)).await?;
    baseline.wait_exit(Duration::from_secs(30)).await?;
    let for_errors: u64 = pairs
        .iter()
        .map(|p| p.lameduck.errors + p.baseline.errors)
        .sum();
    if for_errors > 0 {
        eprintln!("  [3] note: wrk saw {for_errors} socket errors or non-2xx responses");
    }

    let instructions = instructions::measure(bins, dir, settings.callgrind_s).await?;
    if let Some(ratio) = instructions.ratio {
        eprintln!(
            "  [3] callgrind: lameduck {:.0} instructions/request, baseline {:.0} → ×{ratio:.3}",
            instructions
                .lameduck
                .as_ref()
                .map_or(f64::NAN, |c| c.per_request),
            instructions
                .baseline
                .as_ref()
                .map_or(f64::NAN, |c| c.per_request),
        );
    }
    let criterion = criterion(&settings, dir, workspace, skip_criterion).await?;
    let median_of = |f: &dyn Fn(&Pair) -> f64| median(pairs.iter().map(f).collect());
    Ok(Outcome {
        command: {
            let (program, args) =
                settings.wrk_command(settings.duration_s, "http://127.0.0.1:PORT/");
            format!("{program} {}", args.join(" "))
        },
        min_throughput_ratio: pairs
            .iter()
            .map(|p| p.throughput_ratio)
            .fold(f64::INFINITY, f64::min),
        max_throughput_ratio: pairs
            .iter()
            .map(|p| p.throughput_ratio)
            .fold(f64::NEG_INFINITY, f64::max),
        median_throughput_ratio: median_of(&|p| p.throughput_ratio),
        median_p99_ratio: median_of(&|p| p.p99_ratio),
        median_cpu_ratio: median_of(&|p| p.cpu_ratio),
        lameduck_median_cpu_ns: median_of(&|p| p.lameduck.server_cpu_ns_per_request),
        baseline_median_cpu_ns: median_of(&|p| p.baseline.server_cpu_ns_per_request),
        lameduck_median_rps: median_of(&|p| p.lameduck.requests_per_sec),
        baseline_median_rps: median_of(&|p| p.baseline.requests_per_sec),
        lameduck_median_p99_us: median_of(&|p| p.lameduck.p99_us),
        baseline_median_p99_us: median_of(&|p| p.baseline.p99_us),
        settings,
        wrk_version,
        pairs,
        instructions,
        criterion,
    })
}

/// The median (mean of the middle two for an even count); NaN for none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

async fn wrk_version() -> Result<String> {
    // `wrk -v` prints its version and usage, and exits 1.
    let output = tokio::process::Command::new("wrk")
        .arg("-v")
        .kill_on_drop(true)
        .output()
        .await
        .context("wrk not found: `bench/run` installs it (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("wrk").trim().to_owned())
}

async fn wrk((program, args): (String, Vec<String>)) -> Result<Wrk> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_command(&program, &args, Duration::from_secs(120)).await?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_wrk(&text).with_context(|| format!("parsing wrk's output:\n{text}"))
}

/// Parses wrk's `--latency` report.
pub(crate) fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut errors = 0u64;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>()?);
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(parse_time_us(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(parse_time_us(v.trim())?);
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>()?;
        }
    }
    Ok(Wrk {
        requests_per_sec: rps.ok_or_else(|| anyhow!("no `Requests/sec:` line"))?,
        p50_us: p50.ok_or_else(|| anyhow!("no `50%` line (was --latency given?)"))?,
        p99_us: p99.ok_or_else(|| anyhow!("no `99%` line (was --latency given?)"))?,
        requests: requests.ok_or_else(|| anyhow!("no `N requests in` line"))?,
        errors,
        server_cpu_ns_per_request: 0.0,
    })
}

/// `428.00us`, `2.13ms`, `1.02s`, `1.50m` → µs.
fn parse_time_us(text: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| anyhow!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse()?;
    let factor = match unit.trim() {
        "us" => 1.0,
        "ms" => 1_000.0,
        "s" => 1_000_000.0,
        "m" => 60_000_000.0,
        "h" => 3_600_000_000.0,
        other => bail!("unknown unit {other:?} in {text:?}"),
    };
    Ok(number * factor)
}

async fn criterion(
    settings: &Settings,
    dir: &Path,
    workspace: &Path,
    skip: bool,
) -> Result<Criterion> {
    let args = [
        "bench".to_owned(),
        "--locked".to_owned(),
        "-p".to_owned(),
        "lameduck-http".to_owned(),
        "--bench".to_owned(),
        "layer".to_owned(),
        "--".to_owned(),
        "--warm-up-time".to_owned(),
        settings.criterion_warm_up_s.to_string(),
        "--measurement-time".to_owned(),
        settings.criterion_measurement_s.to_string(),
    ];
    let command = format!("cargo {}", args.join(" "));
    let source = workspace.join("crates/lameduck-http/benches/layer.rs");
    let skipped = if skip {
        Some("skipped (--skip-criterion)".to_owned())
    } else if !source.is_file() {
        Some(format!("{} does not exist", source.display()))
    } else {
        None
    };
    if let Some(reason) = skipped {
        eprintln!("  [3] criterion micro-benchmark not run: {reason}");
        return Ok(Criterion {
            command,
            skipped: Some(reason),
            benches: Vec::new(),
        });
    }
    eprintln!("  [3] {command}");
    let log = dir.join("criterion.log");
    let output = tokio::process::Command::new("cargo")
        .args(&args)
        .current_dir(workspace)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(900), output)
        .await
        .map_err(|_| anyhow!("`{command}` did not finish within 15 minutes"))?
        .with_context(|| format!("running `{command}` (is cargo on PATH?)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::write(&log, format!("{stdout}\n{stderr}"))?;
    if !output.status.success() {
        bail!(
            "`{command}` failed ({}):\n{}",
            output.status,
            crate::process::log_tail(&log, 30)
        );
    }
    let benches = parse_criterion(&stdout);
    if benches.is_empty() {
        bail!("no `time: [...]` lines in the output of `{command}`");
    }
    Ok(Criterion {
        command,
        skipped: None,
        benches,
    })
}

/// criterion's `ID  time:   [low mid high]` lines (the id may be on the line before).
pub(crate) fn parse_criterion(text: &str) -> Vec<Bench> {
    let mut benches = Vec::new();
    let mut previous = "";
    for line in text.lines() {
        if let Some((head, rest)) = line.split_once("time:") {
            let id = match head.trim() {
                "" => previous.trim(),
                id => id,
            };
            let inside = rest
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(inner, _)| inner);
            let values: Vec<&str> = inside
                .map(|i| i.split_whitespace().collect())
                .unwrap_or_default();
            // low unit mid unit high unit
            if let [_, _, mid, unit, _, _] = values.as_slice() {
                let factor = match *unit {
                    "ps" => Some(0.001),
                    "ns" => Some(1.0),
                    "µs" | "us" => Some(1_000.0),
                    "ms" => Some(1_000_000.0),
                    "s" => Some(1_000_000_000.0),
                    _ => None,
                };
                if let (Ok(mid), Some(factor)) = (mid.parse::<f64>(), factor) {
                    benches.push(Bench {
                        id: id.to_owned(),
                        ns: mid * factor,
                    });
                }
            }
        } else if !line.trim().is_empty() && !line.starts_with(' ') {
            previous = line;
        }
    }
    benches
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   529.19us  312.50us  12.01ms   90.12%
    Req/Sec    60.12k     3.01k   68.00k    70.00%
  Latency Distribution
     50%  428.00us
     75%  600.00us
     90%    1.00ms
     99%    2.13ms
  1196543 requests in 10.00s, 150.70MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec: 119654.30
Transfer/sec:     15.07MB
";

    #[test]
    fn parses_wrk() -> Result<()> {
        let wrk = parse_wrk(WRK)?;
        assert_eq!(
            wrk,
            Wrk {
                requests_per_sec: 119654.30,
                p50_us: 428.0,
                p99_us: 2130.0,
                requests: 1196543,
                errors: 8,
                server_cpu_ns_per_request: 0.0,
            }
        );
        assert!(parse_wrk("Running 1s test\n").is_err());
        assert!((parse_time_us("1.5s")? - 1_500_000.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn parses_criterion() {
        let text = "Benchmarking trivial service_fn/bare
Benchmarking trivial service_fn/bare: Warming up for 300.00 ms
trivial service_fn/bare time:   [27.905 ns 27.953 ns 28.006 ns]
Benchmarking axum router/with InFlightLayer: Analyzing
axum router/with InFlightLayer
                        time:   [1.0120 µs 1.0153 µs 1.0190 µs]
                        change: [-1.0% +0.2% +1.1%] (p = 0.70 > 0.05)
";
        let benches = parse_criterion(text);
        let found: Vec<(&str, f64)> = benches.iter().map(|b| (b.id.as_str(), b.ns)).collect();
        let expected = [
            ("trivial service_fn/bare", 27.953),
            ("axum router/with InFlightLayer", 1015.3),
        ];
        assert_eq!(found.len(), expected.len(), "{benches:?}");
        for ((id, ns), (want_id, want_ns)) in found.into_iter().zip(expected) {
            assert_eq!(id, want_id);
            assert!(
                (ns - want_ns).abs() < 1e-6,
                "{id}: {ns} ns, expected {want_ns}"
            );
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
