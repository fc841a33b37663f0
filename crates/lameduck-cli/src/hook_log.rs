//! Where `lameduck prestop` writes its lines.
//!
//! The kubelet keeps an exec hook's output only when the hook fails, and `prestop` never
//! fails, so its own stdout and stderr go nowhere. Writing to PID 1's stdout instead puts
//! the lines in the container log, next to the service's own shutdown messages, where
//! `kubectl logs` shows them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

/// PID 1's standard output, as seen from inside the container.
const PID1_STDOUT: &str = "/proc/1/fd/1";

/// The `--log-to` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogTo {
    /// PID 1's stdout when it can be opened for writing, else stderr.
    Auto,
    /// PID 1's stdout; like `auto`, but says on stderr why when it cannot be opened.
    Pid1,
    /// This process's stderr (tests, debugging by hand).
    Stderr,
}

/// A line-oriented, best-effort log: a message that cannot be written is not worth failing
/// a preStop hook for, so write errors fall back to stderr and are otherwise ignored.
#[derive(Debug)]
pub(crate) struct HookLog {
    /// PID 1's stdout, or `None` for stderr.
    pid1: Option<File>,
    /// Prefix of every line, so hook lines stand out among the service's own.
    prefix: &'static str,
}

impl HookLog {
    /// Opens the log chosen by `to`.
    pub(crate) fn open(to: LogTo, prefix: &'static str) -> Self {
        let pid1 = match to {
            LogTo::Stderr => None,
            LogTo::Auto => open_pid1_stdout().ok(),
            LogTo::Pid1 => match open_pid1_stdout() {
                Ok(file) => Some(file),
                Err(err) => {
                    eprintln!("{prefix}: cannot open {PID1_STDOUT} ({err}); logging to stderr");
                    None
                }
            },
        };
        Self { pid1, prefix }
    }

    /// Writes one line.
    pub(crate) fn line(&mut self, message: &str) {
        let line = format!("{}: {message}\n", self.prefix);
        if let Some(file) = &mut self.pid1 {
            // One write call per line: PID 1's stdout is usually a pipe shared with the
            // service, and a single small write to a pipe is not interleaved with others.
            if file.write_all(line.as_bytes()).is_ok() {
                return;
            }
            self.pid1 = None;
        }
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// Opens PID 1's stdout in append mode: when it is a regular file, a plain write-open would
/// start at offset 0 and overwrite the log.
fn open_pid1_stdout() -> io::Result<File> {
    OpenOptions::new().append(true).open(PID1_STDOUT)
}
