//! `lameduck probe` against local servers.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::{Server, dead_port, respond, run, stderr};

/// A generous bound for anything that should be quick, so slow machines do not flake.
const QUICK: Duration = Duration::from_secs(5);

#[test]
fn ok_200_succeeds_silently_and_sends_kubelet_like_headers() {
    let server = Server::status(200);
    let (output, _) = run(&["probe", &server.url("/healthz?x=1")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].request_line,
        "GET /healthz?x=1 HTTP/1.1\r\n".trim_end()
    );
    let head = &seen[0].head;
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        head.contains(&format!("User-Agent: lameduck-probe/{version}\r\n")),
        "{head}"
    );
    assert!(head.contains("Accept: */*\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(
        head.contains(&format!("Host: {}\r\n", server.addr)),
        "{head}"
    );
}

#[test]
fn headers_are_added_and_user_agent_overridden() {
    let server = Server::status(204);
    let (output, _) = run(&[
        "probe",
        "--header",
        "User-Agent: custom/1",
        "-H",
        "X-Probe: yes",
        &server.url("/"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let head = &server.seen()[0].head;
    assert!(head.contains("User-Agent: custom/1\r\n"), "{head}");
    assert!(!head.contains("lameduck-probe"), "{head}");
    assert!(head.contains("X-Probe: yes\r\n"), "{head}");
}

#[test]
fn host_header_can_be_set() {
    let server = Server::status(200);
    let (output, _) = run(&["probe", "-H", "Host: virtual.example", &server.url("/")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let head = &server.seen()[0].head;
    assert!(head.contains("Host: virtual.example\r\n"), "{head}");
    assert_eq!(head.matches("Host:").count(), 1, "{head}");
}

#[test]
fn redirect_to_same_host_is_followed() {
    let server = Server::start(|request, stream| match request.path() {
        "/start" => respond(stream, 302, &[("Location", "/healthy")], b""),
        "/healthy" => respond(stream, 200, &[], b"ok"),
        _ => respond(stream, 404, &[], b""),
    });
    let (output, _) = run(&["probe", &server.url("/start")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "",
        "a followed redirect is not worth a warning"
    );
    let paths: Vec<String> = server.seen().iter().map(|s| s.path().to_owned()).collect();
    assert_eq!(paths, ["/start", "/healthy"]);
}

#[test]
fn redirect_to_same_host_other_port_is_followed_and_its_status_counts() {
    // The kubelet compares host names only, so a port change is still "the same host".
    let target = Server::status(503);
    let location = target.url("/elsewhere");
    let server =
        Server::start(move |_, stream| respond(stream, 301, &[("Location", &location)], b""));
    let (output, _) = run(&["probe", &server.url("/")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("503"), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("after 1 redirects"),
        "{}",
        stderr(&output)
    );
    assert_eq!(target.seen().len(), 1);
}

#[test]
fn redirect_to_other_host_is_not_followed_and_is_a_success_with_warning() {
    // 127.0.0.1 redirecting to `localhost`: another host name, even if it is the same
    // machine. The kubelet returns the 3xx as the answer, a success with a warning.
    let other = Server::status(500);
    let location = format!("http://localhost:{}/", other.addr.port());
    let server =
        Server::start(move |_, stream| respond(stream, 302, &[("Location", &location)], b""));
    let (output, _) = run(&["probe", &server.url("/")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{message}");
    assert!(message.contains("warning"), "{message}");
    assert!(message.contains("302"), "{message}");
    assert!(message.contains("another host"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert_eq!(
        other.seen().len(),
        0,
        "the other host must not be contacted"
    );
}

#[test]
fn redirect_to_https_on_another_host_is_not_followed_and_is_a_success_with_warning() {
    // The host is compared before the scheme matters: the kubelet never follows a redirect
    // to another host, so an https:// Location there is simply the 3xx answer.
    let location = "https://other.example:8443/login".to_owned();
    let server =
        Server::start(move |_, stream| respond(stream, 302, &[("Location", &location)], b""));
    let (output, _) = run(&["probe", &server.url("/")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{message}");
    assert!(message.contains("warning"), "{message}");
    assert!(message.contains("another host"), "{message}");
    assert!(
        message.contains("https://other.example:8443/login"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn redirect_to_https_on_the_same_host_fails() {
    // The kubelet would follow it (with TLS); this binary cannot, so it is a failure.
    let server = Server::start(|_, stream| {
        respond(stream, 301, &[("Location", "https://127.0.0.1:8443/")], b"")
    });
    let (output, _) = run(&["probe", &server.url("/")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("https is not supported"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn redirect_loop_stops_after_ten_requests() {
    let server = Server::start(|_, stream| respond(stream, 307, &[("Location", "/loop")], b""));
    let (output, _) = run(&["probe", &server.url("/loop")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("stopped after 10 requests"), "{message}");
    assert_eq!(server.seen().len(), 10);
}

#[test]
fn not_found_fails_with_status() {
    let server = Server::status(404);
    let (output, _) = run(&["probe", &server.url("/nope")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(message.contains("404"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn unavailable_fails_with_status() {
    let server = Server::status(503);
    let (output, _) = run(&["probe", &server.url("/readyz")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(message.contains("503"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn hanging_server_times_out() {
    let server = Server::start(|_, _stream| thread::sleep(Duration::from_secs(60)));
    let (output, took) = run(&["probe", "--timeout", "300ms", &server.url("/")]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("timed out after 300ms"), "{message}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < QUICK, "the timeout was not honoured: {took:?}");
}

#[test]
fn body_that_stalls_midway_times_out() {
    // The timeout covers the body too (while less than 10 KiB has arrived).
    let server = Server::start(|_, stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf");
        thread::sleep(Duration::from_secs(60));
    });
    let (output, took) = run(&["probe", "--timeout", "300ms", &server.url("/")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn refused_connection_fails() {
    let url = format!("http://127.0.0.1:{}/healthz", dead_port());
    let (output, took) = run(&["probe", &url]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(message.contains("refused"), "{message}");
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn invalid_urls_fail_with_a_reason() {
    for (url, expected) in [
        ("not a url", "bad URL"),
        ("127.0.0.1:8080/healthz", "bad URL"),
        ("https://127.0.0.1/", "https is not supported"),
        ("http:///nohost", "bad URL"),
    ] {
        let (output, _) = run(&["probe", url]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{url}: {message}");
        assert!(message.contains(expected), "{url}: {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
}

#[test]
fn one_mebibyte_body_succeeds() {
    let server = Server::start(|_, stream| respond(stream, 200, &[], &vec![b'x'; 1 << 20]));
    let (output, took) = run(&["probe", "--timeout", "5s", &server.url("/big")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn large_body_is_not_read_to_the_end() {
    // Announces 1 MiB, sends 64 KiB, then stalls: only reading at most 10 KiB lets this
    // succeed before the timeout.
    let server = Server::start(|_, stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
        let _ = stream.write_all(&[b'x'; 64 * 1024]);
        thread::sleep(Duration::from_secs(60));
    });
    let (output, took) = run(&["probe", "--timeout", "10s", &server.url("/big")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["probe"][..],
        &["probe", "--timeout", "soon", "http://127.0.0.1/"],
        &["probe", "--timeout", "0s", "http://127.0.0.1/"],
        &["probe", "-H", "no colon", "http://127.0.0.1/"],
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

#[test]
fn help_has_examples_and_exit_codes() {
    for command in ["probe", "prestop", "once"] {
        let (output, _) = run(&[command, "--help"]);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success());
        assert!(help.contains("Examples:"), "{command}: {help}");
        assert!(help.contains("Exit codes:"), "{command}: {help}");
    }
}
