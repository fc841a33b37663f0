//! `lameduck run` around a naive program: Python's `http.server`, which dies the instant it
//! gets SIGTERM. Under load from keep-alive clients whose traffic goes on for the same
//! 300 ms after SIGTERM in both cases (the platform's routing catching up), the bare server
//! loses requests and the supervised one, with a 1 s lame duck, loses none.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lameduck_platform_tests::{Service, TempDir, binary, get, start_load};
use nix::sys::signal::Signal;

const CONNECTIONS: usize = 32;
/// Requests per second in all: steady, well within what `http.server` sustains.
const RATE: u64 = 300;
const PATIENCE: Duration = Duration::from_secs(30);
/// How long traffic keeps arriving after SIGTERM, in both cases: endpoints, kube-proxy and
/// load balancers catching up. Shorter than the supervised case's 1 s lame duck.
const PROPAGATION: Duration = Duration::from_millis(300);

/// A script that the harness starts as "the service" (with `PORT` set), which `exec`s
/// `command`: so the service's pid is the program's own.
fn launcher(dir: &Path, name: &str, command: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nexec {command}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn python_server() -> &'static str {
    // `-u`: the log reaches the harness as it is written.
    "python3 -u -m http.server \"$PORT\" --bind 127.0.0.1"
}

/// Until the traffic port answers 200.
fn wait_serving(service: &Service) {
    let deadline = Instant::now() + PATIENCE;
    while get(service.traffic, "/").map_or(true, |r| r.status != 200) {
        assert!(
            Instant::now() < deadline,
            "never served:\n{}",
            service.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failed(report: &lameduck_loadgen::LoadReport) -> u64 {
    report.counts.failures()
}

#[test]
fn a_naive_server_loses_no_request_under_lameduck_run() {
    let dir = TempDir::new("supervisor-python");
    let lameduck = binary("lameduck");
    let command = format!(
        "{} run --ready http://127.0.0.1:$PORT/ -- {}",
        lameduck.display(),
        python_server()
    );
    let script = launcher(dir.path(), "supervised.sh", &command);
    let mut service = Service::start(
        &script,
        dir.path(),
        "supervised",
        &[("LAMEDUCK_SHUTDOWN_DELAY", "1s".to_owned())],
    );
    service.wait_ready();
    let (load, stop) = start_load(&service, CONNECTIONS, RATE);
    // Some traffic first, so the stop happens under load.
    wait_serving(&service);
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    service.signal(Signal::SIGTERM);
    // The platform takes the pod out of its endpoints once readiness fails.
    let deadline = Instant::now() + PATIENCE;
    while get(service.admin, "/readyz").is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "readiness never failed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let readiness_failed_after = signalled.elapsed();
    // Traffic keeps coming for the same reaction time as in the bare case (well within the
    // 1 s lame duck): the platform's routing catches up a moment after the signal.
    std::thread::sleep(PROPAGATION.saturating_sub(signalled.elapsed()));
    let _ = stop.send(());
    let report = load.join().unwrap();
    // http.server dies of its stop signal: 128 + SIGTERM.
    let status = service.wait_exit(PATIENCE);
    eprintln!(
        "supervised: {} requests, {} failed ({:?}), readiness failed {:?} after SIGTERM, exit {status}",
        report.counts.total(),
        failed(&report),
        report.counts,
        readiness_failed_after
    );
    assert!(report.counts.ok > 0, "{report:?}");
    assert_eq!(failed(&report), 0, "{report:?}\n{}", service.logs());
    assert_eq!(status, 143, "{}", service.logs());
    let termination = service.report();
    assert_eq!(termination["reason"], "signal:SIGTERM");
    assert_eq!(termination["child"]["signal"], "SIGTERM");
    assert_eq!(termination["child"]["killed"], false);
}

#[test]
fn the_same_server_without_the_supervisor_loses_requests() {
    let dir = TempDir::new("bare-python");
    let script = launcher(dir.path(), "bare.sh", python_server());
    let mut service = Service::start(&script, dir.path(), "bare", &[]);
    wait_serving(&service);
    let (load, stop) = start_load(&service, CONNECTIONS, RATE);
    std::thread::sleep(Duration::from_millis(300));

    service.signal(Signal::SIGTERM);
    // The platform's routing catches up a moment after the signal: the same reaction time
    // as in the supervised case.
    std::thread::sleep(PROPAGATION);
    let _ = stop.send(());
    let report = load.join().unwrap();
    let status = service.wait_exit(PATIENCE);
    eprintln!(
        "bare: {} requests, {} failed ({:?}), exit {status}",
        report.counts.total(),
        failed(&report),
        report.counts
    );
    assert!(
        failed(&report) > 0,
        "the bare server lost nothing? {report:?}"
    );
}
