//! `lameduck wait-ready URL`, black-box: waiting for tcp:// and http:// targets, the
//! timeout, usage errors, credentials never echoed.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, dead_port, drain, eventually, lameduck, respond, run, stderr};

/// A safety net for anything that should be quick, so slow machines do not flake.
const GENEROUS: Duration = Duration::from_secs(20);

/// Starts `lameduck wait-ready ARGS` with stderr piped.
fn spawn(args: &[&str]) -> Child {
    lameduck()
        .arg("wait-ready")
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits at most `limit` for `child` to exit (killing it otherwise): its status and stderr.
fn finish(mut child: Child, limit: Duration) -> (ExitStatus, String) {
    let mut status = None;
    let exited = eventually(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let err = drain(child.stderr.take().unwrap());
        panic!("wait-ready did not exit within {limit:?}; stderr: {err}");
    }
    let err = drain(child.stderr.take().unwrap());
    (status.unwrap(), err)
}

#[test]
fn tcp_target_that_starts_listening_later() {
    let port = dead_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = spawn(&["--timeout", "30s", &url]);
    // Bound only now, after the command started.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (status, err) = finish(child, GENEROUS);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.starts_with(&format!("lameduck wait-ready: {url} ready after ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // The readiness connection really reached this listener.
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok());
}

#[test]
fn http_target_is_ready_only_after_a_200() {
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    let server = Server::start(move |_, stream| {
        // 503 twice, then 200.
        let status = if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            503
        } else {
            200
        };
        respond(stream, status, &[], b"");
    });
    let url = server.url("/readyz");
    let child = spawn(&["--timeout", "30s", &url]);
    let (status, err) = finish(child, GENEROUS);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(answered.load(Ordering::SeqCst), 3, "{err}");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.request_line == "GET /readyz HTTP/1.1")
    );
    assert!(err.contains(&format!("{url} ready after ")), "{err}");
}

#[test]
fn http_3xx_counts_as_ready() {
    let server = Server::start(|_, stream| {
        respond(
            stream,
            302,
            &[("Location", "http://localhost:1/elsewhere")],
            b"",
        );
    });
    let (output, _) = run(&["wait-ready", "--timeout", "10s", &server.url("/")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn never_ready_fails_at_the_timeout_with_the_last_reason() {
    let url = format!("tcp://127.0.0.1:{}", dead_port());
    let (output, elapsed) = run(&["wait-ready", "--timeout", "1s", &url]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "lameduck wait-ready: {url} not ready after 1s: {url}: "
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn http_answering_503_fails_at_the_timeout_saying_so() {
    let server = Server::status(503);
    let url = server.url("/readyz");
    let (output, elapsed) = run(&["wait-ready", "--timeout", "1s", &url]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{url} not ready after 1s: ")),
        "{err}"
    );
    assert!(err.contains("answered 503"), "{err}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // Polled, not hammered: about every 200 ms for 1 s.
    let attempts = server.seen().len();
    assert!((2..=20).contains(&attempts), "{attempts} attempts");
}

#[test]
fn an_attempt_that_hangs_is_cut_off_at_the_timeout() {
    // Reads the request, never answers; the connection ends when the client gives up.
    let server = Server::start(|_, stream| {
        let _ = stream.read_to_end(&mut Vec::new());
    });
    let url = server.url("/");
    let started = Instant::now();
    let (output, _) = run(&["wait-ready", "--timeout", "1500ms", &url]);
    let elapsed = started.elapsed();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("not ready after 1s 500ms: "), "{err}");
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn bad_urls_and_timeouts_are_usage_errors() {
    for args in [
        &["wait-ready", "ftp://x"][..],
        &["wait-ready", "https://127.0.0.1:8443/"],
        &["wait-ready", "127.0.0.1:80"],
        &["wait-ready", "tcp://127.0.0.1"],
        &["wait-ready", "tcp://127.0.0.1:0"],
        &["wait-ready", "http://127.0.0.1:99999/"],
        &["wait-ready", "--timeout", "0s", "tcp://127.0.0.1:1"],
        &["wait-ready", "--timeout", "soon", "tcp://127.0.0.1:1"],
        &["wait-ready"],
    ] {
        let (output, elapsed) = run(args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("--ready"), "{args:?}: {err}");
        assert!(elapsed < GENEROUS, "{args:?}: {elapsed:?}");
    }
}

#[test]
fn credentials_are_never_echoed() {
    for url in [
        "http://user:secret@127.0.0.1:1/",
        "tcp://user:secret@127.0.0.1:1",
        "tcp://user:secret@127.0.0.1",
        "ftp://user:secret@127.0.0.1/",
        "https://user:secret@127.0.0.1/",
    ] {
        let (output, _) = run(&["wait-ready", "--timeout", "1s", url]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{url}: {err}");
        assert!(!err.contains("secret"), "{url}: {err}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("secret"));
    }
}

#[test]
fn help_has_examples_and_exit_codes() {
    let (output, _) = run(&["wait-ready", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("postStart:"), "{help}");
    let (output, _) = run(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("  wait-ready "), "{help}");
}
