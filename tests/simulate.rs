//! `lameduck simulate` against real services: `orders` passes, bare axum (bench/baseline)
//! fails with its failures classified and advice, and plain Python services show each
//! class of failure, a SIGKILL, and that the command works for any language.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use lameduck_platform_tests::{TempDir, binary, free_port};

/// Short windows so each run takes seconds: traffic 1 s before the trigger and 1 s after.
const QUICK: [&str; 6] = ["--before", "1s", "--propagation", "1s", "--rate", "200"];

fn python_server() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/simulate_server.py")
}

/// Runs `lameduck simulate ARGS -- CMD` with `env`; its exit status and its JSON verdict.
fn simulate(args: &[&str], env: &[(&str, String)], command: &[&str]) -> (i32, serde_json::Value) {
    let output: Output = Command::new(binary("lameduck"))
        .arg("simulate")
        .args(QUICK)
        .args(args)
        .arg("--json")
        .arg("--")
        .args(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("LAMEDUCK_TERMINATION_LOG")
        .output()
        .expect("running lameduck simulate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let verdict = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON verdict ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    (output.status.code().expect("an exit code"), verdict)
}

fn python(mode: &str, port: u16, extra: &[&str]) -> (i32, serde_json::Value) {
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let (ready, live, traffic) = (url("/ready"), url("/live"), url("/"));
    let mut args = vec!["--ready", &ready, "--live", &live, "--traffic", &traffic];
    args.extend_from_slice(extra);
    let script = python_server();
    let port = port.to_string();
    simulate(
        &args,
        &[],
        &["python3", script.to_str().unwrap(), mode, &port, "2"],
    )
}

/// `orders` (2 s shutdown delay) under simulate; `args` is given its admin and traffic
/// ports.
fn simulate_orders(
    label: &str,
    args: impl FnOnce(u16, u16) -> Vec<String>,
) -> (i32, serde_json::Value) {
    let dir = TempDir::new(label);
    let (traffic, admin) = (free_port(), free_port());
    let args = args(admin, traffic);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let state = dir.path().join("orders-state.json");
    let orders = binary("orders");
    simulate(
        &args,
        &[
            ("PORT", traffic.to_string()),
            ("LAMEDUCK_ADMIN_ADDR", format!("127.0.0.1:{admin}")),
            ("LAMEDUCK_SHUTDOWN_DELAY", "2s".to_owned()),
            ("ORDERS_STATE", state.to_str().unwrap().to_owned()),
        ],
        &[orders.to_str().unwrap()],
    )
}

fn class(verdict: &serde_json::Value, class: &str) -> u64 {
    verdict["failed_by_class"][class].as_u64().unwrap()
}

fn advice(verdict: &serde_json::Value) -> String {
    verdict["advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn orders_loses_nothing_and_passes() {
    let (status, verdict) = simulate_orders("simulate-orders", |admin, traffic| {
        vec![
            "--ready".into(),
            format!("http://127.0.0.1:{admin}/readyz"),
            "--live".into(),
            format!("http://127.0.0.1:{admin}/livez"),
            "--traffic".into(),
            format!("http://127.0.0.1:{traffic}/"),
        ]
    });
    assert_eq!(status, 0, "{verdict:#}");
    assert_eq!(verdict["failed"], 0, "{verdict:#}");
    assert!(verdict["requests"].as_u64().unwrap() > 0, "{verdict:#}");
    assert_eq!(verdict["killed"], false);
    assert_eq!(verdict["exit_code"], 0);
    assert_eq!(verdict["liveness_failures"], 0);
    // Readiness failed in the delay, before the exit.
    let flip = verdict["ready_flip_ms"]
        .as_u64()
        .expect("readiness flipped");
    assert!(flip < verdict["exit_ms"].as_u64().unwrap(), "{verdict:#}");
    // The termination message is the service's own report, read after its exit.
    assert_eq!(verdict["termination_message"]["clean"], true, "{verdict:#}");
    assert_eq!(
        verdict["advice"].as_array().unwrap().len(),
        0,
        "{verdict:#}"
    );
}

#[test]
fn bare_axum_fails_with_classified_failures_and_advice() {
    let port = free_port();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let (ready, live, traffic) = (url("/ready"), url("/healthz"), url("/"));
    let baseline = binary("baseline-axum");
    let (status, verdict) = simulate(
        &["--ready", &ready, "--live", &live, "--traffic", &traffic],
        &[("PORT", port.to_string())],
        &[baseline.to_str().unwrap()],
    );
    assert_eq!(status, 1, "{verdict:#}");
    // It exits at once: what comes in the propagation window is refused.
    assert!(class(&verdict, "refused") > 0, "{verdict:#}");
    assert_eq!(
        verdict["failed"].as_u64().unwrap(),
        verdict["failures"].as_array().unwrap().len() as u64,
        "every failure has its time: {verdict:#}"
    );
    let advice = advice(&verdict);
    assert!(
        advice.contains("listener closed before endpoints"),
        "{advice}"
    );
    assert!(advice.contains("before traffic stopped coming"), "{advice}");
    assert_eq!(verdict["killed"], false);
}

#[test]
fn a_python_service_that_drains_properly_passes() {
    let (status, verdict) = python("graceful", free_port(), &[]);
    assert_eq!(status, 0, "{verdict:#}");
    assert_eq!(verdict["failed"], 0, "{verdict:#}");
    assert!(verdict["ready_flip_ms"].as_u64().is_some(), "{verdict:#}");
    assert!(verdict["termination_message"].is_null(), "{verdict:#}");
}

#[test]
fn answers_of_500_after_sigterm_are_status_5xx() {
    let (status, verdict) = python("5xx", free_port(), &[]);
    assert_eq!(status, 1, "{verdict:#}");
    assert!(class(&verdict, "status_5xx") > 0, "{verdict:#}");
    assert_eq!(class(&verdict, "refused"), 0, "{verdict:#}");
    assert!(advice(&verdict).contains("5xx answers"));
}

#[test]
fn requests_reset_after_sigterm_are_no_response() {
    let (status, verdict) = python("reset", free_port(), &[]);
    assert_eq!(status, 1, "{verdict:#}");
    assert!(class(&verdict, "no_response") > 0, "{verdict:#}");
    assert!(advice(&verdict).contains("never answered"));
}

#[test]
fn requests_left_hanging_after_sigterm_are_timeouts() {
    let (status, verdict) = python("hang", free_port(), &["--request-timeout", "1s"]);
    assert_eq!(status, 1, "{verdict:#}");
    assert!(class(&verdict, "timeout") > 0, "{verdict:#}");
    assert!(advice(&verdict).contains("timed out"));
}

#[test]
fn a_service_that_ignores_sigterm_is_killed_at_the_grace_period() {
    let (status, verdict) = python("ignore", free_port(), &["--grace", "3s"]);
    assert_eq!(status, 1, "{verdict:#}");
    assert_eq!(verdict["killed"], true, "{verdict:#}");
    assert_eq!(verdict["exit_code"], 137, "{verdict:#}");
    assert!(verdict["exit_ms"].as_u64().unwrap() >= 3000, "{verdict:#}");
    assert!(advice(&verdict).contains("SIGKILL was needed"));
}

#[test]
fn a_service_that_never_becomes_ready_exits_3() {
    let port = free_port();
    let ready = format!("http://127.0.0.1:{port}/nowhere");
    let traffic = format!("http://127.0.0.1:{port}/");
    let output = Command::new(binary("lameduck"))
        .args([
            "simulate",
            "--startup-timeout",
            "1s",
            "--ready",
            &ready,
            "--traffic",
            &traffic,
        ])
        .args(["--", "sleep", "30"])
        .output()
        .expect("running lameduck simulate");
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was not ready within 1s"), "{stderr}");
}

/// The preStop hook first (orders' `/shutdown`, which answers once the delay is over), then
/// SIGTERM: the kubelet's order, and the shutdown's reason is the hook.
#[test]
fn the_prestop_hook_comes_before_sigterm() {
    let (status, verdict) = simulate_orders("simulate-prestop", |admin, traffic| {
        vec![
            "--ready".into(),
            format!("http://127.0.0.1:{admin}/readyz"),
            "--prestop".into(),
            format!("http://127.0.0.1:{admin}/shutdown"),
            "--traffic".into(),
            format!("http://127.0.0.1:{traffic}/"),
        ]
    });
    assert_eq!(status, 0, "{verdict:#}");
    assert_eq!(verdict["failed"], 0, "{verdict:#}");
    let prestop_ms = verdict["prestop_ms"].as_u64().expect("the hook ran");
    assert!(
        prestop_ms >= 2000,
        "the hook waits for the delay: {verdict:#}"
    );
    assert_eq!(
        verdict["termination_message"]["reason"], "prestop",
        "{verdict:#}"
    );
    // No --live: liveness was not probed, so it cannot have failed.
    assert!(verdict["liveness_probes"].is_null(), "{verdict:#}");
}

/// Interrupted (Ctrl-C, or SIGTERM to simulate itself), it kills the service it started:
/// nothing outlives it.
#[test]
fn an_interrupted_simulation_leaves_no_service_behind() {
    use std::io::{BufRead, BufReader};
    let port = free_port();
    let ready = format!("http://127.0.0.1:{port}/ready");
    let traffic = format!("http://127.0.0.1:{port}/");
    let script = python_server();
    let mut simulate = Command::new(binary("lameduck"))
        .args([
            "simulate",
            "--before",
            "60s",
            "--ready",
            &ready,
            "--traffic",
            &traffic,
        ])
        .args(["--service-log", "/dev/stderr", "--"])
        .args([
            "python3",
            script.to_str().unwrap(),
            "ignore",
            &port.to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("running lameduck simulate");
    // The service says it serves (its output is simulate's stderr here); then it is up.
    let mut lines = BufReader::new(simulate.stderr.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("serving on"));
    assert!(serving.is_some(), "the service never said it serves");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(simulate.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = simulate.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    // The port is free again: the service is gone.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < patience,
            "the service still answers"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Something already answering where the service is to serve would be judged in its
/// place: simulate refuses to start instead (exit 3).
#[test]
fn a_port_already_taken_is_refused_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ready = format!("http://127.0.0.1:{port}/ready");
    let output = Command::new(binary("lameduck"))
        .args([
            "simulate",
            "--ready",
            &ready,
            "--traffic",
            &ready,
            "--",
            "sleep",
            "30",
        ])
        .output()
        .expect("running lameduck simulate");
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("something already accepts connections"),
        "{stderr}"
    );
}
