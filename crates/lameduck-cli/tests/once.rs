//! `lameduck once`: concurrency, failure, crash recovery, exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::Duration;

use common::{drain, eventually, lameduck, stderr, temp_dir, wait_for_line};

/// A generous bound for anything that should be quick, so slow machines do not flake.
const PATIENCE: Duration = Duration::from_secs(20);

/// Lines in the counter file (each run of the test command appends one).
fn runs(counter: &Path) -> Vec<String> {
    fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `lameduck once --key KEY --state-dir DIR -- sh -c SCRIPT sh ARGS...`, not yet run.
fn once(dir: &Path, key: &str, script: &str, args: &[&Path]) -> std::process::Command {
    let mut command = lameduck();
    command
        .args(["once", "--key", key, "--state-dir"])
        .arg(dir.join("state"))
        .args(["--", "sh", "-c", script, "sh"])
        .args(args);
    command
}

/// Spawns with stderr piped, so the test can wait for "waiting" lines.
fn spawn(mut command: std::process::Command) -> Child {
    command.stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
fn twenty_concurrent_invocations_run_the_command_once() {
    let dir = temp_dir("concurrent");
    let counter = dir.join("counter");
    // The sleep keeps the run going while the others arrive.
    let script = r#"echo run >> "$1"; sleep 1"#;
    let children: Vec<Child> = (0..20)
        .map(|_| {
            once(&dir, "setup", script, &[&counter])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    assert_eq!(runs(&counter), ["run"]);
    // Later invocations do not run it either.
    let output = once(&dir, "setup", script, &[&counter]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("already succeeded"),
        "{}",
        stderr(&output)
    );
    assert_eq!(runs(&counter).len(), 1);
}

#[test]
fn failure_is_propagated_and_the_next_invocation_runs_again() {
    let dir = temp_dir("failure");
    let counter = dir.join("counter");
    let failing = r#"echo run >> "$1"; exit 3"#;
    let succeeding = r#"echo run >> "$1""#;

    let output = once(&dir, "k", failing, &[&counter]).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(runs(&counter).len(), 1);

    let output = once(&dir, "k", failing, &[&counter]).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(runs(&counter).len(), 2, "a failed key runs again");

    let output = once(&dir, "k", succeeding, &[&counter]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(runs(&counter).len(), 3);

    let output = once(&dir, "k", failing, &[&counter]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "a succeeded key does not run again"
    );
    assert_eq!(runs(&counter).len(), 3);
}

#[test]
fn waiters_share_the_result_of_a_failed_run() {
    let dir = temp_dir("shared-failure");
    let counter = dir.join("counter");
    let release = dir.join("release");
    let script = r#"echo run >> "$1"; while [ ! -e "$2" ]; do sleep 0.05; done; exit 3"#;

    let mut runner = spawn(once(&dir, "k", script, &[&counter, &release]));
    assert!(
        eventually(PATIENCE, || runs(&counter).len() == 1),
        "the runner never started"
    );

    let mut waiters = Vec::new();
    for _ in 0..5 {
        let mut waiter = spawn(once(&dir, "k", script, &[&counter, &release]));
        let mut err = BufReader::new(waiter.stderr.take().unwrap());
        assert!(
            wait_for_line(&mut err, "waiting"),
            "the invocation did not wait"
        );
        waiters.push((waiter, err));
    }
    fs::write(&release, "").unwrap();

    assert_eq!(runner.wait().unwrap().code(), Some(3));
    for (mut waiter, err) in waiters {
        let code = waiter.wait().unwrap().code();
        let rest = drain(err);
        assert_eq!(code, Some(3), "{rest}");
        assert!(rest.contains("failed with exit code 3"), "{rest}");
    }
    assert_eq!(
        runs(&counter).len(),
        1,
        "the waiters must not run the command"
    );
}

/// `sh -c` script with arguments COUNTER SLOW: if SLOW exists, appends its PID to COUNTER
/// and becomes `sleep 600` (same PID); else appends its PID and exits 0. The test on SLOW
/// comes first, so a test that has seen the PID knows which branch the run is in, and
/// removing SLOW afterwards cannot turn a slow run into a quick one.
const SLOW_OR_QUICK: &str =
    r#"if [ -e "$2" ]; then echo $$ >> "$1"; exec sleep 600; fi; echo $$ >> "$1""#;

#[test]
fn killed_runner_leaves_the_key_runnable_and_takes_its_command_along() {
    let dir = temp_dir("killed");
    let counter = dir.join("counter");
    let slow = dir.join("slow");
    fs::write(&slow, "").unwrap();
    // While `slow` exists: records its PID, then becomes a long sleep with the same PID.
    // Otherwise records its PID and succeeds. `slow` is tested *before* the PID is written,
    // so once the test has seen the PID it knows which branch was taken.
    let script = SLOW_OR_QUICK;

    let mut runner = spawn(once(&dir, "k", script, &[&counter, &slow]));
    assert!(
        eventually(PATIENCE, || runs(&counter).len() == 1),
        "the runner never started"
    );
    let orphan_pid = runs(&counter)[0].clone();

    let mut waiter = spawn(once(&dir, "k", script, &[&counter, &slow]));
    let mut waiter_err = BufReader::new(waiter.stderr.take().unwrap());
    assert!(
        wait_for_line(&mut waiter_err, "waiting"),
        "the invocation did not wait"
    );

    fs::remove_file(&slow).unwrap();
    runner.kill().unwrap(); // SIGKILL: no chance to clean up or record anything.
    runner.wait().unwrap();

    // The waiter finds no result from the dead runner and runs the command itself.
    let code = waiter.wait().unwrap().code();
    assert_eq!(code, Some(0), "{}", drain(waiter_err));
    assert_eq!(runs(&counter).len(), 2);

    // PR_SET_PDEATHSIG: the runner's command died with it (gone, or a zombie awaiting
    // reaping by whoever adopted it).
    let stat = format!("/proc/{orphan_pid}/stat");
    let dead = || match fs::read_to_string(&stat) {
        Err(_) => true,
        Ok(text) => text
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    };
    assert!(
        eventually(PATIENCE, dead),
        "the killed runner's command survived it"
    );

    // And now the key is done.
    let output = once(&dir, "k", script, &[&counter, &slow])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(runs(&counter).len(), 2);
}

#[test]
fn killed_runner_then_a_new_invocation_runs_again() {
    let dir = temp_dir("killed-alone");
    let counter = dir.join("counter");
    let slow = dir.join("slow");
    fs::write(&slow, "").unwrap();
    let script = SLOW_OR_QUICK;

    let mut runner = spawn(once(&dir, "k", script, &[&counter, &slow]));
    assert!(
        eventually(PATIENCE, || runs(&counter).len() == 1),
        "the runner never started"
    );
    runner.kill().unwrap();
    runner.wait().unwrap();
    fs::remove_file(&slow).unwrap();

    let output = once(&dir, "k", script, &[&counter, &slow])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(runs(&counter).len(), 2);
}

#[test]
fn exit_codes() {
    let dir = temp_dir("codes");
    let state = dir.join("state");
    let state = state.to_str().unwrap();
    let code = |args: &[&str]| {
        let output = lameduck().args(args).output().unwrap();
        (output.status.code(), stderr(&output))
    };

    let (status, _) = code(&[
        "once",
        "--key",
        "sig",
        "--state-dir",
        state,
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    assert_eq!(status, Some(128 + 15), "signal death is 128 + signal");

    let (status, message) = code(&[
        "once",
        "--key",
        "nf",
        "--state-dir",
        state,
        "--",
        "/nonexistent/cmd",
    ]);
    assert_eq!(status, Some(127));
    assert!(message.contains("cannot run /nonexistent/cmd"), "{message}");

    let (status, message) = code(&["once", "--key", "a/b", "--state-dir", state, "--", "true"]);
    assert_eq!(status, Some(2));
    assert!(message.contains("only letters, digits"), "{message}");

    let long = "k".repeat(129);
    let (status, message) = code(&["once", "--key", &long, "--state-dir", state, "--", "true"]);
    assert_eq!(status, Some(2));
    assert!(message.contains("at most 128"), "{message}");

    let (status, _) = code(&["once", "--key", "nocmd", "--state-dir", state]);
    assert_eq!(status, Some(2), "a command is required");

    // A state directory that cannot be created: lameduck's own failure, 125.
    let blocker = dir.join("file");
    fs::write(&blocker, "").unwrap();
    let bad_dir = blocker.join("state");
    let (status, message) = code(&[
        "once",
        "--key",
        "k",
        "--state-dir",
        bad_dir.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(status, Some(125));
    assert!(message.contains("state directory"), "{message}");
}

#[test]
fn command_arguments_pass_through_and_state_dir_comes_from_the_environment() {
    let dir = temp_dir("env");
    let out = dir.join("out");
    let output = lameduck()
        .args([
            "once",
            "--key",
            "args",
            "--",
            "sh",
            "-c",
            r#"printf '%s\n' "$@" > "$0""#,
        ])
        .arg(&out)
        .args(["--key", "-x", "two words"])
        .env("LAMEDUCK_STATE_DIR", dir.join("from-env"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(fs::read_to_string(&out).unwrap(), "--key\n-x\ntwo words\n");
    let result = fs::read_to_string(dir.join("from-env").join("args.result")).unwrap();
    assert!(result.contains("exit_code 0"), "{result}");
}

/// Kills a process by PID when dropped, so a failing test leaves no `sleep 600` behind.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0])
            .status();
    }
}

#[test]
fn a_killed_runners_leftover_processes_keep_the_key_locked_until_they_exit() {
    let dir = temp_dir("grandchild");
    let counter = dir.join("counter");
    let slow = dir.join("slow");
    fs::write(&slow, "").unwrap();
    // While `slow` exists: starts a background grandchild, records its PID and waits for
    // it. The parent-death signal reaches only `sh`, so the grandchild outlives a killed
    // runner. Otherwise: records `quick` and succeeds.
    let script =
        r#"if [ -e "$2" ]; then sleep 600 & echo $! >> "$1"; wait; exit 0; fi; echo quick >> "$1""#;

    let mut runner = spawn(once(&dir, "k", script, &[&counter, &slow]));
    assert!(
        eventually(PATIENCE, || runs(&counter).len() == 1),
        "the runner never started"
    );
    let grandchild = KillOnDrop(runs(&counter)[0].clone());

    let mut waiter = spawn(once(&dir, "k", script, &[&counter, &slow]));
    let mut waiter_err = BufReader::new(waiter.stderr.take().unwrap());
    assert!(
        wait_for_line(&mut waiter_err, "waiting"),
        "the invocation did not wait"
    );
    fs::remove_file(&slow).unwrap();
    runner.kill().unwrap(); // SIGKILL; `sh` follows it (PR_SET_PDEATHSIG).
    runner.wait().unwrap();

    // The grandchild still holds the key's lock (it inherited the locked descriptor), so
    // the waiter must keep waiting rather than start a second run alongside it.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        waiter.try_wait().unwrap(),
        None,
        "the waiter did not wait for the killed run's leftover process"
    );
    assert_eq!(runs(&counter).len(), 1, "a second run overlapped the first");

    // Once the last process of the killed run is gone, the waiter runs the command.
    drop(grandchild);
    let code = waiter.wait().unwrap().code();
    assert_eq!(code, Some(0), "{}", drain(waiter_err));
    assert_eq!(runs(&counter).len(), 2);
    assert_eq!(runs(&counter)[1], "quick");
}

#[test]
fn background_processes_of_a_finished_run_do_not_block_the_key() {
    // The runner unlocks explicitly when its command exits, so a background process the
    // command left behind (still holding the inherited descriptor) does not keep others
    // waiting.
    let dir = temp_dir("background");
    let counter = dir.join("counter");
    let script = r#"sleep 600 >/dev/null 2>&1 & echo $! >> "$1"; exit 3"#;

    let output = once(&dir, "k", script, &[&counter]).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let _background = KillOnDrop(runs(&counter)[0].clone());

    // A failed key runs again, and must get the lock at once.
    let mut again = once(&dir, "k", r#"echo again >> "$1""#, &[&counter]);
    let mut again = again.stderr(Stdio::piped()).spawn().unwrap();
    assert!(
        eventually(PATIENCE, || again.try_wait().unwrap().is_some()),
        "the next invocation waited for a finished run's background process"
    );
    let status = again.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        drain(again.stderr.take().unwrap())
    );
    assert_eq!(runs(&counter)[1], "again");
}
