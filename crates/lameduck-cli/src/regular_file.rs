//! Opening the files of `lameduck once` (the key's lock and result files, in a directory
//! the operator chooses) so that whatever is found there cannot hang the command.
//!
//! A FIFO where a regular file is expected would block a plain `open(2)` until someone
//! opens the other end, which may be never; a device could block too, or do something on
//! open. So:
//!
//! - anything but a regular file (after following symlinks) is refused *before* opening,
//!   with an error that says what it is;
//! - the open itself is non-blocking (`O_NONBLOCK`, and `O_NOCTTY`), so a file swapped for
//!   a FIFO in between still cannot block it, and the opened file is checked again.
//!
//! `O_NONBLOCK` has no effect on regular files (reads and writes of a regular file never
//! return `EAGAIN` on Linux, and `flock(2)` has its own `LOCK_NB`), so the returned file
//! behaves like one opened without it.

use std::fs::{self, File, FileType, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` with `options` (never blocking), refusing anything but a regular file with
/// an [`io::ErrorKind::InvalidInput`] error such as "not a regular file (a FIFO)".
pub(crate) fn open(path: &Path, options: &OpenOptions) -> io::Result<File> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular(meta.file_type())),
        // Missing: `options` may create it.
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut options = options.clone();
    options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = options.open(path).map_err(|err| {
        // Replaced by something else since the check (a FIFO without a reader fails a
        // non-blocking write-open with ENXIO): say what it is rather than ENXIO.
        match fs::metadata(path) {
            Ok(meta) if !meta.is_file() => not_regular(meta.file_type()),
            _ => err,
        }
    })?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(not_regular(file_type));
    }
    Ok(file)
}

/// What a file type is, for messages: "a FIFO", "a directory"...
pub(crate) fn describe(file_type: FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "of an unknown type"
    }
}

/// The error for a file that is not a regular file.
fn not_regular(file_type: FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({})", describe(file_type)),
    )
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

    /// A fresh directory with a FIFO named `fifo` in it.
    fn dir_with_fifo(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lameduck-regular-file-test-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        assert!(fs::create_dir_all(&dir).is_ok());
        let made = Command::new("mkfifo").arg(dir.join("fifo")).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
        dir
    }

    /// Opens `path` with `options` on a thread; fails the test if that blocks.
    fn open_without_blocking(path: &Path, options: OpenOptions) -> io::Result<File> {
        let (send, receive) = mpsc::channel();
        let path = path.to_owned();
        thread::spawn(move || {
            let _ = send.send(open(&path, &options));
        });
        match receive.recv_timeout(PATIENCE) {
            Ok(result) => result,
            Err(_) => panic!("blocked for {PATIENCE:?}"),
        }
    }

    #[test]
    fn refuses_a_fifo_for_reading_and_writing_without_blocking() {
        let dir = dir_with_fifo("fifo");
        let fifo = dir.join("fifo");
        let mut read = OpenOptions::new();
        read.read(true);
        let mut write = OpenOptions::new();
        write.write(true).create(true).truncate(false);
        for options in [read, write] {
            let err = open_without_blocking(&fifo, options).err();
            let message = err.as_ref().map(ToString::to_string);
            assert_eq!(
                message.as_deref(),
                Some("not a regular file (a FIFO)"),
                "{err:?}"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_a_directory_and_a_device_opens_a_regular_file() {
        let dir = dir_with_fifo("others");
        let mut write = OpenOptions::new();
        write.write(true).create(true).truncate(false);
        let err = open_without_blocking(&dir, write.clone()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("not a regular file (a directory)")
        );
        let err = open_without_blocking(Path::new("/dev/null"), write.clone()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("not a regular file (a character device)")
        );
        let created = open_without_blocking(&dir.join("new"), write);
        assert!(created.is_ok(), "{created:?}");
        let mut read = OpenOptions::new();
        read.read(true);
        let missing = open_without_blocking(&dir.join("missing"), read).err();
        assert_eq!(missing.map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        let _ = fs::remove_dir_all(&dir);
    }
}
