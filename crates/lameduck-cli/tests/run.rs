//! `lameduck run`: the supervisor of a child command, tested black-box with real processes
//! (`sh` scripts with `trap`, tiny HTTP servers), the admin endpoints on 127.0.0.1 and ports
//! chosen by the OS.
//!
//! Synchronisation is by events (a file the child writes once its traps are set, a line on
//! a pipe, an HTTP answer); the time limits are safety nets only. The only timing
//! assertions are generous upper bounds and lower bounds that a correct supervisor cannot
//! miss (a delay cannot end early).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, dead_port, eventually, respond, temp_dir};

/// A generous bound for anything that should be quick, so a loaded machine does not flake.
const PATIENCE: Duration = Duration::from_secs(20);

/// The one line the supervisor prints on stderr right after it started.
const ADMIN_LINE: &str = "lameduck run: admin endpoints on http://";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `GET path` on 127.0.0.1:port with a fresh connection; the status code, or `None` when
/// the connection or the answer failed.
fn http_get(port: u16, path: &str, read_timeout: Duration) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    status_line.split(' ').nth(1)?.trim().parse().ok()
}

/// `http_get` with a short read timeout, for probes.
fn get(port: u16, path: &str) -> Option<u16> {
    http_get(port, path, Duration::from_secs(10))
}

/// Sends `signal` (a name such as `TERM`) to `pid` with kill(1).
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Whether `pid` no longer runs (gone, or a zombie nobody reaped yet).
fn is_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or("");
            state == "Z" || state == "X"
        }
    }
}

/// Whether `path` exists.
fn exists(path: &Path) -> bool {
    path.exists()
}

/// The environment of every supervisor under test: no inherited `LAMEDUCK_*` or
/// Kubernetes variables, admin endpoints on an OS-chosen port, the report in `dir`.
fn base_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lameduck"));
    supervisor_env(&mut command, dir);
    command
}

/// Sets up `command` as [`base_command`] does (also for `unshare ... lameduck`).
fn supervisor_env(command: &mut Command, dir: &Path) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LAMEDUCK_") {
            command.env_remove(&name);
        }
    }
    // The variables by which platforms announce themselves choose the defaults of the
    // budget (docs/platform.md): the tests plan with the unknown platform's.
    for name in lameduck::Platform::VARIABLES {
        command.env_remove(name);
    }
    command
        .env("LAMEDUCK_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMEDUCK_TERMINATION_LOG", dir.join("report.json"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

/// The arguments `-- sh -c SCRIPT sh DIR`: the script starts in `dir` (`$1`).
fn sh_args(dir: &Path, script: &str) -> Vec<String> {
    vec![
        "--".into(),
        "sh".into(),
        "-c".into(),
        format!("cd \"$1\" || exit 99\n{script}"),
        "sh".into(),
        dir.to_string_lossy().into_owned(),
    ]
}

/// A running `lameduck run`, its output collected by two threads.
struct Supervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    admin_rx: mpsc::Receiver<u16>,
    admin_port: Option<u16>,
    /// Where the child writes its pid (`echo $$ > child.pid`), for cleanup after a failure.
    dir: PathBuf,
}

/// Copies lines of `reader` into `sink`; the first admin line's port goes to `admin`.
fn collect(
    reader: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    admin: Option<mpsc::Sender<u16>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut admin = admin;
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            if let Some(port) = admin_port_of(&text)
                && let Some(sender) = admin.take()
            {
                let _ = sender.send(port);
            }
            sink.lock().unwrap().push_str(&text);
        }
    });
}

/// The port of `lameduck run: admin endpoints on http://127.0.0.1:PORT`.
fn admin_port_of(line: &str) -> Option<u16> {
    let at = line.find(ADMIN_LINE)?;
    let rest = line[at + ADMIN_LINE.len()..].trim();
    let authority = rest.split('/').next()?;
    let port = authority.rsplit_once(':')?.1;
    port.parse().ok()
}

impl Supervisor {
    /// Spawns `command` (from [`base_command`]) for a test in `dir`.
    fn spawn_in(command: &mut Command, dir: Option<&Path>) -> Self {
        let mut child = command.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, admin_rx) = mpsc::channel();
        collect(child.stdout.take().unwrap(), Arc::clone(&stdout), None);
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr), Some(tx));
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            stdout,
            stderr,
            admin_rx,
            admin_port: None,
            dir: dir.map(Path::to_path_buf).unwrap_or_default(),
        }
    }

    /// `lameduck run ARGS -- sh -c SCRIPT` in `dir` with `env`.
    fn start(dir: &Path, env: &[(&str, &str)], args: &[&str], script: &str) -> Self {
        let mut command = base_command(dir);
        command.arg("run").args(args).args(sh_args(dir, script));
        for (name, value) in env {
            command.env(name, value);
        }
        Self::spawn_in(&mut command, Some(dir))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The admin port, from the supervisor's stderr line.
    fn admin_port(&mut self) -> u16 {
        if let Some(port) = self.admin_port {
            return port;
        }
        match self.admin_rx.recv_timeout(PATIENCE) {
            Ok(port) => {
                self.admin_port = Some(port);
                port
            }
            Err(err) => panic!(
                "no `{ADMIN_LINE}...` line on stderr ({err}); stderr so far:\n{}",
                self.stderr()
            ),
        }
    }

    /// Whether the supervisor still runs.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the supervisor to exit; fails the test (after killing it) past `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "lameduck run still running after {limit:?}; killed. stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the child wrote `name` in the test directory (its traps are set).
    fn wait_for_file(&mut self, name: &str) {
        let path = self.dir.join(name);
        let mut exited = None;
        let seen = eventually(PATIENCE, || {
            if exists(&path) {
                return true;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                exited = Some(status);
                return true;
            }
            false
        });
        if let Some(status) = exited
            && !exists(&path)
        {
            panic!(
                "lameduck run exited ({status}) before the child wrote {name}; stderr:\n{}",
                self.stderr()
            );
        }
        assert!(
            seen,
            "the child never wrote {name}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits until `/readyz` answers `status`.
    fn wait_for_readyz(&mut self, status: u16) {
        let port = self.admin_port();
        let mut last = None;
        let seen = eventually(PATIENCE, || {
            last = get(port, "/readyz");
            last == Some(status)
        });
        assert!(
            seen,
            "/readyz never answered {status} (last: {last:?}); stderr:\n{}",
            self.stderr()
        );
    }

    /// The report the supervisor wrote to `LAMEDUCK_TERMINATION_LOG`.
    fn report(&self) -> Json {
        let path = self.dir.join("report.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "no report at {} ({err}); stderr:\n{}",
                path.display(),
                self.stderr()
            )
        });
        Json::parse(text.trim())
            .unwrap_or_else(|err| panic!("the report is not one JSON object ({err}): {text}"))
    }

    /// The admin port, once the child has set its traps: a signal sent earlier could find
    /// the child without them.
    fn until_started(&mut self) -> u16 {
        let port = self.admin_port();
        self.wait_for_file("started");
        port
    }

    /// [`Self::until_started`], then until `/readyz` answers 200, so that a shutdown
    /// has a readiness to drop.
    fn until_ready(&mut self) -> u16 {
        let port = self.until_started();
        self.wait_for_readyz(200);
        port
    }

    /// Waits up to `limit` for the exit and asserts its `code`.
    fn exits_with(&mut self, limit: Duration, code: i32) {
        let status = self.wait(limit);
        assert_exit(self, status, code);
    }

    /// Sends `signal` and expects the exit `code` within [`PATIENCE`].
    fn stop(&mut self, signal: &str, code: i32) {
        send_signal(self.pid(), signal);
        self.exits_with(PATIENCE, code);
    }

    /// Asserts the report's `reason` and, with [`assert_child`], its `child`; returns it.
    fn assert_report(
        &self,
        reason: &str,
        exit_code: Option<i64>,
        signal: Option<&str>,
        killed: bool,
    ) -> Json {
        let report = self.report();
        assert_eq!(report.at("reason"), &Json::str(reason), "{report:?}");
        assert_child(&report, exit_code, signal, killed);
        report
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // After a failure, take the child's process group along so that no loop outlives
        // the test.
        if thread::panicking()
            && let Ok(pid) = fs::read_to_string(self.dir.join("child.pid"))
        {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", pid.trim())])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("kill")
                .args(["-KILL", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Asserts the exit status, showing stderr when it is wrong.
fn assert_exit(supervisor: &Supervisor, status: ExitStatus, code: i32) {
    assert_eq!(
        status.code(),
        Some(code),
        "lameduck run exited with {status} (signal {:?}), expected {code}; stderr:\n{}",
        status.signal(),
        supervisor.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// A minimal JSON reader (no serde among the dev-dependencies)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut parser = JsonParser {
            chars: text.chars().collect(),
            at: 0,
        };
        let value = parser.value()?;
        parser.skip_ws();
        if parser.at != parser.chars.len() {
            return Err(format!("trailing characters at {}", parser.at));
        }
        Ok(value)
    }

    /// The value at a dotted path (`child.exit_code`); panics when a key is missing.
    fn at(&self, path: &str) -> &Json {
        let mut value = self;
        for key in path.split('.') {
            value = match value {
                Json::Obj(map) => map
                    .get(key)
                    .unwrap_or_else(|| panic!("no `{path}` in the report: {self:?}")),
                _ => panic!("`{path}`: not an object at `{key}` in the report: {self:?}"),
            };
        }
        value
    }

    fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }

    fn num(n: i64) -> Json {
        Json::Num(n as f64)
    }
}

struct JsonParser {
    chars: Vec<char>,
    at: usize,
}

impl JsonParser {
    fn skip_ws(&mut self) {
        while self.at < self.chars.len() && self.chars[self.at].is_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {c:?} at {}", self.at))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        for c in word.chars() {
            if self.peek() != Some(c) {
                return Err(format!("bad literal at {}", self.at));
            }
            self.at += 1;
        }
        Ok(value)
    }

    fn value(&mut self) -> Result<Json, String> {
        self.skip_ws();
        match self.peek() {
            Some('n') => self.literal("null", Json::Null),
            Some('t') => self.literal("true", Json::Bool(true)),
            Some('f') => self.literal("false", Json::Bool(false)),
            Some('"') => self.string().map(Json::Str),
            Some('[') => {
                let mut items = Vec::new();
                self.items(']', "array", |parser| {
                    items.push(parser.value()?);
                    Ok(())
                })?;
                Ok(Json::Arr(items))
            }
            Some('{') => {
                let mut map = BTreeMap::new();
                self.items('}', "object", |parser| {
                    parser.skip_ws();
                    let key = parser.string()?;
                    parser.expect(':')?;
                    let value = parser.value()?;
                    map.insert(key, value);
                    Ok(())
                })?;
                Ok(Json::Obj(map))
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.at;
                while let Some(c) = self.peek() {
                    if c.is_ascii_digit() || "+-.eE".contains(c) {
                        self.at += 1;
                    } else {
                        break;
                    }
                }
                let text: String = self.chars[start..self.at].iter().collect();
                text.parse()
                    .map(Json::Num)
                    .map_err(|_| format!("bad number {text:?}"))
            }
            _ => Err(format!("unexpected character at {}", self.at)),
        }
    }

    /// From an opening bracket to its `close`: the comma-separated items of an array or
    /// object (`what`, for the error), each parsed by `item`.
    fn items(
        &mut self,
        close: char,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.at += 1;
        self.skip_ws();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            self.skip_ws();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(c) if c == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(format!("bad {what} at {}", self.at)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.peek() != Some('"') {
            return Err(format!("expected a string at {}", self.at));
        }
        self.at += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.at += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = self.peek().ok_or("unterminated escape")?;
                    self.at += 1;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'u' => {
                            let hex: String = self
                                .chars
                                .get(self.at..self.at + 4)
                                .ok_or("short \\u")?
                                .iter()
                                .collect();
                            self.at += 4;
                            let code = u32::from_str_radix(&hex, 16).map_err(|_| "bad \\u")?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }
}

/// Checks the `child` object of a report, and that the SDK's report fields are there too
/// (`states` only after a shutdown: the contract leaves open what a `child-exited` report
/// has besides `reason` and `child`).
fn assert_child(report: &Json, exit_code: Option<i64>, signal: Option<&str>, killed: bool) {
    assert!(
        matches!(report.at("clean"), Json::Bool(_)),
        "clean: {report:?}"
    );
    assert!(
        matches!(report.at("child.pid"), Json::Num(n) if *n > 0.0),
        "child.pid: {report:?}"
    );
    let expected_code = exit_code.map_or(Json::Null, Json::num);
    assert_eq!(
        report.at("child.exit_code"),
        &expected_code,
        "child.exit_code: {report:?}"
    );
    let expected_signal = signal.map_or(Json::Null, Json::str);
    assert_eq!(
        report.at("child.signal"),
        &expected_signal,
        "child.signal: {report:?}"
    );
    assert_eq!(
        report.at("child.killed"),
        &Json::Bool(killed),
        "child.killed: {report:?}"
    );
    // A report of a shutdown that reached Stopping is the SDK's, with `states`; when the
    // child ended before Stopping (on its own, or during the lame duck), the lifecycle's
    // timings do not exist yet and `state` says where it was.
    let (states, state) = match report {
        Json::Obj(map) => (map.get("states"), map.get("state")),
        _ => (None, None),
    };
    assert!(
        matches!(states, Some(Json::Arr(_))) || matches!(state, Some(Json::Str(_))),
        "a report has the SDK's `states`, or the `state` the lifecycle was in: {report:?}"
    );
    if report.at("reason") == &Json::str("child-exited") {
        assert!(matches!(state, Some(Json::Str(_))), "{report:?}");
    }
}

/// A child that records its pid, sets `traps`, says `started` and loops (without `exec`,
/// so the traps keep working) until a trap ends it.
fn looping_child(traps: &str) -> String {
    format!("echo $$ > child.pid\n{traps}\n: > started\nwhile :; do sleep 0.1; done")
}

/// No lame-duck delay, for tests about something other than the delay.
const NO_DELAY: &[(&str, &str)] = &[("LAMEDUCK_SHUTDOWN_DELAY", "0s")];

/// A lame duck far longer than [`PATIENCE`]: a shutdown that ends in time took a shortcut.
const LONG_LAME_DUCK: &[(&str, &str)] = &[
    ("LAMEDUCK_SHUTDOWN_DELAY", "30s"),
    ("LAMEDUCK_GRACE_PERIOD", "60s"),
];

/// The pid a script wrote to `path` (`echo $$ > child.pid`).
fn read_pid(path: &Path) -> u32 {
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. Exit status passthrough
// ---------------------------------------------------------------------------------------

#[test]
fn the_childs_exit_code_is_passed_through_at_once() {
    let dir = temp_dir("exit-code");
    let started = Instant::now();
    // A long lame-duck delay: a child that exits on its own must not wait for it.
    let mut supervisor =
        Supervisor::start(&dir, LONG_LAME_DUCK, &[], "echo $$ > child.pid; exit 3");
    supervisor.exits_with(PATIENCE, 3);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a child exiting on its own must end the supervisor at once, took {:?}",
        started.elapsed()
    );
    let report = supervisor.assert_report("child-exited", Some(3), None, false);
    let pid = read_pid(&dir.join("child.pid"));
    assert_eq!(
        report.at("child.pid"),
        &Json::Num(f64::from(pid)),
        "child.pid is the child's"
    );
}

#[test]
fn a_child_killed_by_a_signal_gives_128_plus_n() {
    for (signal, number) in [("USR1", 10), ("KILL", 9)] {
        let dir = temp_dir("exit-signal");
        let mut supervisor = Supervisor::start(
            &dir,
            &[],
            &[],
            &format!("echo $$ > child.pid; kill -{signal} $$; sleep 5"),
        );
        supervisor.exits_with(PATIENCE, 128 + number);
        // Killed by itself, not by the supervisor.
        supervisor.assert_report("child-exited", None, Some(&format!("SIG{signal}")), false);
    }
}

// ---------------------------------------------------------------------------------------
// 2. SIGTERM: not ready at once, the child keeps serving for the delay, then gets SIGTERM
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_drops_readiness_keeps_the_child_for_the_delay_then_stops_it() {
    let dir = temp_dir("sigterm-flow");
    let port = dead_port();
    // python serves GET /; on SIGTERM the shell writes the marker, stops python, exits 0.
    let script = format!(
        "echo $$ > child.pid\n\
         trap 'touch marker; kill $pid 2>/dev/null; wait $pid; exit 0' TERM\n\
         python3 -m http.server {port} --bind 127.0.0.1 &\n\
         pid=$!\n\
         : > started\n\
         wait $pid\n\
         exit 42"
    );
    let ready = format!("http://127.0.0.1:{port}/");
    let mut supervisor = Supervisor::start(
        &dir,
        &[
            ("LAMEDUCK_SHUTDOWN_DELAY", "1s"),
            ("LAMEDUCK_GRACE_PERIOD", "30s"),
        ],
        &["--ready", &ready],
        &script,
    );
    let admin = supervisor.until_ready();
    assert_eq!(get(admin, "/livez"), Some(200));
    assert_eq!(get(port, "/"), Some(200), "the child serves");

    let signalled = Instant::now();
    send_signal(supervisor.pid(), "TERM");
    supervisor.wait_for_readyz(503);
    // Still within the lame-duck delay (unless this machine is very slow): the child runs
    // and serves, and has not been told to stop.
    let child_serves = get(port, "/");
    let livez = get(admin, "/livez");
    let marker_early = exists(&dir.join("marker"));
    if signalled.elapsed() < Duration::from_millis(800) {
        assert_eq!(
            child_serves,
            Some(200),
            "the child must keep serving during the delay"
        );
        assert_eq!(livez, Some(200), "/livez is 200 while the child runs");
        assert!(
            !marker_early,
            "the child got its stop signal before the delay was over"
        );
    } else {
        eprintln!(
            "note: readiness took {:?} to drop; the in-delay checks were skipped",
            signalled.elapsed()
        );
    }

    supervisor.exits_with(PATIENCE, 0);
    assert!(
        signalled.elapsed() >= Duration::from_millis(950),
        "the child was stopped before the 1 s lame-duck delay was over ({:?})",
        signalled.elapsed()
    );
    assert!(exists(&dir.join("marker")), "the child never got SIGTERM");
    supervisor.assert_report("signal:SIGTERM", Some(0), None, false);
}

#[test]
fn sigint_triggers_shutdown_too() {
    let dir = temp_dir("sigint");
    let mut supervisor = Supervisor::start(
        &dir,
        NO_DELAY,
        &[],
        &looping_child("trap 'touch marker; exit 0' TERM"),
    );
    supervisor.until_started();
    supervisor.stop("INT", 0);
    assert!(exists(&dir.join("marker")), "the child never got SIGTERM");
    supervisor.assert_report("signal:SIGINT", Some(0), None, false);
}

// ---------------------------------------------------------------------------------------
// 3. --stop-signal
// ---------------------------------------------------------------------------------------

#[test]
fn stop_signal_sigquit_is_sent_instead_of_sigterm() {
    for spelling in ["SIGQUIT", "QUIT"] {
        let dir = temp_dir("stop-signal");
        let mut supervisor = Supervisor::start(
            &dir,
            &[
                ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
                // A short grace period, so a missing SIGQUIT shows as a kill, not a hang.
                ("LAMEDUCK_GRACE_PERIOD", "10s"),
            ],
            &["--stop-signal", spelling],
            &looping_child("trap 'touch quit-marker; exit 0' QUIT\ntrap '' TERM"),
        );
        supervisor.until_started();
        supervisor.stop("TERM", 0);
        assert!(
            exists(&dir.join("quit-marker")),
            "--stop-signal {spelling}: the child never got SIGQUIT"
        );
        supervisor.assert_report("signal:SIGTERM", Some(0), None, false);
    }
}

// ---------------------------------------------------------------------------------------
// 4. A child that ignores its stop signal is killed, with its process group, by the deadline
// ---------------------------------------------------------------------------------------

#[test]
fn a_child_ignoring_its_stop_signal_is_killed_with_its_process_group_before_the_grace_period_ends()
{
    let dir = temp_dir("ignores-term");
    let mut supervisor = Supervisor::start(
        &dir,
        &[
            ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
            ("LAMEDUCK_GRACE_PERIOD", "3s"),
        ],
        &[],
        // The ignored TERM is inherited by the grandchild: only SIGKILL ends either.
        &looping_child("trap '' TERM\nsleep 1000 &\necho $! > grandchild.pid"),
    );
    supervisor.until_started();
    let grandchild = read_pid(&dir.join("grandchild.pid"));
    assert!(!is_gone(grandchild), "the grandchild should be running");

    let signalled = Instant::now();
    supervisor.stop("TERM", 137);
    let took = signalled.elapsed();
    // Deadline: 3 s - 0.3 s. Generous slack above, and the child gets until the deadline.
    assert!(
        took < Duration::from_secs(3) + Duration::from_secs(5),
        "the child was not killed by the deadline: the supervisor took {took:?}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "the child was killed before the deadline (2.7 s): {took:?}"
    );
    supervisor.assert_report("signal:SIGTERM", None, Some("SIGKILL"), true);
    assert!(
        eventually(Duration::from_secs(5), || is_gone(grandchild)),
        "the grandchild {grandchild} in the child's process group survived the SIGKILL"
    );
}

// ---------------------------------------------------------------------------------------
// 5. A second SIGTERM sends the stop signal at once
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_sigterm_sends_the_stop_signal_at_once() {
    a_second_signal_sends_the_stop_signal_at_once("TERM");
}

#[test]
fn a_second_sigint_sends_the_stop_signal_at_once() {
    a_second_signal_sends_the_stop_signal_at_once("INT");
}

/// `signal` twice, 30 s of lame duck: the second one cuts it short.
fn a_second_signal_sends_the_stop_signal_at_once(signal: &str) {
    let dir = temp_dir("second-signal");
    let mut supervisor = Supervisor::start(
        &dir,
        LONG_LAME_DUCK,
        &[],
        &looping_child("trap 'touch marker; exit 0' TERM"),
    );
    supervisor.until_ready();

    let signalled = Instant::now();
    send_signal(supervisor.pid(), signal);
    supervisor.wait_for_readyz(503);
    assert!(
        !exists(&dir.join("marker")),
        "the first SIG{signal} must not reach the child during the 30 s delay"
    );
    assert!(
        supervisor.running(),
        "the supervisor must wait out the delay"
    );
    supervisor.stop(signal, 0);
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the second SIG{signal} did not cut the 30 s delay short: {took:?}"
    );
    assert!(exists(&dir.join("marker")), "the child never got SIGTERM");
    supervisor.assert_report(&format!("signal:SIG{signal}"), Some(0), None, false);
}

#[test]
fn a_child_exiting_during_the_lame_duck_keeps_its_status() {
    let dir = temp_dir("exit-in-delay");
    // The child exits 7 on its own once the test creates `stop`, during the 30 s delay.
    let mut supervisor = Supervisor::start(
        &dir,
        LONG_LAME_DUCK,
        &[],
        "echo $$ > child.pid\n: > started\nwhile [ ! -e stop ]; do sleep 0.05; done\nexit 7",
    );
    supervisor.until_ready();
    send_signal(supervisor.pid(), "TERM");
    supervisor.wait_for_readyz(503);
    fs::write(dir.join("stop"), "").unwrap();
    // The bound exceeds the delay: only the status is asserted, not when it comes.
    supervisor.exits_with(Duration::from_secs(45), 7);
    supervisor.assert_report("signal:SIGTERM", Some(7), None, false);
}

// ---------------------------------------------------------------------------------------
// 6. /shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn the_shutdown_endpoint_triggers_shutdown_like_sigterm() {
    let dir = temp_dir("shutdown-endpoint");
    let mut supervisor = Supervisor::start(
        &dir,
        &[
            ("LAMEDUCK_SHUTDOWN_DELAY", "1s"),
            ("LAMEDUCK_GRACE_PERIOD", "30s"),
        ],
        &[],
        &looping_child("trap 'touch marker; exit 0' TERM"),
    );
    let admin = supervisor.until_ready();

    let requested = Instant::now();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let status = http_get(admin, "/shutdown", PATIENCE);
        let _ = tx.send((status, requested.elapsed()));
    });
    supervisor.wait_for_readyz(503);
    let (status, answered_after) = rx.recv_timeout(PATIENCE).expect("/shutdown never answered");
    assert_eq!(status, Some(200), "/shutdown answer");
    assert!(
        answered_after >= Duration::from_millis(950),
        "/shutdown answered before the 1 s lame-duck delay was over ({answered_after:?})"
    );
    supervisor.exits_with(PATIENCE, 0);
    assert!(exists(&dir.join("marker")), "the child never got SIGTERM");
    supervisor.assert_report("prestop", Some(0), None, false);
}

// ---------------------------------------------------------------------------------------
// 7. Signal forwarding
// ---------------------------------------------------------------------------------------

#[test]
fn hup_usr1_usr2_quit_and_winch_are_forwarded_to_the_child() {
    let dir = temp_dir("forwarding");
    let traps = "trap 'echo USR1 >> got' USR1\n\
                 trap 'echo USR2 >> got' USR2\n\
                 trap 'echo HUP >> got' HUP\n\
                 trap 'echo QUIT >> got' QUIT\n\
                 trap 'echo WINCH >> got' WINCH\n\
                 trap 'exit 0' TERM";
    let mut supervisor = Supervisor::start(&dir, NO_DELAY, &[], &looping_child(traps));
    supervisor.until_ready();

    let got = dir.join("got");
    for signal in ["USR1", "HUP", "USR2", "QUIT", "WINCH"] {
        send_signal(supervisor.pid(), signal);
        let seen = eventually(PATIENCE, || {
            fs::read_to_string(&got)
                .unwrap_or_default()
                .lines()
                .any(|line| line == signal)
        });
        assert!(
            seen,
            "SIG{signal} did not reach the child (got: {:?}); supervisor running: {}; stderr:\n{}",
            fs::read_to_string(&got).unwrap_or_default(),
            supervisor.running(),
            supervisor.stderr()
        );
        assert!(
            supervisor.running(),
            "SIG{signal} ended the supervisor; stderr:\n{}",
            supervisor.stderr()
        );
    }
    // None of them started a shutdown.
    assert_eq!(get(supervisor.admin_port(), "/readyz"), Some(200));

    supervisor.stop("TERM", 0);
}

// ---------------------------------------------------------------------------------------
// 8. stdin, stdout, stderr and the environment pass through
// ---------------------------------------------------------------------------------------

#[test]
fn output_passes_through_unbuffered_while_the_child_runs() {
    let dir = temp_dir("output");
    let mut supervisor = Supervisor::start(
        &dir,
        NO_DELAY,
        &[],
        "echo $$ > child.pid\necho first-line\necho err-line >&2\nexec sleep 30",
    );
    let seen = eventually(PATIENCE, || supervisor.stdout().contains("first-line"));
    assert!(
        seen,
        "the child's first line never reached stdout (stdout: {:?}); stderr:\n{}",
        supervisor.stdout(),
        supervisor.stderr()
    );
    assert!(
        supervisor.running(),
        "the line must show while the child still runs"
    );
    assert!(
        eventually(PATIENCE, || supervisor.stderr().contains("err-line")),
        "the child's stderr line never reached stderr: {}",
        supervisor.stderr()
    );
    supervisor.admin_port();
    // `sleep` dies of the SIGTERM: the child's status, 128 + 15.
    supervisor.stop("TERM", 143);
    supervisor.assert_report("signal:SIGTERM", None, Some("SIGTERM"), false);
}

#[test]
fn stdin_and_the_environment_reach_the_child() {
    let dir = temp_dir("stdin-env");
    let mut command = base_command(&dir);
    command
        .arg("run")
        .args(sh_args(
            &dir,
            "read line; echo \"got:$line env:$RUN_TEST_VAR\"",
        ))
        .env("RUN_TEST_VAR", "hello-env")
        .stdin(Stdio::piped());
    let mut supervisor = Supervisor::spawn_in(&mut command, Some(&dir));
    {
        let mut stdin = supervisor.stdin.take().unwrap();
        stdin.write_all(b"hello-stdin\n").unwrap();
    }
    supervisor.exits_with(PATIENCE, 0);
    assert!(
        eventually(Duration::from_secs(5), || supervisor
            .stdout()
            .contains("got:hello-stdin env:hello-env")),
        "stdout: {:?}",
        supervisor.stdout()
    );
}

// ---------------------------------------------------------------------------------------
// --ready
// ---------------------------------------------------------------------------------------

/// A supervisor gated by `--ready url`, its child started; returns it and the admin port.
fn start_ready_gated(dir: &Path, url: &str) -> (Supervisor, u16) {
    let mut supervisor = Supervisor::start(
        dir,
        NO_DELAY,
        &["--ready", url],
        &looping_child("trap 'exit 0' TERM"),
    );
    let admin = supervisor.until_started();
    (supervisor, admin)
}

/// How a held request ended (see [`hold_unanswered`]).
enum Held {
    /// The test let go: the request may be answered.
    Released,
    /// The client closed the connection after waiting this long.
    Abandoned(Duration),
    /// Nobody let go within a minute; the request is dropped, not answered.
    Forgotten,
}

/// Keeps a request on `stream` unanswered while `hang` is set, watching whether the client
/// gives up on it (the read sees the close).
fn hold_unanswered(stream: &mut TcpStream, hang: &AtomicBool) -> Held {
    let received = Instant::now();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 64];
    while hang.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return Held::Abandoned(received.elapsed()),
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Held::Abandoned(received.elapsed()),
        }
        if received.elapsed() > Duration::from_secs(60) {
            return Held::Forgotten;
        }
    }
    Held::Released
}

#[test]
fn ready_http_url_gates_readyz_with_kubelet_semantics() {
    let dir = temp_dir("ready-http");
    // The readiness target answers what the test stored in `answer`.
    let answer = Arc::new(AtomicU16::new(500));
    let target = {
        let answer = Arc::clone(&answer);
        Server::start(move |_, stream| {
            respond(stream, answer.load(Ordering::SeqCst), &[], b"");
        })
    };
    let requests = || target.seen().len();
    let (mut supervisor, admin) = start_ready_gated(&dir, &target.url("/healthy"));
    // Once the supervisor has asked (and been told 500), it is not ready.
    assert!(
        eventually(PATIENCE, || requests() >= 1),
        "the supervisor never requested the --ready URL; stderr:\n{}",
        supervisor.stderr()
    );
    assert_eq!(
        get(admin, "/livez"),
        Some(200),
        "/livez while the child runs"
    );
    assert_eq!(
        get(admin, "/readyz"),
        Some(503),
        "/readyz while the target answers 500"
    );
    let before = requests();
    assert!(
        eventually(PATIENCE, || requests() > before),
        "the supervisor did not ask the --ready URL again after a 500"
    );
    assert_eq!(
        get(admin, "/readyz"),
        Some(503),
        "/readyz while the target answers 500"
    );

    // 399 is the top of the kubelet's success range.
    answer.store(399, Ordering::SeqCst);
    supervisor.wait_for_readyz(200);
    assert_eq!(
        get(admin, "/startupz"),
        Some(200),
        "/startupz once the child is ready"
    );

    supervisor.stop("TERM", 0);
}

#[test]
fn ready_http_url_that_does_not_answer_within_1s_is_not_ready() {
    let dir = temp_dir("ready-hangs");
    // The target holds every request unanswered while `hang` is set, and records how long
    // the supervisor waited before it closed such a connection.
    let hang = Arc::new(AtomicBool::new(true));
    let abandoned: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let target = {
        let hang = Arc::clone(&hang);
        let abandoned = Arc::clone(&abandoned);
        Server::start(move |_, stream| match hold_unanswered(stream, &hang) {
            Held::Released => respond(stream, 200, &[], b""),
            Held::Abandoned(after) => abandoned.lock().unwrap().push(after),
            Held::Forgotten => {}
        })
    };
    let (mut supervisor, admin) = start_ready_gated(&dir, &target.url("/"));
    assert!(
        eventually(PATIENCE, || !abandoned.lock().unwrap().is_empty()),
        "the supervisor never gave up on an unanswered readiness request (1 s timeout); \
         stderr:\n{}",
        supervisor.stderr()
    );
    let waited = abandoned.lock().unwrap()[0];
    assert!(
        waited < Duration::from_secs(5),
        "the supervisor waited {waited:?} for an answer; the timeout is 1 s"
    );
    assert_eq!(
        get(admin, "/readyz"),
        Some(503),
        "/readyz while the --ready URL does not answer"
    );

    hang.store(false, Ordering::SeqCst);
    supervisor.wait_for_readyz(200);

    supervisor.stop("TERM", 0);
}

#[test]
fn ready_tcp_url_is_ready_once_a_connection_succeeds() {
    let dir = temp_dir("ready-tcp");
    let port = dead_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let (mut supervisor, admin) = start_ready_gated(&dir, &url);
    assert_eq!(get(admin, "/livez"), Some(200));
    assert_eq!(
        get(admin, "/readyz"),
        Some(503),
        "/readyz while nothing listens on {url}"
    );
    // Now something listens (the backlog accepts without an accept() call).
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    supervisor.wait_for_readyz(200);

    supervisor.stop("TERM", 0);
}

// ---------------------------------------------------------------------------------------
// 9. Orphans are reaped (subreaper; PID 1 in a PID namespace)
// ---------------------------------------------------------------------------------------

/// Makes orphans that exit (reparented to the supervisor, the child's parent `$PPID`),
/// waits until they have exited, then until no zombie of the supervisor is left (at most
/// ~10 s), prints `zombies=N` and exits with `$exit_zero` when there are none, else N.
fn orphan_script(exit_when_none: u8) -> String {
    format!(
        r#"echo $$ > child.pid
i=0
while [ $i -lt 8 ]; do sh -c 'sleep 0.2 & echo $! >> orphans'; i=$((i+1)); done
state() {{ s=$(cat /proc/$1/stat 2>/dev/null) || return 1; set -- ${{s##*) }}; echo "$1 $2"; }}
alive() {{
  for p in $(cat orphans); do
    st=$(state $p) || continue
    case "$st" in Z*) ;; *) return 0 ;; esac
  done
  return 1
}}
count() {{
  n=0
  for f in /proc/[0-9]*; do
    st=$(state ${{f#/proc/}}) || continue
    [ "$st" = "Z $PPID" ] && n=$((n+1))
  done
  echo $n
}}
t=0; while alive && [ $t -lt 200 ]; do sleep 0.05; t=$((t+1)); done
t=0; while [ "$(count)" -ne 0 ] && [ $t -lt 200 ]; do sleep 0.05; t=$((t+1)); done
n=$(count)
echo "ppid=$PPID zombies=$n"
[ "$n" -eq 0 ] && exit {exit_when_none}
exit $((100 + n))"#
    )
}

/// Many orphans exit right around the child's own exit: the status must not be lost.
fn racing_orphans_script() -> String {
    r#"echo $$ > child.pid
i=0
while [ $i -lt 20 ]; do sh -c 'sleep 0.05 &'; i=$((i+1)); done
sleep 0.05
exit 5"#
        .to_owned()
}

/// The orphan scripts and the exit code each must end the supervisor with.
fn orphan_cases() -> [(String, i32); 3] {
    [
        (orphan_script(0), 0),
        (orphan_script(5), 5),
        (racing_orphans_script(), 5),
    ]
}

/// The orphan scripts wait up to ~20 s for their orphans and zombies, hence the bound.
fn assert_orphan_case_exits(supervisor: &mut Supervisor, code: i32) {
    supervisor.exits_with(Duration::from_secs(40), code);
}

/// The child's own exit `code`, whatever its orphans did.
fn assert_child_exited(supervisor: &Supervisor, code: i32) {
    supervisor.assert_report("child-exited", Some(i64::from(code)), None, false);
}

#[test]
fn orphans_are_reaped_by_the_supervisor_as_a_subreaper() {
    for (script, code) in orphan_cases() {
        let dir = temp_dir("subreaper");
        let mut supervisor = Supervisor::start(&dir, &[], &[], &script);
        assert_orphan_case_exits(&mut supervisor, code);
        assert_child_exited(&supervisor, code);
        if code == 0 {
            assert!(
                supervisor.stdout().contains("zombies=0"),
                "stdout: {}",
                supervisor.stdout()
            );
        }
    }
}

/// Whether `unshare --pid --fork --mount-proc` works here (root and the tool present).
fn pid_namespaces_available() -> bool {
    let root = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(1).map(|uid| uid == "0"))
        .unwrap_or(false);
    if !root {
        return false;
    }
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn orphans_are_reaped_by_the_supervisor_as_pid_1() {
    if !pid_namespaces_available() {
        eprintln!(
            "SKIPPED orphans_are_reaped_by_the_supervisor_as_pid_1: needs root and a working \
             `unshare --pid --fork --mount-proc`"
        );
        return;
    }
    for (script, code) in orphan_cases() {
        let dir = temp_dir("pid1");
        let mut command = Command::new("unshare");
        supervisor_env(&mut command, &dir);
        command
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_lameduck"))
            .arg("run")
            .args(sh_args(&dir, &script));
        let mut supervisor = Supervisor::spawn_in(&mut command, Some(&dir));
        assert_orphan_case_exits(&mut supervisor, code);
        if code == 0 {
            let stdout = supervisor.stdout();
            assert!(
                stdout.contains("ppid=1 zombies=0"),
                "lameduck is PID 1 and left no zombie; stdout: {stdout}"
            );
        }
        assert_child_exited(&supervisor, code);
    }
}

// ---------------------------------------------------------------------------------------
// 10. Usage errors
// ---------------------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2_without_running_anything() {
    let dir = temp_dir("usage");
    let marker = dir.join("marker");
    // `flags`, then a command that would create the marker if it ran.
    let touching_marker = |flags: &[&str]| -> Vec<String> {
        flags
            .iter()
            .chain(&["--", "sh", "-c", "touch \"$1\"", "sh"])
            .map(|arg| (*arg).to_owned())
            .chain([marker.to_string_lossy().into_owned()])
            .collect()
    };
    let cases: Vec<Vec<String>> = vec![
        vec![],
        vec!["--".into()],
        touching_marker(&["--stop-signal", "NOPE"]),
        touching_marker(&["--ready", "ftp://x"]),
    ];
    for args in cases {
        let mut command = base_command(&dir);
        command.arg("run").args(&args);
        let mut supervisor = Supervisor::spawn_in(&mut command, Some(&dir));
        let status = supervisor.wait(PATIENCE);
        assert_eq!(
            status.code(),
            Some(2),
            "lameduck run {args:?}: {status}; stderr:\n{}",
            supervisor.stderr()
        );
        assert!(
            eventually(Duration::from_secs(5), || !supervisor.stderr().is_empty()),
            "lameduck run {args:?}: a usage error says what is wrong"
        );
        assert!(!exists(&marker), "lameduck run {args:?} ran the command");
    }
}
