//! Where `lameduck prestop` writes its lines.
//!
//! The kubelet keeps an exec hook's output only when the hook fails, and `prestop` never
//! fails, so its own stdout and stderr go nowhere. Writing to PID 1's stdout instead puts
//! the lines in the container log, next to the service's own shutdown messages, where
//! `kubectl logs` shows them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// PID 1's standard output, as seen from inside the container.
const PID1_STDOUT: &str = "/proc/1/fd/1";

/// The `--log-to` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogTo {
    /// PID 1's stdout when it can be opened for writing without blocking, else stderr.
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
            // service, and a single write of at most PIPE_BUF bytes to a pipe is not
            // interleaved with others, nor, in non-blocking mode, partly written: it is all
            // or nothing. Longer lines (a long URL) are cut to fit.
            match file.write_all(fit_pipe_buf(&line).as_bytes()) {
                Ok(()) => return,
                // The pipe is full (a slow log reader): this line goes to stderr rather
                // than holding up the preStop hook; the next one tries the pipe again.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.pid1 = None,
            }
        }
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// `line` (ending in a newline) cut to at most `PIPE_BUF` bytes, on a character boundary,
/// with `…` marking the cut and the newline kept.
fn fit_pipe_buf(line: &str) -> std::borrow::Cow<'_, str> {
    const PIPE_BUF: usize = libc::PIPE_BUF;
    const MARK: &str = "…\n";
    if line.len() <= PIPE_BUF {
        return line.into();
    }
    let mut end = PIPE_BUF - MARK.len();
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &line[..end]).into()
}

/// Opens PID 1's stdout; see [`open_log`].
fn open_pid1_stdout() -> io::Result<File> {
    open_log(Path::new(PID1_STDOUT))
}

/// Opens `path` for appending lines without ever blocking:
///
/// - in append mode: when it is a regular file, a plain write-open would start at offset 0
///   and overwrite the log;
/// - with `O_NONBLOCK`: when it is a pipe (or FIFO) that nobody reads, a blocking open
///   would wait for a reader forever; a non-blocking one fails at once with `ENXIO`. Writes
///   to a full pipe then fail with `EAGAIN` instead of stalling the hook. The flag belongs
///   to this open file description only, not to PID 1's own descriptor.
fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// A generous bound for what must not block at all.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A FIFO in a fresh directory (std has no mkfifo, and unsafe code is denied here).
    fn fifo(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lameduck-hook-log-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(std::fs::create_dir_all(&dir).is_ok());
        let path = dir.join("fifo");
        let made = Command::new("mkfifo").arg(&path).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
        path
    }

    /// Runs `f` on a thread; fails the test if it has not returned within [`PATIENCE`] (a
    /// blocked thread is left behind; the test process exits anyway).
    fn without_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, receive) = mpsc::channel();
        thread::spawn(move || {
            let _ = send.send(f());
        });
        match receive.recv_timeout(PATIENCE) {
            Ok(value) => value,
            Err(_) => panic!("blocked for {PATIENCE:?}"),
        }
    }

    #[test]
    fn a_pipe_nobody_reads_is_refused_at_once() {
        let path = fifo("no-reader");
        let opened = without_blocking({
            let path = path.clone();
            move || open_log(&path).map(drop)
        });
        let err = opened.err().map(|e| e.raw_os_error());
        assert_eq!(err, Some(Some(libc::ENXIO)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn a_long_line_is_cut_to_one_atomic_pipe_write() {
        use std::io::Read;
        let path = fifo("long-line");
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        let Ok(mut reader) = reader else {
            panic!("{reader:?}")
        };
        let opened = open_log(&path);
        assert!(opened.is_ok(), "{opened:?}");
        let mut log = HookLog {
            pid1: opened.ok(),
            prefix: "lameduck test",
        };
        // A long URL in a message, with multi-byte characters around the cut.
        let message = format!("GET http://h/{}", "é".repeat(6000));
        log.line(&message);
        assert!(log.pid1.is_some());
        let mut written = Vec::new();
        let _ = reader.read_to_end(&mut written);
        let written = String::from_utf8(written).unwrap_or_else(|e| panic!("{e}"));
        assert!(written.len() <= libc::PIPE_BUF, "{} bytes", written.len());
        assert!(written.ends_with("é…\n"), "{written:?}");
        assert!(written.starts_with("lameduck test: GET http://h/é"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn a_full_pipe_does_not_block_writes() {
        let path = fifo("full");
        // A reader that never reads, opened first so that the write-open succeeds.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        assert!(reader.is_ok(), "{reader:?}");
        let opened = open_log(&path);
        assert!(opened.is_ok(), "{opened:?}");
        let (kind, log) = without_blocking(move || {
            let mut file = opened.unwrap_or_else(|e| panic!("{e}"));
            // Fill the pipe (64 KiB by default) until the kernel says it is full.
            let chunk = [b'x'; 4096];
            let kind = loop {
                if let Err(err) = file.write_all(&chunk) {
                    break err.kind();
                }
            };
            // A line to the full pipe goes to stderr, and the pipe is kept for later.
            let mut log = HookLog {
                pid1: Some(file),
                prefix: "lameduck test",
            };
            log.line("the pipe is full; this line goes to stderr");
            (kind, log)
        });
        assert_eq!(kind, io::ErrorKind::WouldBlock);
        assert!(log.pid1.is_some(), "a full pipe is not given up on");
        drop(reader);
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }
}
