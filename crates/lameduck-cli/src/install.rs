//! `lameduck install DIR`: copies the running binary to `DIR/lameduck`, for the init
//! container of an image without a shell (no `cp`): the main container then runs
//! `/shared/lameduck run -- ...` from the shared volume.
//!
//! The copy is atomic: a temporary file in `DIR` is written, flushed to disk and made
//! executable, then renamed over `DIR/lameduck`, so a reader sees the old file or the whole
//! new one, never a partial binary. Installing again (over the same or another file) is
//! fine. On failure the temporary file is removed.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::regular_file;

/// The installed file's name in `DIR`.
pub(crate) const FILE_NAME: &str = "lameduck";

/// Mode of the installed binary: `rwxr-xr-x`, whatever the umask.
const MODE: u32 = 0o755;

/// Why the binary could not be installed: what failed, on which path, and the OS error.
#[derive(Debug)]
pub(crate) struct InstallError {
    /// What was being done, with the path: "cannot read /proc/self/exe".
    what: String,
    /// The reason.
    source: io::Error,
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `error` while doing `what`.
fn failed(what: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError { what, source }
}

/// Installs the running binary as `dir/lameduck`; the installed path.
pub(crate) fn run(dir: &Path) -> Result<PathBuf, InstallError> {
    check_dir(dir)?;
    let (source_path, mut source) = open_running_binary()?;
    let destination = dir.join(FILE_NAME);
    let (temp_path, mut temp) = create_temp(dir)?;
    let written = (|| {
        io::copy(&mut source, &mut temp).map_err(failed(format!(
            "cannot copy {} to {}",
            source_path.display(),
            temp_path.display()
        )))?;
        // fchmod: the umask does not apply, unlike the mode given at creation.
        temp.set_permissions(fs::Permissions::from_mode(MODE))
            .map_err(failed(format!(
                "cannot make {} executable",
                temp_path.display()
            )))?;
        temp.sync_all().map_err(failed(format!(
            "cannot flush {} to disk",
            temp_path.display()
        )))?;
        drop(temp);
        fs::rename(&temp_path, &destination).map_err(failed(format!(
            "cannot rename {} to {}",
            temp_path.display(),
            destination.display()
        )))
    })();
    if let Err(err) = written {
        // Best effort: the error to report is the one above.
        let _ = fs::remove_file(&temp_path);
        return Err(err);
    }
    sync_dir(dir)?;
    Ok(destination)
}

/// `dir` must exist and be a directory (a symlink to one is fine); it is not created.
fn check_dir(dir: &Path) -> Result<(), InstallError> {
    let what = || format!("cannot install into {}", dir.display());
    let meta = fs::metadata(dir).map_err(failed(what()))?;
    if !meta.is_dir() {
        return Err(InstallError {
            what: format!("{} ({})", what(), regular_file::describe(meta.file_type())),
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    Ok(())
}

/// The running binary, opened for reading, and its path for messages. On Linux it is read
/// through `/proc/self/exe`, which is the running file even if its path has been replaced
/// or removed since it started (installing over itself, for one).
fn open_running_binary() -> Result<(PathBuf, File), InstallError> {
    #[cfg(target_os = "linux")]
    {
        let proc_exe = Path::new("/proc/self/exe");
        if let Ok(file) = File::open(proc_exe) {
            let shown = std::env::current_exe().unwrap_or_else(|_| proc_exe.to_owned());
            return Ok((shown, file));
        }
    }
    let path =
        std::env::current_exe().map_err(failed("cannot find the running lameduck binary"))?;
    let file = File::open(&path).map_err(failed(format!("cannot read {}", path.display())))?;
    Ok((path, file))
}

/// A new file `dir/.lameduck.tmp.<pid>.<nanos>.<n>`, created exclusively (never an existing
/// file or a symlink), readable and writable by its owner only until it is complete.
fn create_temp(dir: &Path) -> Result<(PathBuf, File), InstallError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut attempts = 0;
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            ".{FILE_NAME}.tmp.{}.{nanos}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            // Another installer's (in another PID namespace sharing the volume), or a
            // leftover: never touched, another name is tried.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempts < 10 => {
                attempts += 1;
            }
            Err(err) => return Err(failed(format!("cannot create {}", path.display()))(err)),
        }
    }
}

/// Flushes `dir`'s entries, so the rename survives a crash. File systems that cannot sync
/// a directory (EINVAL, some network and FUSE ones) are not an error: the rename is done.
fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    let what = || format!("cannot flush {} to disk", dir.display());
    let handle = File::open(dir).map_err(failed(what()))?;
    match handle.sync_all() {
        Ok(()) => Ok(()),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(failed(what())(err)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lameduck-install-unit-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn temp_names_are_unique_and_hidden() {
        let dir = scratch("temp-names");
        let (a, _) = create_temp(&dir).unwrap();
        let (b, _) = create_temp(&dir).unwrap();
        assert_ne!(a, b);
        for path in [&a, &b] {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(".lameduck.tmp."), "{name}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_path_and_the_os_error() {
        let dir = scratch("errors");
        let missing = dir.join("missing");
        let err = run(&missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("os error 2"), "{err}");
        let file = dir.join("file");
        fs::write(&file, b"x").unwrap();
        let err = run(&file).unwrap_err().to_string();
        assert!(
            err.contains("(a regular file): Not a directory (os error 20)"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
