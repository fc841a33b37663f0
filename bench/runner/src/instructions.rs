//! Part 3, the steady figure: user-space instructions per request, counted by callgrind.
//!
//! Throughput on a shared 2-core machine moves by ±10 % from one run to the next (other
//! tenants' steal time, frequency changes), which hides a difference of a few percent.
//! The number of instructions the server executes per request does not move: each side
//! runs under `valgrind --tool=callgrind`, is warmed up, has its counters zeroed
//! (`callgrind_control -z`), serves a fixed-length wrk run, and has them dumped
//! (`callgrind_control -d`). The kernel's share (syscalls, TCP) is not counted, so this
//! ratio is an upper bound of the CPU-time ratio: the kernel's work per request is the
//! same on both sides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::process::{Bins, Service, Side, Spec, run_command};

/// Under valgrind a service starts some 50 times slower.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// What one side executed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Count {
    /// Requests wrk completed while the counters ran.
    pub(crate) requests: u64,
    /// Instructions executed in the process over that time (all threads).
    pub(crate) instructions: u64,
    pub(crate) per_request: f64,
}

/// Both sides' counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Instructions {
    pub(crate) command: String,
    /// Set when it was not run, and why.
    pub(crate) skipped: Option<String>,
    pub(crate) lameduck: Option<Count>,
    pub(crate) baseline: Option<Count>,
    /// lameduck's instructions per request over the baseline's.
    pub(crate) ratio: Option<f64>,
}

impl Instructions {
    fn skipped(command: String, why: String) -> Self {
        Self {
            command,
            skipped: Some(why),
            lameduck: None,
            baseline: None,
            ratio: None,
        }
    }
}

/// Counts both sides, one after the other; `seconds` of wrk each.
pub(crate) async fn measure(bins: &Bins, dir: &Path, seconds: u32) -> Result<Instructions> {
    let command = format!(
        "valgrind --tool=callgrind; callgrind_control -z; wrk -t1 -c16 -d{seconds}s; callgrind_control -d"
    );
    if run_command("valgrind", &["--version"], Duration::from_secs(10))
        .await
        .is_err()
    {
        return Ok(Instructions::skipped(
            command,
            "valgrind is not installed (`bench/run` installs it)".to_owned(),
        ));
    }
    let lameduck = count(bins, Side::Lameduck, dir, seconds).await?;
    let baseline = count(bins, Side::Baseline, dir, seconds).await?;
    Ok(Instructions {
        command,
        skipped: None,
        ratio: Some(lameduck.per_request / baseline.per_request),
        lameduck: Some(lameduck),
        baseline: Some(baseline),
    })
}

async fn count(bins: &Bins, side: Side, dir: &Path, seconds: u32) -> Result<Count> {
    let (mut spec, binary) = match side {
        Side::Lameduck => {
            let binary = bins.get("hello")?;
            let spec = Spec::lameduck("hello", binary.clone(), dir, Duration::ZERO, &[])?;
            (spec, binary)
        }
        Side::Baseline => {
            let binary = bins.get("baseline-axum")?;
            (Spec::baseline(binary.clone())?, binary)
        }
    };
    let dump = dir.join(format!("callgrind-{}.out", side.label()));
    spec.name = format!("{}-callgrind", spec.name);
    spec.program = PathBuf::from("valgrind");
    spec.args = vec![
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", dump.display()),
        binary.display().to_string(),
    ];
    let service = spec.start(dir, READY_WITHIN).await?;
    let url = service.url("/");
    let wrk = |seconds: u32| {
        let args = [
            "-t1".to_owned(),
            "-c16".to_owned(),
            format!("-d{seconds}s"),
            url.clone(),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = run_command("wrk", &args, Duration::from_secs(120)).await?;
            let text = String::from_utf8_lossy(&output.stdout);
            requests_in(&text).with_context(|| format!("parsing wrk's output:\n{text}"))
        }
    };
    // Warm up: connections, allocator, lazily built state.
    wrk(2).await.context("wrk warm-up under callgrind")?;
    control(&service, "-z").await?;
    let requests = wrk(seconds).await.context("wrk under callgrind")?;
    control(&service, "-d").await?;
    let instructions = read_dump(&dump.with_extension("out.1")).await?;
    drop(service);
    if requests == 0 {
        bail!(
            "wrk completed no request against {} under callgrind",
            side.label()
        );
    }
    Ok(Count {
        requests,
        instructions,
        per_request: instructions as f64 / requests as f64,
    })
}

async fn control(service: &Service, what: &str) -> Result<()> {
    let pid = service.pid().to_string();
    run_command("callgrind_control", &[what, &pid], Duration::from_secs(30))
        .await
        .with_context(|| format!("callgrind_control {what} {pid}"))?;
    Ok(())
}

/// Waits for callgrind's dump (it is written after `callgrind_control -d` returns) and
/// reads its total.
async fn read_dump(path: &Path) -> Result<u64> {
    for _ in 0..200 {
        if let Ok(text) = tokio::fs::read_to_string(path).await
            && let Some(total) = dump_total(&text)
        {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(anyhow!("no complete callgrind dump at {}", path.display()))
}

/// The `totals:` (or `summary:`) line of a callgrind dump: the first event is `Ir`.
fn dump_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `12345 requests in 5.00s, ...` → 12345.
fn requests_in(text: &str) -> Result<u64> {
    text.lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no `N requests in` line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dump_total_and_wrk_requests() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 234093257\n\nfn=(1) main\n0 5\ntotals: 234093257\n";
        assert_eq!(dump_total(dump), Some(234_093_257));
        assert_eq!(dump_total("events: Ir\n"), None);
        let wrk = "Running 5s test @ http://127.0.0.1:1/\n  14687 requests in 5.01s, 1.9MB read\nRequests/sec:   2931.5\n";
        assert_eq!(requests_in(wrk).ok(), Some(14_687));
        assert!(requests_in("nothing").is_err());
    }
}
