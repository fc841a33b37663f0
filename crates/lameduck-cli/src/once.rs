//! `lameduck once`: once-per-container execution for hooks the platform delivers at least
//! once (the state lives in the container's file system, not the pod's or the cluster's).
//!
//! Per key, in the state directory:
//! - `KEY.lock`: an empty file; whoever holds its exclusive `flock` is the runner. The
//!   kernel drops the lock when the holder dies, however it dies.
//! - `KEY.result`: how the last finished run ended ([`crate::state`]), written by the runner
//!   before it releases the lock. Exit code 0 there means "done": later invocations exit 0
//!   without running anything.
//!
//! The command inherits the locked descriptor, so if the runner is killed the key stays
//! locked until the command *and every process it started* have exited: a new run can
//! never overlap a remnant of the previous one. A runner that finishes normally unlocks
//! explicitly, which also frees the key from background processes the command left behind.
//!
//! An invocation reads the result's generation *before* taking the lock. Once it holds the
//! lock, a newer generation means a run finished while it waited, and it exits with that
//! run's code; the same generation means nobody finished (no run, or the runner died
//! mid-run), and it runs the command itself. So a crash leaves the key runnable, a failure
//! is retried by the next invocation, and concurrent invocations share one run.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::child;
use crate::regular_file;
use crate::state::{self, RunResult, StateError};

/// Longest accepted key: keeps `KEY.result.tmp` well under file name limits.
pub(crate) const MAX_KEY_LEN: usize = 128;

/// A validated key: 1 to 128 of `[A-Za-z0-9._-]`, so it is always a plain file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key(String);

/// Why a key was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// Empty.
    #[error("the key is empty")]
    Empty,
    /// Too long.
    #[error("the key is {0} characters long; at most {MAX_KEY_LEN} are allowed")]
    TooLong(usize),
    /// A character outside the allowed set.
    #[error("the key contains {0:?}; only letters, digits, '.', '_' and '-' are allowed")]
    BadChar(char),
}

impl Key {
    /// Validates a key.
    pub(crate) fn parse(input: &str) -> Result<Self, KeyError> {
        if input.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(bad) = input
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(KeyError::BadChar(bad));
        }
        if input.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(input.len()));
        }
        Ok(Self(input.to_owned()))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why `once` could not decide whether to run (the command was not started).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OnceError {
    /// The state directory cannot be created.
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The result file cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs `command` under `key` unless a run already succeeded or is finishing; returns the
/// exit code this invocation should exit with.
pub(crate) fn run(key: &Key, state_dir: &Path, command: &[OsString]) -> Result<i32, OnceError> {
    fs::create_dir_all(state_dir).map_err(|source| OnceError::StateDir {
        path: state_dir.to_owned(),
        source: match fs::metadata(state_dir) {
            // "File exists" would not say what is wrong.
            Ok(meta) if !meta.is_dir() => io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "it exists and is not a directory ({})",
                    regular_file::describe(meta.file_type())
                ),
            ),
            _ => source,
        },
    })?;
    let result_path = state_dir.join(format!("{key}.result"));
    let lock_path = state_dir.join(format!("{key}.lock"));

    let seen = state::read(&result_path)?;
    if let Some(done) = seen.filter(RunResult::succeeded) {
        note(
            key,
            &format!("already succeeded (run {}); not running", done.generation),
        );
        return Ok(0);
    }
    let seen_generation = seen.map_or(0, |r| r.generation);

    let lock = lock(&lock_path, key)?;
    let now = state::read(&result_path)?;
    if let Some(result) = now {
        if result.succeeded() {
            note(
                key,
                &format!("succeeded in run {}; not running", result.generation),
            );
            return Ok(0);
        }
        if result.generation > seen_generation {
            note(
                key,
                &format!(
                    "the concurrent run {} failed with exit code {}; reporting it",
                    result.generation, result.exit_code
                ),
            );
            return Ok(result.exit_code);
        }
    }

    let generation = now.map_or(0, |r| r.generation) + 1;
    // The command inherits the locked descriptor (see `child::run`): if this process is
    // killed, the key stays locked until the command and all it started have exited.
    let exit_code = child::run(command, Some(lock.as_fd()));
    let result = RunResult {
        generation,
        exit_code,
    };
    if let Err(err) = state::write(&result_path, result) {
        // The command has run; its exit code is the truthful answer. Not recording it only
        // means a later invocation runs the command again.
        note(
            key,
            &format!(
                "could not record the result ({err}); a later invocation will run the command again"
            ),
        );
    }
    // Unlock explicitly: closing our descriptor is not enough, since processes the command
    // left behind (background jobs) share the lock through the inherited descriptor.
    // Unlocking the shared open file description releases it for all of them, and the
    // result is recorded, so nothing stays blocked on a finished run.
    if let Err(err) = lock.unlock() {
        note(
            key,
            &format!("could not unlock {}: {err}", lock_path.display()),
        );
    }
    drop(lock);
    Ok(exit_code)
}

/// Opens and exclusively locks the key's lock file, waiting for the current holder.
/// Anything but a regular file there (a FIFO, a device) is refused without blocking.
fn lock(path: &Path, key: &Key) -> Result<File, OnceError> {
    let lock_error = |source| OnceError::Lock {
        path: path.to_owned(),
        source,
    };
    let file = regular_file::open(
        path,
        OpenOptions::new().create(true).truncate(false).write(true),
    )
    .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            note(
                key,
                "another invocation is running the command; waiting for it",
            );
            file.lock().map_err(lock_error)?;
        }
        Err(TryLockError::Error(err)) => return Err(lock_error(err)),
    }
    Ok(file)
}

/// A line on stderr, the command's own output being on stdout.
fn note(key: &Key, message: &str) {
    eprintln!("lameduck once: key {key}: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_validation() {
        assert!(Key::parse("post-start.migrate_v2").is_ok());
        assert!(matches!(Key::parse(""), Err(KeyError::Empty)));
        assert!(matches!(Key::parse("a/b"), Err(KeyError::BadChar('/'))));
        assert!(matches!(Key::parse("a b"), Err(KeyError::BadChar(' '))));
        assert!(matches!(Key::parse("é"), Err(KeyError::BadChar('é'))));
        assert!(Key::parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(matches!(
            Key::parse(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong(129))
        ));
    }
}
