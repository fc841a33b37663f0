//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! lameduck records into whatever recorder the application installed (Prometheus,
//! StatsD, OpenTelemetry…); without one, recording is a no-op. Install the recorder before
//! building the lifecycle so that the descriptions (`# HELP`) reach it.
//!
//! Nothing is recorded on the request path. The two gauges that follow requests and
//! connections ([`REQUESTS_IN_FLIGHT`], [`CONNECTIONS_OPEN`]) are read from the counters
//! the lifecycle keeps anyway, when the lifecycle samples them: at every state change,
//! every [`SAMPLE_PERIOD`] while the lifecycle runs, and whenever
//! [`Lifecycle::record_metrics`](crate::Lifecycle::record_metrics) is called (call it
//! before rendering a scrape, so the scrape is current). Everything else is recorded when
//! it happens: a state change, a hook's end, a health check's run, the drain's cut.
//!
//! | Name | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `lameduck_state` | gauge | `state` | 1 for the current state, 0 for the others |
//! | `lameduck_requests_in_flight` | gauge | | requests whose response has not ended |
//! | `lameduck_connections_open` | gauge | | open connections |
//! | `lameduck_state_duration_seconds` | gauge | `state` | time spent in the state (so far, for the current one) |
//! | `lameduck_shutdown_duration_seconds` | gauge | | time since the trigger, until Stopped |
//! | `lameduck_shutdowns_total` | counter | `reason` | shutdowns begun, by reason (`signal:SIGTERM`, `prestop`, `api`, `task:NAME`) |
//! | `lameduck_hook_runs_total` | counter | `hook`, `phase`, `outcome` | hook runs by outcome (`ok`, `failed`, `panicked`, `timed_out`, `abandoned`) |
//! | `lameduck_hook_duration_seconds` | histogram | `hook`, `phase` | how long each hook run took |
//! | `lameduck_requests_cut_total` | counter | | in-flight requests cut at the drain timeout or the deadline |
//! | `lameduck_connections_cut_total` | counter | | connections cut likewise |
//! | `lameduck_tasks_abandoned_total` | counter | | tracked tasks aborted because they outlived the drain |
//! | `lameduck_health_checks_total` | counter | `check`, `kind`, `result` | health check runs (not cache hits), `result` `pass` or `fail` |
//! | `lameduck_health_check_duration_seconds` | histogram | `check`, `kind` | how long each run took |
//!
//! Hook and check names are the application's own, so the label sets stay as small as
//! the list of hooks and checks.

use std::time::Duration;

use crate::hooks::HookOutcome;
use crate::state::State;

/// `lameduck_state{state}`: 1 for the current state, 0 for the others.
pub const STATE: &str = "lameduck_state";
/// `lameduck_requests_in_flight`: requests whose response has not ended, as sampled.
pub const REQUESTS_IN_FLIGHT: &str = "lameduck_requests_in_flight";
/// `lameduck_connections_open`: open connections, as sampled.
pub const CONNECTIONS_OPEN: &str = "lameduck_connections_open";
/// `lameduck_state_duration_seconds{state}`: time spent in each state.
pub const STATE_DURATION: &str = "lameduck_state_duration_seconds";
/// `lameduck_shutdown_duration_seconds`: from the trigger to Stopped (so far, until then).
pub const SHUTDOWN_DURATION: &str = "lameduck_shutdown_duration_seconds";
/// `lameduck_shutdowns_total{reason}`: shutdowns begun.
pub const SHUTDOWNS: &str = "lameduck_shutdowns_total";
/// `lameduck_hook_runs_total{hook,phase,outcome}`: hook runs by outcome.
pub const HOOK_RUNS: &str = "lameduck_hook_runs_total";
/// `lameduck_hook_duration_seconds{hook,phase}`: hook run times.
pub const HOOK_DURATION: &str = "lameduck_hook_duration_seconds";
/// `lameduck_requests_cut_total`: in-flight requests cut.
pub const REQUESTS_CUT: &str = "lameduck_requests_cut_total";
/// `lameduck_connections_cut_total`: connections cut.
pub const CONNECTIONS_CUT: &str = "lameduck_connections_cut_total";
/// `lameduck_tasks_abandoned_total`: tracked tasks aborted at the cut.
pub const TASKS_ABANDONED: &str = "lameduck_tasks_abandoned_total";
/// `lameduck_health_checks_total{check,kind,result}`: health check runs.
pub const HEALTH_CHECKS: &str = "lameduck_health_checks_total";
/// `lameduck_health_check_duration_seconds{check,kind}`: health check run times.
pub const HEALTH_CHECK_DURATION: &str = "lameduck_health_check_duration_seconds";

/// How often a running lifecycle samples its request and connection counts.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

const STATES: [State; 5] = [
    State::Starting,
    State::Ready,
    State::Draining,
    State::Stopping,
    State::Stopped,
];

/// Describe every metric to the installed recorder, once per process.
pub(crate) fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(
            STATE,
            "Lifecycle state: 1 for the current one, 0 for the others."
        );
        describe_gauge!(
            REQUESTS_IN_FLIGHT,
            "Requests whose response has not ended, as last sampled."
        );
        describe_gauge!(CONNECTIONS_OPEN, "Open connections, as last sampled.");
        describe_gauge!(
            STATE_DURATION,
            Unit::Seconds,
            "Time spent in each state (so far, for the current one)."
        );
        describe_gauge!(
            SHUTDOWN_DURATION,
            Unit::Seconds,
            "Time from the shutdown's trigger to Stopped (so far, until then)."
        );
        describe_counter!(SHUTDOWNS, "Shutdowns begun, by reason.");
        describe_counter!(HOOK_RUNS, "Hook runs by outcome.");
        describe_histogram!(HOOK_DURATION, Unit::Seconds, "Hook run times.");
        describe_counter!(
            REQUESTS_CUT,
            "In-flight requests cut at the drain timeout or the deadline."
        );
        describe_counter!(
            CONNECTIONS_CUT,
            "Connections cut at the drain timeout or the deadline."
        );
        describe_counter!(
            TASKS_ABANDONED,
            "Tracked tasks aborted because they outlived the drain."
        );
        describe_counter!(
            HEALTH_CHECKS,
            "Health check runs (not cache hits) by result."
        );
        describe_histogram!(
            HEALTH_CHECK_DURATION,
            Unit::Seconds,
            "Health check run times."
        );
        for state in STATES {
            metrics::gauge!(STATE, "state" => state.as_str()).set(0.0);
        }
        // Counters exist from the start, so the first increase is seen as one (a counter
        // that appears at 1 has no increase in Prometheus's eyes).
        for counter in [REQUESTS_CUT, CONNECTIONS_CUT, TASKS_ABANDONED] {
            metrics::counter!(counter).absolute(0);
        }
        metrics::gauge!(STATE, "state" => State::Starting.as_str()).set(1.0);
    });
}

/// The state gauges after a change to `to`; `left` is the state left and how long it
/// lasted.
pub(crate) fn state_changed(left: State, lasted: Duration, to: State) {
    metrics::gauge!(STATE, "state" => left.as_str()).set(0.0);
    metrics::gauge!(STATE, "state" => to.as_str()).set(1.0);
    metrics::gauge!(STATE_DURATION, "state" => left.as_str()).set(lasted.as_secs_f64());
}

/// The sampled gauges: counts of live work, and the time in the current state so far.
pub(crate) fn sample(
    requests: usize,
    connections: usize,
    state: State,
    in_state: Duration,
    since_trigger: Option<Duration>,
) {
    metrics::gauge!(REQUESTS_IN_FLIGHT).set(requests as f64);
    metrics::gauge!(CONNECTIONS_OPEN).set(connections as f64);
    if state != State::Stopped {
        metrics::gauge!(STATE_DURATION, "state" => state.as_str()).set(in_state.as_secs_f64());
    }
    if let Some(since) = since_trigger {
        metrics::gauge!(SHUTDOWN_DURATION).set(since.as_secs_f64());
    }
}

pub(crate) fn shutdown_began(reason: &crate::Reason) {
    metrics::counter!(SHUTDOWNS, "reason" => reason.to_string()).increment(1);
}

/// The shutdown's duration and the time in Stopping, as the report has them.
pub(crate) fn shutdown_ended(took: Duration, stopping: Duration) {
    metrics::gauge!(SHUTDOWN_DURATION).set(took.as_secs_f64());
    metrics::gauge!(STATE_DURATION, "state" => State::Stopping.as_str())
        .set(stopping.as_secs_f64());
}

pub(crate) fn hook_ran(name: &str, phase: &'static str, outcome: HookOutcome, took: Duration) {
    metrics::counter!(
        HOOK_RUNS,
        "hook" => name.to_owned(),
        "phase" => phase,
        "outcome" => outcome.as_str(),
    )
    .increment(1);
    if outcome != HookOutcome::Abandoned {
        metrics::histogram!(HOOK_DURATION, "hook" => name.to_owned(), "phase" => phase)
            .record(took.as_secs_f64());
    }
}

pub(crate) fn cut(requests: usize, connections: usize, tasks: usize) {
    metrics::counter!(REQUESTS_CUT).increment(requests as u64);
    metrics::counter!(CONNECTIONS_CUT).increment(connections as u64);
    metrics::counter!(TASKS_ABANDONED).increment(tasks as u64);
}

pub(crate) fn check_ran(name: &str, kind: &'static str, passed: bool, took: Duration) {
    let result = if passed { "pass" } else { "fail" };
    metrics::counter!(
        HEALTH_CHECKS,
        "check" => name.to_owned(),
        "kind" => kind,
        "result" => result,
    )
    .increment(1);
    metrics::histogram!(HEALTH_CHECK_DURATION, "check" => name.to_owned(), "kind" => kind)
        .record(took.as_secs_f64());
}
