//! The examples' logs as a log pipeline gets them: stdout is a pipe here, as under
//! `kubectl logs` or `podman logs`. No colour escapes then, even without `NO_COLOR`;
//! `LOG_FORMAT=json` gives one JSON object per line; `RUST_LOG` filters; a bad
//! `LOG_FORMAT` stops the service at start, naming the variable and the value.
//! (Colour on a terminal is decided by `example_logging::colour`, unit-tested there.)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lameduck_platform_tests::{Service, TempDir, binary};
use nix::sys::signal::Signal;

/// A safety net for a loaded CI machine, not a pace: each wait ends on the service's own
/// progress (a log line, readiness, its exit).
const PATIENCE: Duration = Duration::from_secs(30);

/// Start `name` (`hello` or `orders`) with `env`, `NO_COLOR` removed when `no_color` is
/// false; wait until ready, send SIGTERM, wait for a clean exit; return the whole log.
fn run_through_a_shutdown(
    name: &str,
    label: &str,
    env: &[(&'static str, &str)],
    no_color: bool,
) -> String {
    let dir = TempDir::new(label);
    let mut env = lameduck_platform_tests::env(env);
    if name == "orders" {
        let state = dir.path().join("orders-state.json");
        env.push(("ORDERS_STATE", state.to_str().unwrap().to_owned()));
    }
    let unset: &[&str] = if no_color { &[] } else { &["NO_COLOR"] };
    let mut service = Service::start_without(&binary(name), dir.path(), label, &env, unset);
    service.wait_ready();
    service.signal(Signal::SIGTERM);
    let status = service.wait_exit(PATIENCE);
    let logs = service.logs();
    assert_eq!(status, 0, "{name} did not exit clean:\n{logs}");
    logs
}

#[test]
fn no_colour_escapes_when_stdout_is_a_pipe_even_without_no_color() {
    for name in ["hello", "orders"] {
        let logs = run_through_a_shutdown(name, &format!("logs-plain-{name}"), &[], false);
        assert!(
            logs.contains("to=draining"),
            "{name}: text logs expected:\n{logs}"
        );
        assert!(
            !logs.contains('\x1b'),
            "{name}: an ANSI escape in a piped log:\n{logs:?}"
        );
    }
}

#[test]
fn log_format_json_gives_one_json_object_per_line() {
    for name in ["hello", "orders"] {
        let logs = run_through_a_shutdown(
            name,
            &format!("logs-json-{name}"),
            &[("LOG_FORMAT", "json")],
            false,
        );
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{name}: not a JSON line ({e}): {line:?}\n{logs}"))
            })
            .collect();
        assert!(
            lines.iter().all(|l| l.is_object()
                && l["timestamp"].is_string()
                && l["level"].is_string()
                && l["fields"]["message"].is_string()),
            "{name}: each line has timestamp, level, fields.message:\n{logs}"
        );
        let draining = lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == "lifecycle state changed"
                    && l["fields"]["to"] == "draining"
            })
            .unwrap_or_else(|| panic!("{name}: no state change to draining:\n{logs}"));
        assert_eq!(draining["fields"]["from"], "ready", "{draining}");
        assert_eq!(draining["level"], "INFO", "{draining}");
        assert!(!logs.contains('\x1b'), "{name}: {logs:?}");
    }
}

/// `hello` hard-coded `info` before; `RUST_LOG` is honoured now. Only the driver's lines
/// (its state changes, readiness among them) get through.
#[test]
fn rust_log_filters_what_hello_logs() {
    let logs = run_through_a_shutdown(
        "hello",
        "logs-rust-log",
        &[("RUST_LOG", "warn,lameduck::driver=info")],
        true,
    );
    assert!(logs.contains("to=draining"), "{logs}");
    assert!(
        !logs.contains("lameduck_axum") && !logs.contains("shutdown budget"),
        "RUST_LOG was not honoured:\n{logs}"
    );
}

/// The switch's bad values stop the service at start, each example the way it reports its
/// other configuration errors: `hello` passes it up from `main` (exit 1, `Error: `),
/// `orders` exits 78 (`EX_CONFIG`).
#[test]
fn a_bad_log_format_stops_the_service_naming_the_variable_and_the_value() {
    for (name, value, expected_status) in [
        ("hello", "xml", 1),
        ("hello", "", 1),
        ("hello", "JSON", 1),
        ("orders", "yaml", 78),
    ] {
        let label = format!("logs-bad-{name}");
        let dir = TempDir::new(&label);
        let state = dir.path().join("orders-state.json");
        let mut service = Service::start(
            &binary(name),
            dir.path(),
            &label,
            &[
                ("LOG_FORMAT", value.to_owned()),
                ("ORDERS_STATE", state.to_str().unwrap().to_owned()),
            ],
        );
        let status = service.wait_exit(PATIENCE);
        let logs = service.logs();
        assert_eq!(
            status, expected_status,
            "{name} LOG_FORMAT={value:?}:\n{logs}"
        );
        assert!(
            logs.contains(&format!("LOG_FORMAT={value:?}")),
            "{name}: the message should name LOG_FORMAT and quote {value:?}:\n{logs}"
        );
        assert!(logs.contains("`text`") && logs.contains("`json`"), "{logs}");
    }
}

/// The start-up line states the platform (and what announced it) and the budget assumed,
/// with where each setting came from; an explicit `LAMEDUCK_*` setting wins over the
/// platform's default.
#[test]
fn the_start_up_line_states_the_platform_and_the_budget_assumed() {
    let logs = run_through_a_shutdown(
        "hello",
        "logs-budget-cloud-run",
        &[("K_SERVICE", "hello"), ("LAMEDUCK_GRACE_PERIOD", "8s")],
        true,
    );
    let line = logs
        .lines()
        .find(|l| l.contains("shutdown budget"))
        .unwrap_or_else(|| panic!("no budget line in:\n{logs}"));
    for wanted in [
        "platform=cloud-run",
        "detected_by=K_SERVICE",
        "grace_period=8s grace_period_from=LAMEDUCK_GRACE_PERIOD",
        "shutdown_delay=0s shutdown_delay_from=platform",
        "drain_timeout=7s drain_timeout_from=platform",
    ] {
        assert!(line.contains(wanted), "no {wanted:?} in {line:?}");
    }

    let logs = run_through_a_shutdown("hello", "logs-budget-unknown", &[], true);
    let line = logs
        .lines()
        .find(|l| l.contains("shutdown budget"))
        .unwrap_or_else(|| panic!("no budget line in:\n{logs}"));
    for wanted in ["platform=unknown", "detected_by=none", "grace_period=30s"] {
        assert!(line.contains(wanted), "no {wanted:?} in {line:?}");
    }
}
