//! Starting, probing and stopping the programs under test (the services, nginx), the
//! helpers every part shares (free ports, temp dirs, a tiny HTTP probe, RSS), and the
//! guards that make sure nothing is left running.
//!
//! Every child is spawned with `kill_on_drop(true)` and owned by a task that reaps it; the
//! [`Service`] guard also sends SIGKILL from its `Drop` if the child is still running, so
//! an error anywhere (or a panic) leaves no process behind.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(20);

/// A port that is free now and stays out of the way of client connections: chosen below
/// the kernel's ephemeral range (`ip_local_port_range`), whose ports every outgoing
/// connection (the load generator's, nginx's to its upstreams) takes its local port from.
/// A server restarted on its port in a rolling restart would otherwise find it taken, now
/// and then, by one of those connections (`EADDRINUSE`). Falls back to a port the OS picks.
pub(crate) fn free_port() -> Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1_000 {
        let span = u64::from(ephemeral_low - LOWEST);
        let mut state = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32)
            | 1;
        for _ in 0..64 {
            // xorshift64: spread over the range, different in each process and call.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let port = LOWEST + (state % span) as u16;
            // Both the loopback and the wildcard address: servers here bind either.
            // One after the other: the two would conflict with each other.
            let free = StdListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
                && StdListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
            if free {
                return Ok(port);
            }
        }
    }
    let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to pick a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `127.0.0.1:port`.
pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Raises the soft open-file limit to the hard limit (children inherit it). Returns the
/// soft limit now in force; errors if it is below `need`.
pub(crate) fn raise_nofile_limit(need: u64) -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    let soft = if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("raising RLIMIT_NOFILE from {soft} to {hard}"))?;
        hard
    } else {
        soft
    };
    if soft < need {
        bail!(
            "the open-file limit is {soft} (hard limit {hard}); this benchmark needs {need}: \
             raise it (e.g. `ulimit -Hn 20000` as root) or use --quick"
        );
    }
    Ok(soft)
}

/// A directory under the system temp dir, removed on drop (unless `keep` is set).
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub(crate) fn new(label: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "lameduck-bench-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating temp dir {}", path.display()))?;
        Ok(TempDir { path, keep: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the directory in place (its logs explain a failure).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Where the release binaries are (`target/release` by default: next to this runner).
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    dir: PathBuf,
}

impl Bins {
    pub(crate) fn new(dir: Option<PathBuf>) -> Result<Bins> {
        let dir = match dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("locating the runner's own executable")?
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| anyhow!("the runner's executable has no parent directory"))?,
        };
        Ok(Bins { dir })
    }

    /// The path of binary `name`, which must exist.
    pub(crate) fn get(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found: build it first (`cargo build --release -p hello -p orders \
                 -p greeter -p baseline-axum -p lameduck-bench`, which `bench/run` does) or pass --bin-dir",
                path.display()
            );
        }
        Ok(path)
    }
}

/// Which side of the comparison a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Side {
    /// A lameduck example (`hello` or `orders`).
    Lameduck,
    /// `baseline-axum`: bare `axum::serve(..).with_graceful_shutdown(..)`; for gRPC,
    /// `baseline-tonic`: tonic's own `Server::serve_with_shutdown(..)`.
    Baseline,
}

impl Side {
    pub(crate) const BOTH: [Side; 2] = [Side::Lameduck, Side::Baseline];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Side::Lameduck => "lameduck",
            Side::Baseline => "baseline",
        }
    }
}

/// How to tell that a started program is ready: `GET path` on `port` answers 200.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    pub(crate) port: u16,
    pub(crate) path: String,
}

/// Everything needed to start (and restart, on the same ports) one program.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// For messages and log file names.
    pub(crate) name: String,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// The traffic port.
    pub(crate) port: u16,
    pub(crate) ready: Ready,
    /// Where lameduck writes its report (`LAMEDUCK_TERMINATION_LOG`), if it is lameduck.
    pub(crate) report: Option<PathBuf>,
    /// Start it in a process group of its own and kill the whole group on drop (nginx:
    /// its workers would outlive a killed master).
    pub(crate) own_group: bool,
    /// Run it on these CPUs only (`taskset -c`), e.g. `"0"`.
    pub(crate) cpus: Option<String>,
}

impl Spec {
    /// A lameduck example on fresh ports: traffic on `$PORT`, admin on
    /// `127.0.0.1:<free port>`, readiness from the admin `/readyz`, the report written to a
    /// file in `dir`.
    pub(crate) fn lameduck(
        name: &str,
        program: PathBuf,
        dir: &Path,
        shutdown_delay: Duration,
        extra_env: &[(&str, String)],
    ) -> Result<Spec> {
        let port = free_port()?;
        let admin = free_port()?;
        let report = dir.join(format!("{name}-{port}-report.json"));
        let mut env = vec![
            ("PORT".to_owned(), port.to_string()),
            (
                "LAMEDUCK_ADMIN_ADDR".to_owned(),
                format!("127.0.0.1:{admin}"),
            ),
            (
                "LAMEDUCK_SHUTDOWN_DELAY".to_owned(),
                humantime::format_duration(shutdown_delay).to_string(),
            ),
            (
                "LAMEDUCK_TERMINATION_LOG".to_owned(),
                report.display().to_string(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        Ok(Spec {
            name: name.to_owned(),
            program,
            args: Vec::new(),
            env,
            port,
            ready: Ready {
                port: admin,
                path: "/readyz".to_owned(),
            },
            report: Some(report),
            own_group: false,
            cpus: None,
        })
    }

    /// `baseline-axum` on a fresh port; readiness from its `GET /ready`.
    pub(crate) fn baseline(program: PathBuf) -> Result<Spec> {
        Self::plain("baseline-axum", program, "/ready")
    }

    /// `baseline-axum` with `BASELINE_SHUTDOWN_DELAY` = `delay`: axum's pattern plus a
    /// sleep between SIGTERM and the graceful shutdown ("axum + the same delay").
    pub(crate) fn baseline_delayed(program: PathBuf, delay: Duration) -> Result<Spec> {
        let mut spec = Self::plain("baseline-axum-delay", program, "/ready")?;
        spec.env.push((
            "BASELINE_SHUTDOWN_DELAY".to_owned(),
            format!("{}ms", delay.as_millis()),
        ));
        Ok(spec)
    }

    /// A baseline server without lameduck, `name`, on a fresh port given as `PORT`;
    /// [`start`](Self::start) waits for `GET ready_path` on that port (a part that waits
    /// in its own way, as the gRPC one does, passes an empty path and spawns).
    pub(crate) fn plain(name: &str, program: PathBuf, ready_path: &str) -> Result<Spec> {
        let port = free_port()?;
        Ok(Spec {
            name: name.to_owned(),
            program,
            args: Vec::new(),
            env: vec![("PORT".to_owned(), port.to_string())],
            port,
            ready: Ready {
                port,
                path: ready_path.to_owned(),
            },
            report: None,
            own_group: false,
            cpus: None,
        })
    }

    /// Starts the program with its output in `log_dir`, and waits until it is ready.
    pub(crate) async fn start(&self, log_dir: &Path, ready_within: Duration) -> Result<Service> {
        let service = self.spawn(log_dir)?;
        service.wait_ready(ready_within).await?;
        Ok(service)
    }

    /// Starts the program with its output appended to `<log_dir>/<name>-<port>.log`.
    pub(crate) fn spawn(&self, log_dir: &Path) -> Result<Service> {
        let log = log_dir.join(format!("{}-{}.log", self.name, self.port));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        if let Some(report) = &self.report {
            let _ = std::fs::remove_file(report);
        }
        // `taskset` execs the program: the pid stays the program's.
        let mut command = match &self.cpus {
            Some(cpus) => {
                let mut command = tokio::process::Command::new("taskset");
                command.arg("-c").arg(cpus).arg(&self.program);
                command
            }
            None => tokio::process::Command::new(&self.program),
        };
        if self.own_group {
            command.process_group(0);
        }
        let mut child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| anyhow!("{} exited at once", self.name))?;
        let (tx, exited) = watch::channel(None);
        // Owns the child: reaps it and records when. Aborting the task drops the child,
        // which kills it (`kill_on_drop`).
        let waiter = tokio::spawn(async move {
            let status = child.wait().await;
            let at = Instant::now();
            let _ = tx.send(Some(match status {
                Ok(status) => Ok(Exit { at, status }),
                Err(e) => Err(e.to_string()),
            }));
        });
        Ok(Service {
            name: self.name.clone(),
            pid,
            port: self.port,
            ready: self.ready.clone(),
            log,
            report: self.report.clone(),
            own_group: self.own_group,
            exited,
            waiter,
        })
    }
}

/// How and when a child ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exit {
    /// When `wait` returned (waitpid).
    pub(crate) at: Instant,
    pub(crate) status: ExitStatus,
}

impl Exit {
    /// The exit code, or `128 + signal` when a signal killed it.
    pub(crate) fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .or_else(|| self.status.signal().map(|s| 128 + s))
            .unwrap_or(-1)
    }
}

/// A running child. Dropping it kills the child (SIGKILL) if it is still running.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) name: String,
    pid: i32,
    pub(crate) port: u16,
    ready: Ready,
    log: PathBuf,
    report: Option<PathBuf>,
    own_group: bool,
    exited: watch::Receiver<Option<Result<Exit, String>>>,
    waiter: JoinHandle<()>,
}

impl Service {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether the child has exited (been reaped).
    pub(crate) fn has_exited(&self) -> bool {
        self.exit_now().is_some()
    }

    fn exit_now(&self) -> Option<Result<Exit, String>> {
        self.exited.borrow().clone()
    }

    /// Polls the readiness endpoint until it answers 200; fails if the child exits or
    /// `within` passes, with the end of its log in the message.
    pub(crate) async fn wait_ready(&self, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        let addr = local(self.ready.port);
        loop {
            if let Some(exit) = self.exit_now() {
                bail!(
                    "{} exited before it was ready ({}); its log:\n{}",
                    self.name,
                    match exit {
                        Ok(e) => format!("status {}", e.code()),
                        Err(e) => e,
                    },
                    self.log_tail(20)
                );
            }
            if let Ok((200, _)) =
                http_request(addr, "GET", &self.ready.path, None, Duration::from_secs(1)).await
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!(
                    "{} was not ready within {within:?} (GET http://{addr}{} never answered 200); \
                     its log:\n{}",
                    self.name,
                    self.ready.path,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Sends a signal; returns the instant just before it was sent.
    pub(crate) fn signal(&self, signal: Signal) -> Result<Instant> {
        let at = Instant::now();
        kill(Pid::from_raw(self.pid), signal)
            .with_context(|| format!("sending {signal} to {} (pid {})", self.name, self.pid))?;
        Ok(at)
    }

    /// SIGTERM, as the kubelet sends it; returns the instant just before it was sent.
    pub(crate) fn sigterm(&self) -> Result<Instant> {
        self.signal(Signal::SIGTERM)
    }

    /// Waits for the child to exit (it was reaped by waitpid), at most `within`.
    pub(crate) async fn wait_exit(&self, within: Duration) -> Result<Exit> {
        let mut exited = self.exited.clone();
        let outcome = tokio::time::timeout(within, exited.wait_for(Option::is_some)).await;
        match outcome {
            Ok(Ok(exit)) => match exit.clone() {
                Some(Ok(exit)) => Ok(exit),
                Some(Err(e)) => bail!("waiting for {}: {e}", self.name),
                None => bail!("waiting for {}: no exit recorded", self.name),
            },
            Ok(Err(_)) => bail!("waiting for {}: the reaper task ended", self.name),
            Err(_) => bail!(
                "{} (pid {}) did not exit within {within:?}; its log:\n{}",
                self.name,
                self.pid,
                self.log_tail(20)
            ),
        }
    }

    /// Resident set size (`VmRSS` in /proc/PID/status), KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_vm_rss(&status).ok_or_else(|| anyhow!("no VmRSS line in {path}"))
    }

    /// CPU time the process has run so far, all threads, ns (`/proc/PID/task/*/schedstat`,
    /// whose first field is the time on a CPU; time stolen by a hypervisor is not in it).
    pub(crate) fn cpu_ns(&self) -> Result<u64> {
        let tasks = format!("/proc/{}/task", self.pid);
        let mut total = 0;
        for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            let path = task?.path().join("schedstat");
            // A thread may end between the listing and the read.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            total += parse_schedstat(&text)
                .ok_or_else(|| anyhow!("{}: unexpected content {text:?}", path.display()))?;
        }
        Ok(total)
    }

    /// lameduck's report (`LAMEDUCK_TERMINATION_LOG`), once it has exited.
    pub(crate) fn report(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.report.as_ref()?).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// How long lameduck says a phase lasted (`stopping`, `draining`), from its report.
    pub(crate) fn phase_ms(&self, state: &str) -> Option<u64> {
        self.report()?
            .get("states")?
            .as_array()?
            .iter()
            .find(|p| p.get("state").and_then(|s| s.as_str()) == Some(state))?
            .get("duration_ms")?
            .as_u64()
    }

    /// The last `n` lines of the child's output.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.own_group {
            // The whole group: a master's workers too, even after the master is gone.
            let _ = nix::sys::signal::killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        } else if self.exit_now().is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        self.waiter.abort();
    }
}

/// The last `n` lines of a file, indented; a note if it cannot be read.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..]
                .iter()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), within `timeout`:
/// the status and the body (at most 64 KiB read). For readiness and smoke checks only;
/// load goes through lameduck-loadgen.
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: lameduck-bench\r\n"
        );
        match json {
            Some(body) => request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => request.push_str("\r\n"),
        }
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        (&mut stream)
            .take(64 * 1024)
            .read_to_end(&mut response)
            .await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("{method} http://{addr}{path}: no answer within {timeout:?}"))?
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = parse_status(&text)
        .ok_or_else(|| anyhow!("{method} http://{addr}{path}: not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn parse_status(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Runs a command to completion within `timeout`; its combined output on failure.
pub(crate) async fn run_command(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<std::process::Output> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("starting `{program}` (is it installed? `bench/run` installs it)")
        })?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow!(
                "`{program} {}` did not finish within {timeout:?}",
                args.join(" ")
            )
        })?
        .with_context(|| format!("running `{program}`"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Milliseconds, with a fraction, of a duration.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_status() {
        let status = "Name:\thello\nVmPeak:\t  10000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(
            parse_status("HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status("SSH-2.0\r\n"), None);
    }

    #[test]
    fn free_ports_are_bindable() -> Result<()> {
        let port = free_port()?;
        assert_ne!(port, 0);
        let _listener = StdListener::bind(local(port))?;
        Ok(())
    }

    #[test]
    fn free_ports_stay_below_the_ephemeral_range() -> Result<()> {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(32768);
        for _ in 0..20 {
            let port = free_port()?;
            assert!(port < low, "{port} is in the ephemeral range from {low}");
        }
        Ok(())
    }
}
