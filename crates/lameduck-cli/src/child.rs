//! Running the command of `lameduck once` and turning how it ended into an exit code.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

/// Exit code when the command does not exist (as in shells).
pub(crate) const NOT_FOUND: i32 = 127;

/// Exit code when the command exists but cannot be started (as in shells).
pub(crate) const CANNOT_EXECUTE: i32 = 126;

/// Runs `argv` with inherited stdio, waits, and returns its exit code: the code it exited
/// with, or 128 + the signal number that killed it. A command that cannot be started gives
/// 127 (not found) or 126 (anything else), after a line on stderr.
pub(crate) fn run(argv: &[OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("lameduck once: no command given");
        return NOT_FOUND;
    };
    let mut command = Command::new(program);
    command.args(args);
    die_with_parent(&mut command);
    let status = command.spawn().and_then(|mut child| child.wait());
    match status {
        Ok(status) => exit_code(status),
        Err(err) => {
            eprintln!(
                "lameduck once: cannot run {}: {err}",
                program.to_string_lossy()
            );
            if err.kind() == io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                CANNOT_EXECUTE
            }
        }
    }
}

/// The shell convention: the exit code, or 128 + signal number.
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        // wait() reports only exits and deaths; keep a failure code just in case.
        (None, None) => 128,
    }
}

/// Makes the kernel SIGKILL the command when this process dies.
///
/// Without it, a `lameduck once` runner killed by SIGKILL (OOM killer, a hook timeout) would
/// orphan its command: the lock is released, the next invocation starts the command again,
/// and two copies run at once, the exact thing `once` exists to prevent.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;

    let parent = std::process::id();
    let parent = libc::pid_t::try_from(parent).unwrap_or(libc::pid_t::MAX);
    // SAFETY: `pre_exec` closures run in the forked child before exec, where only
    // async-signal-safe work is allowed. This one calls prctl(2) and getppid(2), both
    // async-signal-safe, captures a plain integer, and does not allocate (the io::Error
    // values are OS-error codes, stored inline).
    unsafe {
        command.pre_exec(move || {
            let signal = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // If the parent died between fork and prctl, the signal will never come:
            // then do not start the command at all.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Elsewhere there is no parent-death signal; the command may outlive a killed runner.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagates_exit_codes() {
        let sh = |script: &str| run(&["sh".into(), "-c".into(), script.into()]);
        assert_eq!(sh("exit 0"), 0);
        assert_eq!(sh("exit 3"), 3);
        assert_eq!(sh("kill -TERM $$"), 128 + libc::SIGTERM);
        assert_eq!(run(&["/nonexistent/lameduck-test".into()]), NOT_FOUND);
        assert_eq!(run(&["/".into()]), CANNOT_EXECUTE);
    }
}
