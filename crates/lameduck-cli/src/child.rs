//! Running the command of `lameduck once` and turning how it ended into an exit code.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

/// Exit code when the command does not exist (as in shells).
pub(crate) const NOT_FOUND: i32 = 127;

/// Exit code when the command exists but cannot be started (as in shells).
pub(crate) const CANNOT_EXECUTE: i32 = 126;

/// Runs `argv` with inherited stdio, waits, and returns its exit code: the code it exited
/// with, or 128 + the signal number that killed it. A command that cannot be started gives
/// 127 (not found) or 126 (anything else), after a line on stderr.
///
/// `lock` is the runner's locked key file, or `None`. When given, the command inherits it
/// (see [`tie_to_runner`]), so the key stays locked while the command or anything it
/// started is alive, even when this process is gone.
pub(crate) fn run(argv: &[OsString], lock: Option<BorrowedFd<'_>>) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("lameduck once: no command given");
        return NOT_FOUND;
    };
    let mut command = Command::new(program);
    command.args(args);
    tie_to_runner(&mut command, lock.map(|fd| fd.as_raw_fd()));
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

/// Ties the command's lifetime to the key, in the forked child just before exec:
///
/// - **the lock is inherited** (`lock_fd` loses `FD_CLOEXEC`): `flock(2)` locks belong to
///   the open file description, which the command and every process it starts (`sh -c`'s
///   children, background jobs) now share. If this runner is killed (SIGKILL, OOM killer),
///   the kernel keeps the key locked until the last of them has exited, so the next
///   invocation cannot start the command while any part of the previous run lives: the
///   safe choice for exactly-once. When the runner finishes normally it unlocks
///   explicitly ([`crate::once`]), which releases the lock for all of them at once;
/// - **parent-death signal** (Linux, `PR_SET_PDEATHSIG` SIGKILL): the direct child dies with
///   a killed runner instead of running on unobserved. Only the direct child gets it: its
///   own children are orphaned, but they still hold the lock, so nothing runs twice.
#[allow(unsafe_code)]
pub(crate) fn tie_to_runner(command: &mut Command, lock_fd: Option<RawFd>) {
    use std::os::unix::process::CommandExt;

    #[cfg(target_os = "linux")]
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    // SAFETY: `pre_exec` closures run in the forked child before exec, where only
    // async-signal-safe work is allowed. This one calls fcntl(2), prctl(2) and getppid(2),
    // all async-signal-safe, captures plain integers, and does not allocate (the io::Error
    // values are OS-error codes, stored inline). `lock_fd` is open: the caller keeps the
    // lock file alive until the child has been waited for.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = lock_fd {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            #[cfg(target_os = "linux")]
            {
                let signal = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // If the parent died between fork and prctl, the signal will never come:
                // then do not start the command at all.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagates_exit_codes() {
        let sh = |script: &str| run(&["sh".into(), "-c".into(), script.into()], None);
        assert_eq!(sh("exit 0"), 0);
        assert_eq!(sh("exit 3"), 3);
        assert_eq!(sh("kill -TERM $$"), 128 + libc::SIGTERM);
        assert_eq!(run(&["/nonexistent/lameduck-test".into()], None), NOT_FOUND);
        assert_eq!(run(&["/".into()], None), CANNOT_EXECUTE);
    }
}
