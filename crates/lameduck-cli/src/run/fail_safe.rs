//! What a panic in the supervisor does to the child: it is stopped the orderly way, and
//! the supervisor exits [`EXIT_INTERNAL`](super::EXIT_INTERNAL).
//!
//! A supervisor that has lost one of its tasks (signal forwarding, the reaper, the probes,
//! the admin endpoints) can no longer keep its promises, and going on half-alive would
//! leave the platform's SIGTERM unforwarded or a probe unanswered. Dying at once is no
//! better: as PID 1 its end takes the child with it by SIGKILL (the PID namespace is torn
//! down), and otherwise the child is left running, unsupervised. So a panic anywhere in
//! the supervisor, whichever task it happens in, sends the child its stop signal, waits for
//! it to end until the shutdown deadline, kills what is left of its process group, and
//! exits.
//!
//! The same in every build: the static build for images aborts on panic (the `static-cli`
//! profile, for its size), the others unwind, and this runs first either way.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::EXIT_INTERNAL;
use super::reaper::Ended;

/// How often the child's end is looked for while the panicking supervisor waits for it.
const POLL: Duration = Duration::from_millis(10);

/// From now on, a panic stops `child` with `stop_signal`, gives it `wait` to end, and exits
/// the process. The panic's own message (and backtrace, if asked for) is printed first.
pub(crate) fn install(child: Pid, stop_signal: Signal, wait: Duration) {
    crate::on_panic::on_panic(move || {
        eprintln!(
            "lameduck run: internal error (the panic above): sending {stop_signal} to the \
             child, waiting up to {} for it, then exiting {EXIT_INTERNAL}",
            humantime::format_duration(wait)
        );
        match stop_child(child, stop_signal, wait) {
            Stopped::Ended(ended) => {
                eprintln!("lameduck run: the child {}", super::describe(ended));
            }
            Stopped::Killed => eprintln!(
                "lameduck run: the child did not stop in time: SIGKILL sent to its process group"
            ),
            Stopped::ReapedElsewhere => {}
        }
        std::process::exit(i32::from(EXIT_INTERNAL));
    });
}

/// How [`stop_child`] left the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It ended within the wait.
    Ended(Ended),
    /// It was still there at the end of the wait, and its group was killed.
    Killed,
    /// Its status was collected by the supervisor's own reaper meanwhile (or before).
    ReapedElsewhere,
}

/// Send `stop_signal` to `child`, wait up to `wait` for it to end, then kill its process
/// group: whatever it left behind, and the child itself if it is still there. A child whose
/// status was already collected is not signalled: its pid may belong to another process by
/// now. Plain system calls only: this runs inside a panic, with the runtime in an unknown
/// state.
pub(crate) fn stop_child(child: Pid, stop_signal: Signal, wait: Duration) -> Stopped {
    let until = Instant::now().checked_add(wait);
    let mut signalled = false;
    let stopped = loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break Stopped::Ended(Ended::Exited(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                break Stopped::Ended(Ended::Signaled(signal));
            }
            Err(Errno::ECHILD) => break Stopped::ReapedElsewhere,
            // Still running (or stopped, or continued), or the wait was interrupted.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => {
                eprintln!("lameduck run: waitpid failed: {error}");
                break Stopped::Killed;
            }
        }
        if !signalled {
            // ESRCH: it has just ended, and its status is collected next time round.
            let _ = kill(child, stop_signal);
            signalled = true;
        } else if until.is_some_and(|until| Instant::now() >= until) {
            break Stopped::Killed;
        }
        std::thread::sleep(POLL);
    };
    let _ = killpg(child, Signal::SIGKILL);
    stopped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    /// Set, to its scratch directory, in the copy of this test binary that plays the
    /// supervisor.
    const SCENARIO: &str = "LAMEDUCK_TEST_FAIL_SAFE_MARKER";

    /// A scratch directory of this test's own.
    fn scratch(test: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lameduck-fail-safe-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A shell in a process group of its own (as `run` starts the child) that, on SIGTERM,
    /// writes `stopped` to `dir/marker` and exits 3, or with `stops` false ignores SIGTERM.
    /// Returned once its trap is set: before that, the signal would end it regardless.
    // Reaped by pid with `waitpid`, as `run` reaps its child, not through `Child`.
    #[allow(clippy::zombie_processes)]
    fn child(dir: &std::path::Path, stops: bool) -> Pid {
        let trap = if stops {
            format!(
                "trap 'echo stopped > {}; exit 3' TERM",
                dir.join("marker").display()
            )
        } else {
            "trap '' TERM".to_owned()
        };
        let ready = dir.join("ready");
        let script = format!(
            "{trap}; echo $$ > {}; while :; do sleep 1 & wait $!; done",
            ready.display()
        );
        // Its stdio is not the test's: a copy of the test binary that leaves it running
        // must not keep the output that the test reads open.
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        // Polled: the file is the event, the pause only paces the look.
        while std::fs::read_to_string(&ready).map_or(true, |pid| !pid.ends_with('\n')) {
            std::thread::sleep(POLL);
        }
        Pid::from_raw(i32::try_from(child.id()).unwrap())
    }

    /// Whether `pid` still exists (a zombie counts: it has not been reaped).
    fn exists(pid: Pid) -> bool {
        kill(pid, None).is_ok()
    }

    /// The panic hook, end to end: this test runs itself again as the "supervisor", which
    /// starts a child, installs the hook and panics; the copy must exit 125 with the child
    /// stopped by its signal, not killed, and say so.
    #[test]
    fn a_panic_stops_the_child_with_its_signal_then_exits_125() {
        if let Some(dir) = std::env::var_os(SCENARIO) {
            let pid = child(std::path::Path::new(&dir), true);
            install(pid, Signal::SIGTERM, Duration::from_secs(30));
            panic!("a supervisor task failed on purpose");
        }
        let dir = scratch("panic");
        let supervisor = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "run::fail_safe::tests::a_panic_stops_the_child_with_its_signal_then_exits_125",
                "--nocapture",
            ])
            .env(SCENARIO, &dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&supervisor.stderr);
        let written = std::fs::read_to_string(dir.join("marker"));
        // Whatever the outcome, no shell is left behind.
        if let Some(pid) = std::fs::read_to_string(dir.join("ready"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
        {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(supervisor.status.code(), Some(125), "{stderr}");
        assert_eq!(written.unwrap_or_default().trim(), "stopped", "{stderr}");
        assert!(
            stderr.contains("a supervisor task failed on purpose"),
            "{stderr}"
        );
        assert!(stderr.contains("sending SIGTERM to the child"), "{stderr}");
        assert!(
            stderr.contains("the child exited with status 3"),
            "{stderr}"
        );
    }

    #[test]
    fn a_child_that_ignores_its_signal_is_killed_after_the_wait() {
        let dir = scratch("ignores");
        let pid = child(&dir, false);
        assert_eq!(
            stop_child(pid, Signal::SIGTERM, Duration::from_millis(300)),
            Stopped::Killed
        );
        assert_eq!(
            waitpid(pid, None).unwrap(),
            WaitStatus::Signaled(pid, Signal::SIGKILL, false)
        );
        assert!(!exists(pid));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_child_already_collected_is_left_to_whoever_collected_it() {
        let dir = scratch("collected");
        let pid = child(&dir, true);
        killpg(pid, Signal::SIGKILL).unwrap();
        waitpid(pid, None).unwrap();
        assert_eq!(
            stop_child(pid, Signal::SIGTERM, Duration::from_secs(5)),
            Stopped::ReapedElsewhere
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
