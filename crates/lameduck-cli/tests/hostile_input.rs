//! Black-box tests of the binary against hostile or mistaken input: URLs whose port is not
//! a port (which must never turn into port 80), URLs with credentials (which must never be
//! echoed: kubelet events keep an exec hook's output), and files that are not regular files
//! where `once` expects its lock and result files (which must never hang it).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Server, lameduck, respond, temp_dir};

/// How long a command that must not hang gets before it is killed and the test fails.
/// Generous: it only bounds a regression, a passing run takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

/// The clap usage-error exit status.
const USAGE: i32 = 2;

/// Bad ports, none containing "80", so that a message mentioning ":80" can only be the
/// silent fallback to port 80.
const BAD_PORT_URLS: [(&str, &str); 5] = [
    ("http://127.0.0.1:99999/", "99999"),
    ("http://127.0.0.1:65536/livez", "65536"),
    ("http://127.0.0.1:abc/", "abc"),
    ("http://[::1]:70000/", "70000"),
    ("http://127.0.0.1:90900/shutdown", "90900"),
];

/// Runs the binary with `args`; kills it and fails the test if it has not exited within
/// [`DEADLINE`].
fn run_with_deadline(args: &[&str]) -> Output {
    let child = lameduck()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    match receive.recv_timeout(DEADLINE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let output = receive.recv().unwrap().unwrap();
            panic!(
                "lameduck {args:?} still running after {DEADLINE:?}; killed. stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// stdout and stderr together, as the kubelet would record them.
fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A listener on port 80 of 127.0.0.1 when this test may bind one (root, or a lowered
/// `ip_unprivileged_port_start`), to see that nothing connects there.
fn port_80() -> Option<TcpListener> {
    let listener = TcpListener::bind("127.0.0.1:80").ok()?;
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

/// Asserts that nothing connected to the port-80 listener. A connection made by the
/// finished process has completed its handshake, so it would be waiting in the backlog.
fn assert_nothing_connected(listener: Option<&TcpListener>, what: &str) {
    if let Some(listener) = listener {
        match listener.accept() {
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{what}: something connected to port 80: {other:?}"),
        }
    }
}

#[test]
fn a_port_that_is_not_a_port_is_a_usage_error_naming_it_and_never_port_80() {
    // One test for every command, so that only one listener is bound to port 80.
    let listener = port_80();
    for (url, port) in BAD_PORT_URLS {
        for args in [
            &["probe", "--timeout", "2s", url][..],
            &[
                "prestop",
                "--log-to",
                "stderr",
                "--timeout",
                "2s",
                "--url",
                url,
            ],
        ] {
            let output = run_with_deadline(args);
            let message = all_output(&output);
            assert_eq!(output.status.code(), Some(USAGE), "{args:?}: {message}");
            assert!(message.contains(port), "{args:?}: {message}");
            assert!(message.contains("port"), "{args:?}: {message}");
            assert!(!message.contains(":80"), "{args:?}: {message}");
            assert_nothing_connected(listener.as_ref(), &format!("{args:?}"));
        }
    }
}

#[test]
fn a_redirect_to_a_port_that_is_not_a_port_fails_naming_the_location() {
    for location in [
        "http://127.0.0.1:99999/next",
        "//127.0.0.1:65536/next",
        "http://127.0.0.1:abc/next",
        "http://other.example:70000/next",
    ] {
        let server = Server::start(move |_, stream| {
            respond(stream, 302, &[("Location", location)], b"");
        });
        let output = run_with_deadline(&["probe", "--timeout", "2s", &server.url("/")]);
        let message = all_output(&output);
        assert_eq!(output.status.code(), Some(1), "{location}: {message}");
        assert!(message.contains(location), "{location}: {message}");
        assert!(message.contains("port"), "{location}: {message}");
        assert!(!message.contains(":80/"), "{location}: {message}");
        assert_eq!(server.seen().len(), 1, "{location}: followed? {message}");
    }
}

#[test]
fn credentials_in_a_url_are_refused_without_being_echoed() {
    const SECRET: &str = "s3cr3t-pw";
    for url in [
        "http://user:s3cr3t-pw@127.0.0.1:8080/healthz",
        "http://user:s3cr3t-pw@127.0.0.1:99999/",
        "http://user:s3cr3t-pw@[::1]:abc/",
        "https://user:s3cr3t-pw@127.0.0.1/",
        "user:s3cr3t-pw@127.0.0.1:8080/healthz",
        "http://user:s3cr3t-pw/@127.0.0.1/",
        "http://user:s3cr3t-pw#@127.0.0.1/",
        "http://user:s3cr3t pw@127.0.0.1/",
    ] {
        for args in [
            &["probe", "--timeout", "2s", url][..],
            &[
                "prestop",
                "--log-to",
                "stderr",
                "--timeout",
                "2s",
                "--url",
                url,
            ],
        ] {
            let output = run_with_deadline(args);
            let message = all_output(&output);
            assert_ne!(output.status.code(), Some(0), "{args:?}: {message}");
            assert!(!message.contains(SECRET), "{args:?}: {message}");
            assert!(!message.contains("s3cr3t"), "{args:?}: {message}");
        }
    }
}

#[test]
fn credentials_in_a_redirect_location_are_never_echoed() {
    // Same host (followed, so refused: a failure) and another host (not followed: a 3xx
    // success with a warning): neither message may show the password.
    let server = Server::start(|seen, stream| {
        let location = if seen.path() == "/same" {
            "http://user:s3cr3t-pw@127.0.0.1:1/next"
        } else {
            "http://user:s3cr3t-pw@other.example/next"
        };
        respond(stream, 302, &[("Location", location)], b"");
    });
    for (path, code) in [("/same", 1), ("/other", 0)] {
        let output = run_with_deadline(&["probe", "--timeout", "2s", &server.url(path)]);
        let message = all_output(&output);
        assert_eq!(output.status.code(), Some(code), "{path}: {message}");
        assert!(!message.contains("s3cr3t"), "{path}: {message}");
        assert!(message.contains("***@"), "{path}: {message}");

        let output = run_with_deadline(&[
            "prestop",
            "--log-to",
            "stderr",
            "--timeout",
            "2s",
            "--url",
            &server.url(path),
        ]);
        let message = all_output(&output);
        assert_eq!(output.status.code(), Some(0), "{path}: {message}");
        assert!(!message.contains("s3cr3t"), "{path}: {message}");
    }
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

#[test]
fn once_refuses_a_fifo_for_its_lock_or_result_file_without_hanging() {
    for name in ["k.lock", "k.result"] {
        let dir = temp_dir("fifo");
        let fifo = dir.join(name);
        mkfifo(&fifo);
        let marker = dir.join("ran");
        let script = format!("touch '{}'", marker.display());
        let output = run_with_deadline(&[
            "once",
            "--key",
            "k",
            "--state-dir",
            dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ]);
        let message = all_output(&output);
        assert_eq!(output.status.code(), Some(125), "{name}: {message}");
        assert!(
            message.contains(&fifo.display().to_string()),
            "{name}: {message}"
        );
        assert!(message.contains("not a regular file"), "{name}: {message}");
        assert!(!marker.exists(), "{name}: the command ran: {message}");
    }
}

#[test]
fn once_does_not_hang_on_a_fifo_where_it_writes_the_result() {
    let dir = temp_dir("fifo-tmp");
    let fifo = dir.join("k.result.tmp");
    mkfifo(&fifo);
    let output = run_with_deadline(&[
        "once",
        "--key",
        "k",
        "--state-dir",
        dir.to_str().unwrap(),
        "--",
        "true",
    ]);
    let message = all_output(&output);
    // The command ran and succeeded: its exit code is the answer, the result just could
    // not be recorded.
    assert_eq!(output.status.code(), Some(0), "{message}");
    assert!(message.contains(&fifo.display().to_string()), "{message}");
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn once_says_when_the_state_directory_is_not_a_directory() {
    let dir = temp_dir("fifo-dir");
    let state = dir.join("state");
    mkfifo(&state);
    let output = run_with_deadline(&[
        "once",
        "--key",
        "k",
        "--state-dir",
        state.to_str().unwrap(),
        "--",
        "true",
    ]);
    let message = all_output(&output);
    assert_eq!(output.status.code(), Some(125), "{message}");
    assert!(message.contains(&state.display().to_string()), "{message}");
    assert!(message.contains("not a directory"), "{message}");
}

/// A mistyped header (`Bearer x` for `Authorization: Bearer x`) is a usage error that never
/// repeats what was typed: exec hook output ends up in kubelet events.
#[test]
fn a_malformed_header_is_refused_without_being_echoed() {
    for header in [
        "Bearer s3cr3t-token",
        "Authorization Bearer s3cr3t-token: x",
        "Authorization: s3cr3t\u{1}token",
    ] {
        for args in [
            &["probe", "-H", header, "http://127.0.0.1:9/livez"][..],
            &[
                "prestop",
                "--log-to",
                "stderr",
                "-H",
                header,
                "--url",
                "http://127.0.0.1:9/shutdown",
            ],
        ] {
            let output = run_with_deadline(args);
            let message = all_output(&output);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
            assert!(!message.contains("s3cr3t"), "{args:?}: {message}");
            assert!(message.contains("header"), "{args:?}: {message}");
        }
    }
}
