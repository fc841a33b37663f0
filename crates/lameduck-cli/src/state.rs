//! The result file of a `lameduck once` key: how the last finished run ended.
//!
//! The file is replaced atomically (temporary file, fsync, rename, fsync of the directory),
//! so a reader sees the previous result or the new one, never a torn write, and a result
//! that was reported is still there after a power loss.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::regular_file;

/// How a finished run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunResult {
    /// Counts finished runs of the key, from 1. Lets a waiting invocation tell a run that
    /// finished while it waited from one that finished before it arrived.
    pub(crate) generation: u64,
    /// The command's exit code (128 + signal number when a signal ended it).
    pub(crate) exit_code: i32,
}

impl RunResult {
    /// Whether the command succeeded, i.e. the key is done for good.
    pub(crate) fn succeeded(&self) -> bool {
        self.exit_code == 0
    }
}

/// Why the result file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// I/O on the file or its directory.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Contents that this program did not write.
    #[error("{path} is not a result file ({reason}); delete it to reset the key")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The most bytes read from a result file: what this program writes is a few dozen.
const MAX_RESULT_BYTES: u64 = 4096;

/// Reads the result file; `None` if no run has finished yet. Anything but a regular file
/// there (a FIFO, a device) is refused without blocking, and at most
/// [`MAX_RESULT_BYTES`] are read.
pub(crate) fn read(path: &Path) -> Result<Option<RunResult>, StateError> {
    let io_error = |source| StateError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    };
    let file = match regular_file::open(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(source)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RESULT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_RESULT_BYTES {
        return Err(StateError::Corrupt {
            path: path.to_owned(),
            reason: format!("larger than {MAX_RESULT_BYTES} bytes"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| StateError::Corrupt {
        path: path.to_owned(),
        reason: "not UTF-8".to_owned(),
    })?;
    parse(&text)
        .map(Some)
        .map_err(|reason| StateError::Corrupt {
            path: path.to_owned(),
            reason,
        })
}

/// Replaces the result file atomically with `result`.
pub(crate) fn write(path: &Path, result: RunResult) -> Result<(), StateError> {
    let io_error = |action, path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    };
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".tmp");
    let temp = PathBuf::from(temp_name);
    // A fixed temporary name is enough: only the holder of the key's lock writes. What is
    // there is opened as `regular_file` does: a FIFO is refused instead of blocking.
    let mut file = regular_file::open(
        &temp,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
    .map_err(io_error("creating", &temp))?;
    file.write_all(format(result).as_bytes())
        .map_err(io_error("writing", &temp))?;
    file.sync_all().map_err(io_error("syncing", &temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io_error("renaming into place", path))?;
    // The rename is durable only once the directory entry is.
    if let Some(dir) = path.parent() {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
            .open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("syncing directory", dir))?;
    }
    Ok(())
}

/// The file format: `key value` lines, meant to be read by people too.
fn format(result: RunResult) -> String {
    format!(
        "generation {}\nexit_code {}\n",
        result.generation, result.exit_code
    )
}

/// Parses [`format()`]'s output; unknown lines are ignored so later versions can add some.
fn parse(text: &str) -> Result<RunResult, String> {
    let mut generation = None;
    let mut exit_code = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("generation", value)) => {
                generation = Some(
                    value
                        .trim()
                        .parse::<u64>()
                        .map_err(|e| format!("generation: {e}"))?,
                );
            }
            Some(("exit_code", value)) => {
                exit_code = Some(
                    value
                        .trim()
                        .parse::<i32>()
                        .map_err(|e| format!("exit_code: {e}"))?,
                );
            }
            _ => {}
        }
    }
    match (generation, exit_code) {
        (Some(generation), Some(exit_code)) => Ok(RunResult {
            generation,
            exit_code,
        }),
        _ => Err("missing generation or exit_code".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let result = RunResult {
            generation: 7,
            exit_code: 143,
        };
        assert_eq!(parse(&format(result)), Ok(result));
    }

    #[test]
    fn rejects_foreign_contents() {
        assert!(parse("").is_err());
        assert!(parse("generation x\nexit_code 0\n").is_err());
        assert!(parse("generation 1\n").is_err());
        assert_eq!(
            parse("future stuff\ngeneration 1\nexit_code 3\n").map(|r| r.exit_code),
            Ok(3)
        );
    }

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("lameduck-state-test-{}", std::process::id()));
        assert!(fs::create_dir_all(&dir).is_ok());
        let path = dir.join("k.result");
        assert!(matches!(read(&path), Ok(None)));
        let result = RunResult {
            generation: 1,
            exit_code: 0,
        };
        assert!(write(&path, result).is_ok());
        assert_eq!(read(&path).ok().flatten(), Some(result));
        assert!(!dir.join("k.result.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
