//! Part 1: failed requests across a shutdown.
//!
//! Keep-alive clients (lameduck-loadgen) send `GET /` at a steady rate; after `before`
//! the service gets SIGTERM; traffic keeps arriving for the propagation `window` (as it
//! does while endpoints and load balancers catch up), new connections included. After the
//! window the clients do what clients of a Kubernetes Service do once the pod's endpoint
//! is gone: conntrack keeps their ESTABLISHED connections going to the old pod and only
//! new connections go elsewhere, so each client keeps sending on its keep-alive
//! connection, at its pace, until the service closes it (a `Connection: close` response,
//! an EOF, a reset), and then leaves (lameduck-load's `new_connections_until`). The run
//! ends when every client has left, bounded by the service's exit (plus 1 s for the
//! clients to see it, and never before 1 s after the window) and by [`STAY_MAX`] after
//! the window. Every request is classified;
//! a request written on a connection the service then closes without answering is
//! `no_response`.
//!
//! lameduck (`hello`) runs with `LAMEDUCK_SHUTDOWN_DELAY` = window + 1 s, as it is meant
//! to be deployed (the delay covers the propagation time); the baseline is
//! `baseline-axum`, run twice: as axum's docs show it, and with `BASELINE_SHUTDOWN_DELAY`
//! = lameduck's delay ("axum + the same delay": what a preStop `sleep` gives plain axum).
//! The sides alternate within each trial round.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use lameduck_loadgen::{Counts, LoadConfig, LoadReport};
use serde::{Deserialize, Serialize};

use crate::process::{Bins, Side, Spec, ms};

const READY_WITHIN: Duration = Duration::from_secs(15);

/// The longest clients may stay on their connections after the window: the run is
/// stopped then, whoever is still connected. 10 s: lameduck's and the delayed axum's
/// shutdowns end 1 s after the window, plain axum's at SIGTERM, so only a service that
/// never closes its idle connections gets there.
pub(crate) const STAY_MAX: Duration = Duration::from_secs(10);

/// After the service has exited (and after the window), how long the clients have to see
/// their connections closed (each sees it at its next request, tens of ms apart) before
/// the run is stopped.
const AFTER_EXIT: Duration = Duration::from_secs(1);

/// What part 1 runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) connections: usize,
    /// Aggregate requests/s.
    pub(crate) rate: u64,
    /// Steady load before SIGTERM, ms.
    pub(crate) before_ms: u64,
    /// Load after SIGTERM (the propagation window), ms.
    pub(crate) window_ms: u64,
    /// lameduck's `LAMEDUCK_SHUTDOWN_DELAY`, ms.
    pub(crate) shutdown_delay_ms: u64,
    /// Runs per side (alternating sides; the delayed baseline too).
    pub(crate) trials: usize,
    /// After the window, clients stay on their keep-alive connections until the service
    /// closes them, at most this long, ms ([`STAY_MAX`]); 0 in results from before they
    /// did (the load stopped at the end of the window).
    #[serde(default)]
    pub(crate) stay_max_ms: u64,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Settings {
        Settings {
            connections: if quick { 16 } else { 32 },
            rate: if quick { 1000 } else { 2000 },
            before_ms: if quick { 2000 } else { 3000 },
            window_ms: 2000,
            shutdown_delay_ms: 3000,
            trials: if quick { 1 } else { 3 },
            stay_max_ms: ms_u64(STAY_MAX),
        }
    }
}

/// One run against one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Trial {
    /// loadgen's report: totals per class, latency, the per-second timeline.
    pub(crate) report: LoadReport,
    /// SIGTERM to process exit (waitpid), ms.
    pub(crate) sigterm_to_exit_ms: f64,
    pub(crate) exit_code: i32,
    /// From the end of the window to when the last client left (its connection closed by
    /// the service), ms; `None` if some client was still connected when the run was
    /// stopped (see `clients_remaining`), or in results from before clients stayed.
    #[serde(default)]
    pub(crate) last_left_after_window_ms: Option<u64>,
    /// Clients still on a connection when the run was stopped (by the service's exit + 1 s
    /// or [`STAY_MAX`]); 0 when every client left.
    #[serde(default)]
    pub(crate) clients_remaining: usize,
}

/// All runs against one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SideOutcome {
    pub(crate) side: Side,
    pub(crate) service: String,
    /// The baseline with `BASELINE_SHUTDOWN_DELAY` = lameduck's delay ("axum + the same
    /// delay"): SIGTERM, serve on for the delay, then axum's graceful shutdown.
    #[serde(default)]
    pub(crate) delayed: bool,
    /// Summed over the trials.
    pub(crate) totals: Counts,
    pub(crate) no_response_reused: u64,
    pub(crate) trials: Vec<Trial>,
}

impl SideOutcome {
    pub(crate) fn failures(&self) -> u64 {
        self.totals.failures()
    }

    pub(crate) fn requests(&self) -> u64 {
        self.totals.total() - self.totals.not_sent
    }

    /// `lameduck`, `baseline` or `baseline_delay` (CSV names).
    pub(crate) fn label(&self) -> &'static str {
        side_label(self.side, self.delayed)
    }

    /// The longest any client stayed after the window, ms, over the trials; `None` if in
    /// some trial a client never left, or no trial recorded it.
    pub(crate) fn last_left_after_window_ms(&self) -> Option<u64> {
        let mut max = None;
        for t in &self.trials {
            let at = t.last_left_after_window_ms?;
            max = Some(max.map_or(at, |m: u64| m.max(at)));
        }
        max
    }
}

/// `lameduck`, `baseline`, or `baseline_delay` for the baseline with lameduck's delay.
pub(crate) fn side_label(side: Side, delayed: bool) -> &'static str {
    match (side, delayed) {
        (Side::Baseline, true) => "baseline_delay",
        (side, _) => side.label(),
    }
}

/// Part 1's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) settings: Settings,
    pub(crate) lameduck: SideOutcome,
    pub(crate) baseline: SideOutcome,
    /// `baseline-axum` with `BASELINE_SHUTDOWN_DELAY` = `settings.shutdown_delay_ms`.
    #[serde(default)]
    pub(crate) baseline_delay: Option<SideOutcome>,
}

impl Outcome {
    /// The sides that ran: lameduck, the baseline, the baseline with the delay.
    pub(crate) fn sides(&self) -> impl Iterator<Item = &SideOutcome> {
        [
            Some(&self.lameduck),
            Some(&self.baseline),
            self.baseline_delay.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

pub(crate) async fn run(bins: &Bins, quick: bool, dir: &Path) -> Result<Outcome> {
    let settings = Settings::new(quick);
    let hello = bins.get("hello")?;
    let baseline = bins.get("baseline-axum")?;
    let delay = Duration::from_millis(settings.shutdown_delay_ms);
    let mut outcomes = [
        new_side(Side::Lameduck, false, "hello"),
        new_side(Side::Baseline, false, "baseline-axum"),
        new_side(Side::Baseline, true, "baseline-axum"),
    ];
    for n in 0..settings.trials {
        for outcome in outcomes.iter_mut() {
            let spec = match (outcome.side, outcome.delayed) {
                (Side::Lameduck, _) => Spec::lameduck("hello", hello.clone(), dir, delay, &[])?,
                (Side::Baseline, false) => Spec::baseline(baseline.clone())?,
                (Side::Baseline, true) => Spec::baseline_delayed(baseline.clone(), delay)?,
            };
            let label = outcome.label();
            let trial = trial(&spec, &settings, dir)
                .await
                .with_context(|| format!("{label} ({}), trial {}", spec.name, n + 1))?;
            eprintln!(
                "  [1] {label:<14} trial {}: {} requests, {} failed (refused {}, no_response {} [reused {}], 5xx {}, timeout {}); SIGTERM→exit {:.0} ms, status {}; {}",
                n + 1,
                trial.report.counts.total() - trial.report.counts.not_sent,
                trial.report.failures(),
                trial.report.counts.refused,
                trial.report.counts.no_response,
                trial.report.no_response_reused,
                trial.report.counts.status_5xx,
                trial.report.counts.timeout,
                trial.sigterm_to_exit_ms,
                trial.exit_code,
                match trial.last_left_after_window_ms {
                    Some(ms) => format!("last client left {ms} ms after the window"),
                    None => format!(
                        "{} client(s) still connected when stopped",
                        trial.clients_remaining
                    ),
                }
            );
            add(&mut outcome.totals, &trial.report.counts);
            outcome.no_response_reused += trial.report.no_response_reused;
            outcome.trials.push(trial);
        }
    }
    let [lameduck, baseline, baseline_delay] = outcomes;
    Ok(Outcome {
        settings,
        lameduck,
        baseline,
        baseline_delay: Some(baseline_delay),
    })
}

fn new_side(side: Side, delayed: bool, service: &str) -> SideOutcome {
    SideOutcome {
        side,
        service: service.to_owned(),
        delayed,
        totals: Counts::default(),
        no_response_reused: 0,
        trials: Vec::new(),
    }
}

pub(crate) fn add(total: &mut Counts, c: &Counts) {
    total.ok += c.ok;
    total.status_5xx += c.status_5xx;
    total.refused += c.refused;
    total.no_response += c.no_response;
    total.timeout += c.timeout;
    total.not_sent += c.not_sent;
}

fn ms_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn trial(spec: &Spec, settings: &Settings, dir: &Path) -> Result<Trial> {
    let service = spec.start(dir, READY_WITHIN).await?;
    let mut config = LoadConfig::new(&service.url("/"))?;
    config.connections = settings.connections;
    config.rate = settings.rate;
    config.duration = None;
    let start = tokio::time::Instant::now();
    let sigterm_at = start + Duration::from_millis(settings.before_ms);
    let window_end = sigterm_at + Duration::from_millis(settings.window_ms);
    // New connections until the end of the window; after it, clients stay on theirs until
    // the service closes them.
    config.new_connections_until = Some(window_end.into_std());
    let stay_max = Duration::from_millis(settings.stay_max_ms);
    let hard_stop = window_end + stay_max;
    // The run ends when every client has left; at the latest 1 s after the service's
    // exit or after the end of the window, whichever is later (plain axum exits at
    // SIGTERM, and the window's traffic still comes), or at `hard_stop`.
    let bound = async {
        tokio::select! {
            () = tokio::time::sleep_until(hard_stop) => {}
            exit = service.wait_exit(hard_stop.saturating_duration_since(start)) => {
                if exit.is_ok() {
                    let after = tokio::time::Instant::now() + AFTER_EXIT;
                    tokio::time::sleep_until(after.max(window_end + AFTER_EXIT)).await;
                }
            }
        }
    };
    let (report, sent) = tokio::join!(
        lameduck_loadgen::run_from(config, bound, start.into_std()),
        async {
            tokio::time::sleep_until(sigterm_at).await;
            service.sigterm()
        }
    );
    let sent = sent?;
    let exit = service
        .wait_exit(Duration::from_millis(settings.shutdown_delay_ms) + Duration::from_secs(30))
        .await?;
    let window_end_ms = settings.before_ms + settings.window_ms;
    let clients_remaining = report.connections.saturating_sub(report.left_at_ms.len());
    let last_left_after_window_ms = match (clients_remaining, report.left_at_ms.last()) {
        (0, Some(&last)) => Some(last.saturating_sub(window_end_ms)),
        _ => None,
    };
    Ok(Trial {
        report,
        sigterm_to_exit_ms: ms(exit.at.saturating_duration_since(sent)),
        exit_code: exit.code(),
        last_left_after_window_ms,
        clients_remaining,
    })
}
