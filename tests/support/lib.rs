//! What the black-box tests share: building the example binaries, starting them as a
//! platform would (environment, ports, signals), and a plain HTTP/1.1 client for single
//! requests whose every byte is visible.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where cargo puts this profile's binaries (`target/debug` for `cargo test`).
fn profile_dir() -> PathBuf {
    // The test binary is `<target>/<profile>/deps/<name>-<hash>`.
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("profile directory")
        .to_path_buf()
}

/// The path of an example binary of the workspace, built once per test run.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "orders",
            "-p",
            "hello",
            "-p",
            "lameduck-cli",
            "-p",
            "axum-serve",
            "-p",
            "tls",
            "-p",
            "greeter",
            "-p",
            "baseline-axum",
        ]);
        if profile_dir().file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building the example binaries failed");
    });
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A port the OS chose as free (bound to port 0, then released for the service to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "lameduck-platform-{label}-{}-{unique}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A service process started the way a kubelet starts a container.
pub struct Service {
    child: Child,
    pub traffic: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub termination_log: PathBuf,
    /// Each line the service writes (stdout or stderr), as it comes, once it is in `log`.
    lines: mpsc::Receiver<String>,
    /// Fires once the service's stdout and stderr are closed and `log` holds all of both.
    log_done: mpsc::Receiver<()>,
    /// Fires once the process has exited (it is left unreaped until `wait_exit`).
    exited: mpsc::Receiver<()>,
    status: Option<i32>,
}

/// How long [`Service::wait_ready`] waits at most: a safety net, not a pace.
const READY_PATIENCE: Duration = Duration::from_secs(60);

impl Service {
    /// Start `binary` with fresh ports, `env` on top, stdout and stderr to
    /// `dir/<name>.log`.
    pub fn start(binary: &Path, dir: &Path, name: &str, env: &[(&str, String)]) -> Self {
        Self::start_without(binary, dir, name, env, &[])
    }

    /// [`start`](Self::start) with the variables `unset` removed from the environment
    /// (this process's and those `start` sets), e.g. `NO_COLOR`.
    pub fn start_without(
        binary: &Path,
        dir: &Path,
        name: &str,
        env: &[(&str, String)],
        unset: &[&str],
    ) -> Self {
        let traffic = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join(format!("{name}.log"));
        let termination_log = dir.join(format!("{name}.termination-log"));
        let mut command = Command::new(binary);
        // The variables by which platforms announce themselves choose the SDK's default
        // budget (docs/platform.md): the tests plan with the unknown platform's, whatever
        // the machine running them (a CI runner under systemd sets INVOCATION_ID), unless
        // a test sets one in `env`.
        for key in lameduck::Platform::VARIABLES {
            command.env_remove(key);
        }
        command
            .env("PORT", traffic.port().to_string())
            .env("LAMEDUCK_ADMIN_ADDR", admin.to_string())
            .env("LAMEDUCK_TERMINATION_LOG", &termination_log)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        for key in unset {
            command.env_remove(key);
        }
        let mut child = command.spawn().expect("starting the service");
        let (lines, log_done) = tee_lines(
            child.stdout.take().expect("piped stdout"),
            child.stderr.take().expect("piped stderr"),
            std::fs::File::create(&log).unwrap(),
        );
        let exited = notify_exit(Pid::from_raw(i32::try_from(child.id()).unwrap()));
        Self {
            child,
            traffic,
            admin,
            log,
            termination_log,
            lines,
            log_done,
            exited,
            status: None,
        }
    }

    /// Wait until `/readyz` answers 200, as a readiness probe would see it: asked once at
    /// start and again after each line the service logs (it logs its state changes), so
    /// the wait ends on the service's own progress.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_PATIENCE;
        loop {
            if get(self.admin, "/readyz").is_ok_and(|r| r.status == 200) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Its output closed: it is exiting (or has exited) without being ready.
                    let status = self.wait_exit(Duration::from_secs(30));
                    panic!(
                        "service exited with {status} before ready:\n{}",
                        self.logs()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("service never became ready:\n{}", self.logs())
                }
            }
        }
    }

    /// Wait for the next logged line that contains `wanted` (lines before it are
    /// skipped), and return it.
    pub fn wait_for_log(&self, wanted: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return line,
                Ok(_) => {}
                Err(error) => panic!(
                    "the service never logged {wanted:?} ({error:?}):\n{}",
                    self.logs()
                ),
            }
        }
    }

    /// Forget the lines logged so far, so that [`wait_for_log`](Self::wait_for_log)
    /// sees only what comes next.
    pub fn skip_logged(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// Send `signal`; a process that has already exited is not an error (the kubelet's
    /// SIGTERM after preStop may find it gone).
    pub fn signal(&self, signal: Signal) {
        if self.status.is_some() {
            return;
        }
        // Not yet reaped, so the pid is still this process's (a zombie at worst).
        match kill(self.pid(), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => panic!("kill: {error}"),
        }
    }

    /// The exit status, waiting at most `within` for the process to exit (and then for
    /// its last log lines).
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        if let Some(status) = self.status {
            return status;
        }
        if self.exited.recv_timeout(within).is_err() {
            let _ = self.child.kill();
            panic!("service did not exit within {within:?}:\n{}", self.logs());
        }
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        let status = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        self.status = Some(status);
        // The pipe closes with the process; what it still held is in the log once this
        // fires.
        let _ = self.log_done.recv_timeout(Duration::from_secs(10));
        status
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The report the service wrote to its termination log.
    pub fn report(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.termination_log)
            .unwrap_or_else(|e| panic!("no termination log ({e}):\n{}", self.logs()));
        assert!(text.len() <= 4096, "termination message over 4096 bytes");
        serde_json::from_str(&text).unwrap()
    }
}

/// Copy the lines of `stdout` and `stderr` into `file` as they come, and hand each on once
/// it is written; the second receiver fires once both have ended.
fn tee_lines(
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    file: std::fs::File,
) -> (mpsc::Receiver<String>, mpsc::Receiver<()>) {
    let file = std::sync::Arc::new(std::sync::Mutex::new(file));
    let (line_tx, lines) = mpsc::channel();
    let (ended_tx, ended) = mpsc::channel::<()>();
    let copy = |from: Box<dyn Read + Send>| {
        let file = std::sync::Arc::clone(&file);
        let line_tx = line_tx.clone();
        let ended_tx = ended_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                {
                    let mut file = file
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let _ = writeln!(file, "{line}");
                }
                let _ = line_tx.send(line);
            }
            drop(ended_tx);
        });
    };
    copy(Box::new(stdout));
    copy(Box::new(stderr));
    drop(ended_tx);
    // `ended` disconnects once both copies have dropped their senders.
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = ended.recv();
        let _ = done_tx.send(());
    });
    (lines, done)
}

/// A receiver that fires when the child `pid` has exited. The child is not reaped
/// (`WNOWAIT`): its pid cannot be reused until `Child::wait`, so signals sent before that
/// cannot reach another process.
fn notify_exit(pid: Pid) -> mpsc::Receiver<()> {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Until it has exited, or was already reaped by `Drop` (ECHILD): either way, gone.
        while let Err(nix::errno::Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        let _ = tx.send(());
    });
    rx
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 response, read to its end.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The value of the one Prometheus sample `series` (name and labels exactly as rendered)
/// in a scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// `GET path` on a new connection, as a probe does.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(addr, "GET", path, &[], None)
}

/// One request on a new connection; the response is read until the server closes.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = json {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    if let Some(body) = json {
        head.push_str(body);
    }
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Parse one HTTP/1.1 response (as read until the server closed).
pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no complete response head"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("chunked body cut short"))?
    } else {
        body.to_owned()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The body of a chunked response, or `None` when the final chunk never came.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// Keep-alive load on `/` from `connections` clients until `stop` fires.
pub fn start_load(
    service: &Service,
    connections: usize,
    rate: u64,
) -> (
    std::thread::JoinHandle<lameduck_loadgen::LoadReport>,
    tokio::sync::oneshot::Sender<()>,
) {
    let config =
        lameduck_loadgen::LoadConfig::new(&format!("http://{}/", service.traffic)).unwrap();
    start_load_with(config, connections, rate)
}

/// [`start_load`] with a configuration of the caller's (another target, headers).
pub fn start_load_with(
    mut config: lameduck_loadgen::LoadConfig,
    connections: usize,
    rate: u64,
) -> (
    std::thread::JoinHandle<lameduck_loadgen::LoadReport>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    config.connections = connections;
    config.rate = rate;
    config.duration = None;
    let load = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(lameduck_loadgen::run(config, async {
                let _ = stop_rx.await;
            }))
    });
    (load, stop_tx)
}

/// Environment pairs for [`Service::start`].
pub fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// The repository README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RootReadme;
