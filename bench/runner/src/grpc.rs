//! Part 6: failed RPCs across a shutdown, gRPC — part 1's method for a gRPC service.
//!
//! Clients, each with its own tonic channel (`connect_lazy`: it reconnects after a GOAWAY
//! or a closed connection, as real clients do), call the greeter's unary `SayHello` at a
//! steady total rate (lameduck-loadgen's `run_grpc`); after `before` the service gets
//! SIGTERM; calls keep arriving for the propagation `window`, then stop. Every call is
//! classified. The settings are part 1's ([`crate::failed_requests::Settings`]): lameduck
//! (`greeter`, served by lameduck-tonic) runs with `LAMEDUCK_SHUTDOWN_DELAY` = window +
//! 1 s, the delay that covers the propagation time; the baseline is `baseline-tonic`, the
//! same greeter on tonic's own `Server::serve_with_shutdown`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lameduck_loadgen::{Counts, GrpcDetail, GrpcLoadConfig, GrpcReport};
use serde::{Deserialize, Serialize};

use crate::failed_requests::{Settings, add};
use crate::process::{Bins, Service, Side, Spec, ms};

const READY_WITHIN: Duration = Duration::from_secs(15);

/// One run against one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Trial {
    /// loadgen's report: totals per class, the gRPC detail, latency, the timeline.
    pub(crate) report: GrpcReport,
    /// SIGTERM to process exit (waitpid), ms.
    pub(crate) sigterm_to_exit_ms: f64,
    pub(crate) exit_code: i32,
}

/// All runs against one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SideOutcome {
    pub(crate) side: Side,
    pub(crate) service: String,
    /// Summed over the trials.
    pub(crate) totals: Counts,
    pub(crate) detail: GrpcDetail,
    pub(crate) trials: Vec<Trial>,
}

impl SideOutcome {
    pub(crate) fn failures(&self) -> u64 {
        self.totals.failures()
    }

    pub(crate) fn calls(&self) -> u64 {
        self.totals.total() - self.totals.not_sent
    }
}

/// Part 6's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Part 1's settings, applied to gRPC calls (`connections` is the number of clients).
    pub(crate) settings: Settings,
    pub(crate) lameduck: SideOutcome,
    pub(crate) baseline: SideOutcome,
}

pub(crate) async fn run(bins: &Bins, quick: bool, dir: &Path) -> Result<Outcome> {
    let settings = Settings::new(quick);
    let greeter = bins.get("greeter")?;
    let baseline = bins.get("baseline-tonic")?;
    let mut outcomes = [
        new_side(Side::Lameduck, "greeter"),
        new_side(Side::Baseline, "baseline-tonic"),
    ];
    for n in 0..settings.trials {
        for (side, outcome) in Side::BOTH.into_iter().zip(outcomes.iter_mut()) {
            let spec = match side {
                Side::Lameduck => Spec::lameduck(
                    "greeter",
                    greeter.clone(),
                    dir,
                    Duration::from_millis(settings.shutdown_delay_ms),
                    &[],
                )?,
                Side::Baseline => baseline_spec(baseline.clone())?,
            };
            let trial = trial(&spec, side, &settings, dir)
                .await
                .with_context(|| format!("{} ({}), trial {}", side.label(), spec.name, n + 1))?;
            let c = &trial.report.load.counts;
            let d = &trial.report.detail;
            eprintln!(
                "  [6] {:<8} trial {}: {} RPCs, {} failed (unavailable before sent {} [connect {}, unsent {}], no response {} [GOAWAY {}], other status {} {:?}, timeout {}); SIGTERM→exit {:.0} ms, status {}",
                side.label(),
                n + 1,
                c.total() - c.not_sent,
                trial.report.failures(),
                c.refused,
                d.refused_connect,
                d.refused_unsent,
                c.no_response,
                d.no_response_goaway,
                c.status_5xx,
                d.status_codes,
                c.timeout,
                trial.sigterm_to_exit_ms,
                trial.exit_code
            );
            add(&mut outcome.totals, c);
            merge(&mut outcome.detail, d);
            outcome.trials.push(trial);
        }
    }
    let [lameduck, baseline] = outcomes;
    Ok(Outcome {
        settings,
        lameduck,
        baseline,
    })
}

/// `baseline-tonic` on a fresh port. Its readiness is a `SayHello` that is answered (it
/// has no HTTP/1 endpoint to poll).
fn baseline_spec(program: std::path::PathBuf) -> Result<Spec> {
    Spec::plain("baseline-tonic", program, "")
}

fn new_side(side: Side, service: &str) -> SideOutcome {
    SideOutcome {
        side,
        service: service.to_owned(),
        totals: Counts::default(),
        detail: GrpcDetail::default(),
        trials: Vec::new(),
    }
}

fn merge(total: &mut GrpcDetail, d: &GrpcDetail) {
    total.refused_connect += d.refused_connect;
    total.refused_unsent += d.refused_unsent;
    total.no_response_goaway += d.no_response_goaway;
    for (code, n) in &d.status_codes {
        *total.status_codes.entry(code.clone()).or_default() += n;
    }
}

/// Waits until a `SayHello` on a new channel is answered; fails if the child exits or
/// `within` passes, with the end of its log in the message.
async fn wait_grpc_ready(service: &Service, uri: &str, within: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        if service.has_exited() {
            bail!(
                "{} exited before it answered a call; its log:\n{}",
                service.name,
                service.log_tail(20)
            );
        }
        let answer = lameduck_loadgen::say_hello_once(uri, Duration::from_secs(1)).await;
        match answer {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > within => bail!(
                "{} did not answer SayHello within {within:?} (last: {e}); its log:\n{}",
                service.name,
                service.log_tail(20)
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn trial(spec: &Spec, side: Side, settings: &Settings, dir: &Path) -> Result<Trial> {
    let service = match side {
        // The admin `/readyz`, then a call.
        Side::Lameduck => spec.start(dir, READY_WITHIN).await?,
        Side::Baseline => spec.spawn(dir)?,
    };
    let uri = format!("http://127.0.0.1:{}", service.port);
    wait_grpc_ready(&service, &uri, READY_WITHIN).await?;
    let mut config = GrpcLoadConfig::new(uri);
    config.clients = settings.connections;
    config.rate = settings.rate;
    config.duration = None;
    let start = tokio::time::Instant::now();
    let sigterm_at = start + Duration::from_millis(settings.before_ms);
    let stop_at = sigterm_at + Duration::from_millis(settings.window_ms);
    let (report, sent) = tokio::join!(
        lameduck_loadgen::run_grpc(config, tokio::time::sleep_until(stop_at)),
        async {
            tokio::time::sleep_until(sigterm_at).await;
            service.sigterm()
        }
    );
    let report = report.context("gRPC load")?;
    let sent = sent?;
    let exit = service
        .wait_exit(Duration::from_millis(settings.shutdown_delay_ms) + Duration::from_secs(30))
        .await?;
    Ok(Trial {
        report,
        sigterm_to_exit_ms: ms(exit.at.saturating_duration_since(sent)),
        exit_code: exit.code(),
    })
}
