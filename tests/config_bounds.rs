//! Durations that parse but would overflow the clock, given to the real `orders` binary:
//! the service must refuse to start (exit status 78, `EX_CONFIG`) and say which variable
//! and which value, rather than start and then panic on `Instant + Duration` at the first
//! SIGTERM (grace period) or in its startup hook (hook timeout).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lameduck_platform_tests::{Service, TempDir, binary};

/// Long enough for a loaded CI machine to start a process and read its environment; a
/// service that accepted the value would never exit on its own, and fails here.
const START_AND_REFUSE: Duration = Duration::from_secs(30);

fn refuses_to_start(name: &str, var: &str, value: &str) {
    let dir = TempDir::new(name);
    let state = dir.path().join("orders-state.json");
    let mut service = Service::start(
        &binary("orders"),
        dir.path(),
        name,
        &[
            ("ORDERS_STATE", state.to_str().unwrap().to_owned()),
            (leak(var), value.to_owned()),
        ],
    );
    let status = service.wait_exit(START_AND_REFUSE);
    let stderr = service.logs();
    assert_eq!(
        status, 78,
        "{var}={value} must be a configuration error:\n{stderr}"
    );
    assert!(
        stderr.contains("configuration error"),
        "stderr should say it is a configuration error:\n{stderr}"
    );
    assert!(stderr.contains(var), "stderr should name {var}:\n{stderr}");
    assert!(
        stderr.contains(value),
        "stderr should quote {value}:\n{stderr}"
    );
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[test]
fn a_grace_period_beyond_the_clock_is_a_configuration_error() {
    refuses_to_start(
        "bounds-grace",
        "LAMEDUCK_GRACE_PERIOD",
        "18446744073709551615s",
    );
}

#[test]
fn a_hook_timeout_beyond_the_clock_is_a_configuration_error() {
    refuses_to_start("bounds-hook", "LAMEDUCK_HOOK_TIMEOUT", "500000000000y");
}
