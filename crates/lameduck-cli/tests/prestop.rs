//! `lameduck prestop`: calling a blocking /shutdown, a dead port, sleeping.
#![allow(clippy::unwrap_used)]

mod common;

use std::thread;
use std::time::Duration;

use common::{Server, dead_port, lameduck, respond, run, stderr};

/// A generous bound for anything that should be quick, so slow machines do not flake.
const QUICK: Duration = Duration::from_secs(5);

#[test]
fn waits_for_a_blocking_shutdown_endpoint() {
    let server = Server::start(|request, stream| {
        if request.path() == "/shutdown" {
            // The lame-duck delay of the service.
            thread::sleep(Duration::from_secs(1));
            respond(stream, 200, &[], b"draining");
        } else {
            respond(stream, 404, &[], b"");
        }
    });
    let (output, took) = run(&[
        "prestop",
        "--log-to",
        "stderr",
        "--url",
        &server.url("/shutdown"),
    ]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(
        took >= Duration::from_secs(1),
        "did not wait for the answer: {took:?}"
    );
    assert!(log.contains("answered 200 OK"), "{log}");
    assert!(log.contains("draining"), "{log}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path(), "/shutdown");
    assert!(
        seen[0].head.contains("User-Agent: lameduck-prestop/"),
        "{}",
        seen[0].head
    );
}

#[test]
fn dead_port_is_reported_and_still_exits_0() {
    let url = format!("http://127.0.0.1:{}/shutdown", dead_port());
    let (output, took) = run(&["prestop", "--log-to", "stderr", "--url", &url]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("failed"), "{log}");
    assert!(log.contains("refused"), "{log}");
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn error_status_is_reported_and_still_exits_0() {
    let server = Server::status(500);
    let (output, _) = run(&[
        "prestop",
        "--log-to",
        "stderr",
        "--url",
        &server.url("/shutdown"),
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("answered 500"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn hanging_endpoint_times_out_and_still_exits_0() {
    let server = Server::start(|_, _stream| thread::sleep(Duration::from_secs(60)));
    let (output, took) = run(&[
        "prestop",
        "--log-to",
        "stderr",
        "--timeout",
        "300ms",
        "--url",
        &server.url("/shutdown"),
    ]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("timed out after 300ms"), "{log}");
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn sleep_alone() {
    let (output, took) = run(&["prestop", "--log-to", "stderr", "--sleep", "200ms"]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < QUICK, "{took:?}");
    assert!(log.contains("sleeping 200ms"), "{log}");
}

#[test]
fn call_then_sleep() {
    let server = Server::status(200);
    let (output, took) = run(&[
        "prestop",
        "--log-to",
        "stderr",
        "--url",
        &server.url("/shutdown"),
        "--sleep",
        "200ms",
    ]);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    let answered = log.find("answered 200").unwrap();
    let sleeping = log.find("sleeping").unwrap();
    assert!(answered < sleeping, "the call comes first: {log}");
}

#[test]
fn log_destination_from_the_environment() {
    let output = lameduck()
        .args(["prestop", "--sleep", "0s"])
        .env("LAMEDUCK_PRESTOP_LOG", "stderr")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("lameduck prestop: sleeping 0s"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["prestop"][..],
        &["prestop", "--url", "not a url"],
        &["prestop", "--url", "https://127.0.0.1/shutdown"],
        &["prestop", "--sleep", "forever"],
        &["prestop", "--sleep", "1s", "--header", "X: y"],
        &["prestop", "--sleep", "1s", "--log-to", "syslog"],
    ] {
        let (output, _) = run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
