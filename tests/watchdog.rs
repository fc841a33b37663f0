//! The shutdown watchdog, black-box: a service whose only runtime thread is blocked during
//! the shutdown still exits before the platform's SIGKILL (the end of the grace period),
//! with the deadline's exit status and a report in the termination log and on stderr.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use lameduck_platform_tests::{Service, TempDir};
use nix::sys::signal::Signal;

const GRACE: Duration = Duration::from_secs(3);

fn blocker() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_blocker"))
}

fn settings(hook_blocks: bool) -> Vec<(&'static str, String)> {
    vec![
        ("LAMEDUCK_GRACE_PERIOD", "3s".to_owned()),
        ("LAMEDUCK_SHUTDOWN_DELAY", "0s".to_owned()),
        ("LAMEDUCK_DRAIN_TIMEOUT", "1s".to_owned()),
        (
            "BLOCKER_HOOK_BLOCKS",
            if hook_blocks { "1" } else { "0" }.to_owned(),
        ),
    ]
}

#[test]
fn a_blocked_runtime_is_ended_by_the_watchdog_before_the_grace_period() {
    let dir = TempDir::new("watchdog");
    let mut service = Service::start(blocker(), dir.path(), "blocked", &settings(true));
    service.wait_ready();

    let sigterm = Instant::now();
    service.signal(Signal::SIGTERM);
    // The hook has the runtime's only thread from here on: nothing async runs again.
    service.wait_for_log("blocking the runtime thread", Duration::from_secs(30));
    let status = service.wait_exit(Duration::from_secs(30));
    let took = sigterm.elapsed();
    eprintln!("exited {took:?} after SIGTERM (grace period {GRACE:?})");

    assert_eq!(
        status,
        i32::from(lameduck::EXIT_DEADLINE),
        "{}",
        service.logs()
    );
    // Before the platform's SIGKILL, and not before the shutdown deadline (grace period
    // minus the safety margin, a tenth of it here).
    assert!(took < GRACE, "exited {took:?} after SIGTERM");
    assert!(
        took >= GRACE - GRACE / 10,
        "exited {took:?} after SIGTERM, before the deadline"
    );

    let logs = service.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("lameduck: shutdown watchdog fired: "))
        .unwrap_or_else(|| panic!("no watchdog report on stderr:\n{logs}"));
    let on_stderr: serde_json::Value = serde_json::from_str(
        line.split_once("fired: ")
            .map(|(_, json)| json)
            .expect("the JSON"),
    )
    .expect("the stderr report is JSON");

    let report = service.report();
    assert_eq!(report, on_stderr, "the same report in both places");
    assert_eq!(report["reason"], "signal:SIGTERM");
    assert_eq!(report["clean"], false);
    assert_eq!(report["deadline_exceeded"], true);
    assert_eq!(report["exit_code"], lameduck::EXIT_DEADLINE);
    assert!(report["watchdog"].is_string(), "{report}");
}

#[test]
fn a_runtime_blocked_before_the_signal_still_hears_it_and_exits_before_the_grace_period() {
    let dir = TempDir::new("watchdog-early");
    let mut settings = settings(false);
    settings.push(("BLOCKER_BLOCKS_WHEN_READY", "1".to_owned()));
    let mut service = Service::start(blocker(), dir.path(), "blocked-early", &settings);
    // Not `wait_ready`: the admin endpoints stop answering once the thread is taken.
    service.wait_for_log(
        "blocking the runtime thread before any signal",
        Duration::from_secs(60),
    );

    let sigterm = Instant::now();
    service.signal(Signal::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(30));
    let took = sigterm.elapsed();
    eprintln!("exited {took:?} after SIGTERM (grace period {GRACE:?})");
    assert_eq!(
        status,
        i32::from(lameduck::EXIT_DEADLINE),
        "{}",
        service.logs()
    );
    assert!(took < GRACE, "exited {took:?} after SIGTERM");
    let report = service.report();
    assert_eq!(report["reason"], "signal:SIGTERM", "{report}");
    assert_eq!(report["deadline_exceeded"], true, "{report}");
    assert!(report["watchdog"].is_string(), "{report}");
}

#[test]
fn an_unblocked_runtime_finishes_its_own_shutdown_without_the_watchdog() {
    // The control: the same service, nothing blocked, exits cleanly with its own report.
    let dir = TempDir::new("watchdog-control");
    let mut service = Service::start(blocker(), dir.path(), "free", &settings(false));
    service.wait_ready();
    let sigterm = Instant::now();
    service.signal(Signal::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(30));
    assert_eq!(status, 0, "{}", service.logs());
    assert!(sigterm.elapsed() < GRACE);
    assert!(!service.logs().contains("watchdog fired"));
    let report = service.report();
    assert_eq!(report["clean"], true, "{report}");
    assert!(report.get("watchdog").is_none(), "{report}");
}
