//! Real signals to a real child process. The child is this test binary re-run with
//! `LAMEDUCK_SIGNAL_CHILD` set, which turns `child_process` into a small service.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;

const CHILD_ENV: &str = "LAMEDUCK_SIGNAL_CHILD";

/// The child's `main`. Does nothing in a normal test run.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async move {
        let lifecycle =
            lameduck::Lifecycle::from_env().unwrap_or_else(|e| lameduck::exit_on_config_error(e));
        if mode == "panic" {
            panic!("boom before serving");
        }
        lifecycle.on_shutdown("say-goodbye", lameduck::Phase::AfterDrain, || async {
            println!("CHILD GOODBYE");
        });
        let run = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        lifecycle.ready().await;
        println!("CHILD READY");
        if mode == "prestop" {
            lifecycle.trigger(lameduck::Reason::PreStop);
        }
        lifecycle.draining().await;
        println!("CHILD DRAINING");
        run.await.unwrap().exit_code
    });
    std::process::exit(i32::from(status));
}

struct ChildService {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Fires when the child has exited (left unreaped until `wait_exit`).
    exited: mpsc::Receiver<()>,
    log: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ChildService {
    fn start(mode: &str, delay: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "lameduck-signals-{}-{mode}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("termination-log");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .env("LAMEDUCK_SHUTDOWN_DELAY", delay)
            .env("LAMEDUCK_GRACE_PERIOD", "60s")
            .env("LAMEDUCK_TERMINATION_LOG", &log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let exited = notify_exit(Pid::from_raw(child.id() as i32));
        Self {
            child,
            lines,
            exited,
            log,
            _dir: TempDir(dir),
        }
    }

    fn wait_for_line(&self, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("child never printed {wanted:?}");
    }

    fn signal(&self, signal: NixSignal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Exit status, and how long after this call it came.
    fn wait_exit(&mut self, within: Duration) -> (i32, Duration) {
        let start = Instant::now();
        if self.exited.recv_timeout(within).is_err() {
            let _ = self.child.kill();
            panic!("child did not exit within {within:?}");
        }
        let took = start.elapsed();
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), took)
    }

    fn report(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.log).unwrap();
        assert!(text.len() <= 4096);
        serde_json::from_str(&text).unwrap()
    }
}

/// A receiver that fires when the child `pid` exits. The child is not reaped
/// (`WNOWAIT`), so its pid stays its own until `Child::wait`.
fn notify_exit(pid: Pid) -> mpsc::Receiver<()> {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Err(nix::errno::Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        let _ = tx.send(());
    });
    rx
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[test]
fn sigterm_drains_and_exits_zero_with_the_report_written() {
    let mut service = ChildService::start("serve", "300ms");
    service.wait_for_line("CHILD READY");
    service.signal(NixSignal::SIGTERM);
    service.wait_for_line("CHILD GOODBYE");
    let (status, _) = service.wait_exit(Duration::from_secs(20));
    assert_eq!(status, 0);
    let report = service.report();
    assert_eq!(report["reason"], "signal:SIGTERM");
    assert_eq!(report["clean"], true);
    assert!(report["duration_ms"].as_u64().unwrap() >= 300);
    assert_eq!(report["hooks"][0]["name"], "say-goodbye");
    assert_eq!(report["hooks"][0]["outcome"], "ok");
}

#[test]
fn sigint_is_a_trigger_too() {
    let mut service = ChildService::start("serve", "0s");
    service.wait_for_line("CHILD READY");
    service.signal(NixSignal::SIGINT);
    let (status, _) = service.wait_exit(Duration::from_secs(20));
    assert_eq!(status, 0);
    assert_eq!(service.report()["reason"], "signal:SIGINT");
}

#[test]
fn a_second_sigterm_during_a_long_delay_forces_exit_within_half_a_second() {
    let mut service = ChildService::start("serve", "30s");
    service.wait_for_line("CHILD READY");
    service.signal(NixSignal::SIGTERM);
    service.wait_for_line("CHILD DRAINING");
    service.signal(NixSignal::SIGTERM);
    let (status, took) = service.wait_exit(Duration::from_secs(20));
    assert_eq!(status, 128 + 15);
    assert!(
        took < Duration::from_millis(500),
        "forced exit took {took:?}"
    );
    let report = service.report();
    assert_eq!(report["forced_by"], "SIGTERM");
    assert_eq!(report["clean"], false);
    assert_eq!(report["hooks"][0]["outcome"], "abandoned");
}

#[test]
fn sigterm_after_a_prestop_trigger_lets_the_drain_finish() {
    let mut service = ChildService::start("prestop", "1s");
    service.wait_for_line("CHILD DRAINING");
    // The kubelet's SIGTERM after a preStop `/shutdown`: the normal sequence, not a force.
    service.signal(NixSignal::SIGTERM);
    let (status, _) = service.wait_exit(Duration::from_secs(20));
    assert_eq!(status, 0);
    let report = service.report();
    assert_eq!(report["reason"], "prestop");
    assert_eq!(report["clean"], true);
    assert!(report.get("forced_by").is_none());
}

#[test]
fn a_panic_writes_its_message_to_the_termination_log() {
    let mut service = ChildService::start("panic", "0s");
    let (status, _) = service.wait_exit(Duration::from_secs(20));
    assert_ne!(status, 0);
    let report = service.report();
    assert_eq!(report["reason"], "panic");
    assert_eq!(report["clean"], false);
    assert!(
        report["panic"]
            .as_str()
            .unwrap()
            .contains("boom before serving")
    );
}

#[test]
fn a_bad_variable_stops_the_service_at_once_naming_it() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "serve")
        .env("LAMEDUCK_DRAIN_TIMEOUT", "twenty")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LAMEDUCK_DRAIN_TIMEOUT=\"twenty\""),
        "{stderr}"
    );
}
