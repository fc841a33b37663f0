//! PID 1 duties: adopt orphans (as a child subreaper, or as PID 1 of a PID namespace) and
//! reap every process that ends, without losing the supervised child's status.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(Signal),
}

impl Ended {
    /// The shell convention: the code, or 128 + the signal's number.
    pub(crate) fn exit_code(self) -> u8 {
        let code = match self {
            Self::Exited(code) => code,
            Self::Signaled(signal) => 128 + signal as i32,
        };
        u8::try_from(code).unwrap_or(u8::MAX)
    }
}

/// Orphans of the child's tree are re-parented to the supervisor instead of to the
/// system's PID 1, so that they are reaped here even when the supervisor is not PID 1.
pub(crate) fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reap every child process that has ended (the supervised one and adopted orphans alike),
/// without blocking; the supervised child's end, if it is among them. `std::process::Child`
/// is never waited on, so this is the only place its status is collected.
pub(crate) fn reap(child: Pid) -> Option<Ended> {
    let mut ended = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                ended = Some(Ended::Exited(code));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                ended = Some(Ended::Signaled(signal));
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return ended,
            // An orphan reaped; go on until nothing is left to reap.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => {
                eprintln!("lameduck run: waitpid failed: {error}");
                return ended;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Ended::Exited(0).exit_code(), 0);
        assert_eq!(Ended::Exited(3).exit_code(), 3);
        assert_eq!(Ended::Signaled(Signal::SIGTERM).exit_code(), 143);
        assert_eq!(Ended::Signaled(Signal::SIGKILL).exit_code(), 137);
    }
}
