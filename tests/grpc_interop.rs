//! The greeter seen from another language's gRPC stack: Python's `grpcio` and
//! `grpcio-health-checking` (the C core most non-Rust gRPC clients share), calling the
//! health service as the kubelet's gRPC probe and health-checking balancers do, and
//! `helloworld.Greeter` through stubs generated at test time from
//! examples/greeter/proto/helloworld.proto (so the file is proved to match what the Rust
//! service serves).
//!
//! The Python side is set up by the tests themselves: a virtualenv under the workspace's
//! target directory (`target/python-grpc`) with pinned packages from PyPI, made once and
//! reused while its marker file names the same pins; concurrent test processes take turns
//! through a lock file. Without `python3` (or `LAMEDUCK_TEST_PYTHON`), its `venv` module
//! or PyPI, the tests fail and say which.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use lameduck_platform_tests::{Service, TempDir, binary};
use nix::sys::signal::Signal;

/// The Python packages, pinned: the client, the health stubs, and protoc for the
/// greeter's stubs.
const REQUIREMENTS: [&str; 3] = [
    "grpcio==1.85.3",
    "grpcio-health-checking==1.85.1",
    "grpcio-tools==1.85.1",
];

/// A safety net for what should take far less; nothing is paced by it.
const PATIENCE: Duration = Duration::from_secs(30);

/// The lame-duck delay of the shutdown tests: long enough for a few calls made after the
/// service has logged the change to draining, short enough to keep the tests quick.
const SHUTDOWN_DELAY: &str = "3s";

/// What the service logs once the lifecycle is Draining (health NOT_SERVING).
const DRAINING: &str = "to=draining";

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// The workspace's target directory, from this test binary's path
/// (`<target>/<profile>/deps/<name>-<hash>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("the target directory above <profile>/deps")
        .to_path_buf()
}

/// The virtualenv's interpreter, the virtualenv made first when it is not complete.
fn venv_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = target_dir().join("python-grpc");
        ensure_venv(&venv);
        venv.join("bin").join("python")
    })
}

/// Make `venv` with [`REQUIREMENTS`] unless its marker says it already has them. One
/// process at a time (an exclusive lock on a file beside it); the marker is written last,
/// so a venv left half-made by an interrupted install is made again.
fn ensure_venv(venv: &Path) {
    let marker = venv.join("lameduck-requirements.txt");
    let wanted = REQUIREMENTS.join("\n");
    let complete = || std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted);
    if complete() {
        return;
    }
    let parent = venv.parent().expect("the venv's parent");
    std::fs::create_dir_all(parent).unwrap();
    let lock_path = venv.with_extension("lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", lock_path.display()));
    // Blocks while another test process installs; released when `lock` is dropped.
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
    if complete() {
        return;
    }
    let started = Instant::now();
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .unwrap_or_else(|e| panic!("removing the incomplete {}: {e}", venv.display()));
    }
    let base = std::env::var_os("LAMEDUCK_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let base_name = base.to_string_lossy().into_owned();
    let made = Command::new(&base)
        .args(["-m", "venv"])
        .arg(venv)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the gRPC interop tests need Python 3 to install grpcio in a virtualenv, but \
                 `{base_name}` could not be run ({e}); install python3 (with its venv module) \
                 or point LAMEDUCK_TEST_PYTHON at an interpreter"
            )
        });
    assert!(
        made.status.success(),
        "`{base_name} -m venv {}` failed ({}): the gRPC interop tests need Python's venv \
         module (on Debian and Ubuntu: the python3-venv package)\n{}{}",
        venv.display(),
        made.status,
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr),
    );
    let python = venv.join("bin").join("python");
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--retries",
            "3",
        ])
        .args(REQUIREMENTS)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        installed.status.success(),
        "pip could not install {REQUIREMENTS:?} from PyPI into {} ({}): the gRPC interop \
         tests need PyPI (https://pypi.org, or the index pip is configured for) to be \
         reachable\n{}{}",
        venv.display(),
        installed.status,
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr),
    );
    std::fs::write(&marker, &wanted).unwrap();
    eprintln!(
        "installed {REQUIREMENTS:?} into {} in {:.1?}",
        venv.display(),
        started.elapsed()
    );
}

/// The Python client (tests/support/grpc_client.py) with the greeter's stubs, generated
/// into `dir` from the greeter's .proto file.
struct Client {
    python: &'static Path,
    stubs: PathBuf,
    dir: PathBuf,
}

impl Client {
    fn new(dir: &Path) -> Self {
        let python = venv_python();
        let stubs = dir.join("python-stubs");
        std::fs::create_dir_all(&stubs).unwrap();
        let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/greeter/proto");
        let generated = Command::new(python)
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(&protos)
            .arg(format!("--python_out={}", stubs.display()))
            .arg(format!("--grpc_python_out={}", stubs.display()))
            .arg(protos.join("helloworld.proto"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "grpc_tools.protoc failed on helloworld.proto ({}):\n{}{}",
            generated.status,
            String::from_utf8_lossy(&generated.stdout),
            String::from_utf8_lossy(&generated.stderr),
        );
        assert!(stubs.join("helloworld_pb2_grpc.py").exists());
        Self {
            python,
            stubs,
            dir: dir.to_path_buf(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/grpc_client.py");
        let mut command = Command::new(self.python);
        command
            .arg(script)
            .args(args)
            .env("PYTHONPATH", &self.stubs)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        command
    }

    /// Run one subcommand to its end: its exit status and the lines it printed. A run
    /// that printed nothing (a Python error) fails the test, with what it wrote on
    /// stderr.
    fn run(&self, args: &[&str]) -> (i32, Vec<String>) {
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running the Python client {args:?}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            !stdout.trim().is_empty(),
            "the Python client {args:?} printed nothing ({}); its stderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let lines = stdout.lines().map(str::to_owned).collect();
        (output.status.code().unwrap_or(-1), lines)
    }

    /// `check ADDR SERVICE` when it must succeed: the status name.
    fn check(&self, service: &Service, name: &str) -> String {
        let (status, lines) = self.run(&["check", &service.traffic.to_string(), name]);
        assert_eq!(status, 0, "Check({name:?}): {lines:?}");
        assert_eq!(lines.len(), 1, "Check({name:?}): {lines:?}");
        lines.into_iter().next().unwrap()
    }

    /// Start a subcommand whose lines are read as they come.
    fn spawn(&self, args: &[&str], label: &str) -> Running {
        let stderr = self.dir.join(format!("python-{label}.stderr"));
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the Python client {args:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            label: label.to_owned(),
        }
    }
}

/// A Python client still running; killed if the test ends before it does.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    label: String,
}

impl Running {
    /// The next line it prints.
    fn next_line(&self, within: Duration) -> String {
        self.lines.recv_timeout(within).unwrap_or_else(|error| {
            panic!(
                "the Python client ({}) printed no line ({error:?}); its stderr:\n{}",
                self.label,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            )
        })
    }

    /// Send one command line to a `session`, and return the line it answers with.
    fn ask(&mut self, command: &str) -> String {
        self.tell(command);
        self.next_line(PATIENCE)
    }

    /// Write one line to its stdin.
    fn tell(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("the session's stdin");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Wait for it to end (its output closed, then its exit): the exit status, once every
    /// line it printed has been read (and is returned).
    fn finish(&mut self, within: Duration) -> (i32, Vec<String>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the Python client ({}) did not end within {within:?}; printed {rest:?}",
                    self.label
                ),
            }
        }
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The greeter started with `extra` settings, ready.
fn start_greeter(dir: &TempDir, extra: &[(&'static str, &str)]) -> Service {
    let mut settings = env(&[("LAMEDUCK_DRAIN_TIMEOUT", "10s")]);
    settings.extend(env(extra));
    let mut service = Service::start(&binary("greeter"), dir.path(), "greeter", &settings);
    service.wait_ready();
    service
}

/// The end of a SIGTERM-ed greeter: exit status 0 and a clean report.
fn assert_clean_exit(service: &mut Service) {
    let status = service.wait_exit(PATIENCE);
    assert_eq!(status, 0, "{}", service.logs());
    let report = service.report();
    assert_eq!(report["reason"], "signal:SIGTERM", "{report}");
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["exit_code"], 0, "{report}");
    assert_eq!(report["requests_cut"], 0, "{report}");
}

#[test]
fn python_grpc_clients_see_a_ready_greeter() {
    let dir = TempDir::new("grpc-interop-ready");
    let client = Client::new(dir.path());
    let mut service = start_greeter(
        &dir,
        &[
            ("GREETER_STREAM_REPLIES", "3"),
            ("GREETER_STREAM_INTERVAL", "50ms"),
        ],
    );
    let addr = service.traffic.to_string();

    // The whole server, the greeter by name, and the lifecycle's three kinds.
    for name in ["", "helloworld.Greeter", "readiness", "liveness", "startup"] {
        assert_eq!(client.check(&service, name), "SERVING", "Check({name:?})");
    }

    let (status, lines) = client.run(&["hello", &addr, "interop"]);
    assert_eq!(
        (status, lines.as_slice()),
        (0, ["Hello interop!".to_owned()].as_slice())
    );

    // Every reply of the server stream, then the stream's end with status OK.
    let (status, lines) = client.run(&["stream", &addr, "interop"]);
    assert_eq!(status, 0, "{lines:?}");
    assert_eq!(
        lines,
        [
            "Hello interop! (1/3)",
            "Hello interop! (2/3)",
            "Hello interop! (3/3)",
            "END OK",
        ]
    );

    // An unknown service: Check fails with NOT_FOUND, as grpc.health.v1 asks.
    let (status, lines) = client.run(&["check", &addr, "nope.Service"]);
    assert_eq!(status, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("ERROR NOT_FOUND "), "{lines:?}");
    // ... and Watch says SERVICE_UNKNOWN, its stream left open.
    let mut unknown = client.spawn(&["watch", &addr, "nope.Service"], "watch-unknown");
    assert_eq!(unknown.next_line(PATIENCE), "SERVICE_UNKNOWN");

    service.signal(Signal::SIGTERM);
    // The open Watch of the unknown service ends with the shutdown too, cleanly.
    let (status, rest) = unknown.finish(PATIENCE);
    assert_eq!(
        (status, rest.as_slice()),
        (0, ["END OK".to_owned()].as_slice())
    );
    assert_clean_exit(&mut service);
}

#[test]
fn python_grpc_clients_see_the_lame_duck_after_sigterm() {
    let dir = TempDir::new("grpc-interop-lameduck");
    let client = Client::new(dir.path());
    let mut service = start_greeter(&dir, &[("LAMEDUCK_SHUTDOWN_DELAY", SHUTDOWN_DELAY)]);

    // One Python process for the calls made in the lame-duck delay, started before it:
    // each call still opens its own connection, as a probe does.
    let mut session = client.spawn(&["session", &service.traffic.to_string()], "session");
    assert_eq!(session.next_line(PATIENCE), "READY");
    assert_eq!(session.ask("check "), "SERVING");

    service.skip_logged();
    service.signal(Signal::SIGTERM);
    service.wait_for_log(DRAINING, PATIENCE);

    // Lame duck: readiness NOT_SERVING (for the greeter too), the greeter still answers,
    // liveness and startup hold.
    for (command, expected) in [
        ("check ", "NOT_SERVING"),
        ("check helloworld.Greeter", "NOT_SERVING"),
        ("hello lame duck", "Hello lame duck!"),
        ("check liveness", "SERVING"),
        ("check startup", "SERVING"),
    ] {
        let answer = session.ask(command);
        assert_eq!(
            answer,
            expected,
            "{command:?}, on a connection opened in the lame-duck delay; the service's log:\n{}",
            service.logs()
        );
    }
    // All of it within the delay: the service has not begun to stop meanwhile.
    assert!(
        !service.logs().contains("to=stopping"),
        "the lame-duck calls were not all made within the delay:\n{}",
        service.logs()
    );
    let (status, rest) = session.finish(PATIENCE);
    assert_eq!((status, rest.as_slice()), (0, [].as_slice()));

    assert_clean_exit(&mut service);
    let report = service.report();
    let states: Vec<&str> = report["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["starting", "ready", "draining", "stopping", "stopped"],
        "{report}"
    );
}

#[test]
fn python_health_watch_sees_serving_then_not_serving_then_its_end() {
    let dir = TempDir::new("grpc-interop-watch");
    let client = Client::new(dir.path());
    let mut service = start_greeter(&dir, &[("LAMEDUCK_SHUTDOWN_DELAY", SHUTDOWN_DELAY)]);

    let mut watch = client.spawn(&["watch", &service.traffic.to_string(), ""], "watch");
    assert_eq!(watch.next_line(PATIENCE), "SERVING");

    service.skip_logged();
    let signalled = Instant::now();
    service.signal(Signal::SIGTERM);
    assert_eq!(watch.next_line(PATIENCE), "NOT_SERVING");
    service.wait_for_log(DRAINING, PATIENCE);
    // The stream ends, with status OK, once the lifecycle reaches Stopping (after the
    // delay, which began after the signal was sent), without repeating a status.
    assert_eq!(watch.next_line(PATIENCE), "END OK");
    let delay = Duration::from_secs(SHUTDOWN_DELAY.trim_end_matches('s').parse().unwrap());
    assert!(
        signalled.elapsed() >= delay,
        "the stream ended {:?} after SIGTERM, before the {delay:?} delay was over",
        signalled.elapsed()
    );
    service.wait_for_log("to=stopping", PATIENCE);
    let (status, rest) = watch.finish(PATIENCE);
    assert_eq!((status, rest.as_slice()), (0, [].as_slice()));

    assert_clean_exit(&mut service);
}

/// Eight grpcio clients, each with its own channel, call SayHello in a loop across the
/// SIGTERM; once a client has seen NOT_SERVING (asked between calls, as a health-checking
/// balancer) it goes on for a propagation window, shorter than the delay, then stops.
/// Not one call may fail: grpcio, like grpc-go and grpc-java, retries a call that a
/// GOAWAY kept from being sent (gRPC's transparent retry), so every failure would be the
/// server's.
#[test]
fn python_grpc_clients_calling_continuously_across_the_stop_see_no_failed_rpc() {
    let dir = TempDir::new("grpc-interop-continuous");
    let client = Client::new(dir.path());
    let mut service = start_greeter(&dir, &[("LAMEDUCK_SHUTDOWN_DELAY", "4s")]);

    let mut load = client.spawn(&["load", &service.traffic.to_string(), "8", "1000"], "load");
    assert_eq!(load.next_line(PATIENCE), "CALLING");

    service.skip_logged();
    service.signal(Signal::SIGTERM);
    load.tell("SIGTERM");
    let done = load.next_line(PATIENCE);
    eprintln!("python load: {done} (ok before SIGTERM, ok after, failed)");
    // The clients stopped within the delay: what they saw was the lame duck, not the
    // closed listener.
    let clients_stopped_in_the_delay = !service.logs().contains("to=stopping");
    let (status, failures) = load.finish(PATIENCE);
    let counts: Vec<u64> = done
        .strip_prefix("DONE ")
        .unwrap_or_else(|| panic!("expected DONE, got {done:?}"))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let [_before, after, failed] = counts[..] else {
        panic!("{done:?}")
    };
    assert_eq!((status, failed), (0, 0), "{done}\n{}", failures.join("\n"));
    assert!(after > 100, "only {after} calls after SIGTERM");
    assert!(clients_stopped_in_the_delay, "{}", service.logs());
    assert_clean_exit(&mut service);
}
