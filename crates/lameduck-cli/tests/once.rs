//! `lameduck once`: concurrency, failure, crash recovery, exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::process::{Child, Stdio};
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

#[test]
fn killed_runner_leaves_the_key_runnable_and_takes_its_command_along() {
    let dir = temp_dir("killed");
    let counter = dir.join("counter");
    let slow = dir.join("slow");
    fs::write(&slow, "").unwrap();
    // Records its PID, then (while `slow` exists) becomes a long sleep with the same PID.
    let script = r#"echo $$ >> "$1"; if [ -e "$2" ]; then exec sleep 600; fi"#;

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
    let script = r#"echo $$ >> "$1"; if [ -e "$2" ]; then exec sleep 600; fi"#;

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
