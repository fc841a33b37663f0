//! How the example services log, in one place so they all log the same way. A service of
//! your own can copy [`init`], [`colour`] and [`LogFormatError`] (about 40 lines, with
//! `tracing-subscriber`'s `env-filter`, `fmt` and `json` features); nothing here is part
//! of the lameduck SDK.
//!
//! - `RUST_LOG` filters what is logged, as `tracing-subscriber` reads it; `info` when it
//!   is unset or empty.
//! - `LOG_FORMAT` picks the format of each line on stdout: `text` (the default) for
//!   people, `json` for a log pipeline (one JSON object per line: `timestamp`, `level`,
//!   `fields` with `message` and the event's fields, `target`). Any other value, an empty
//!   one included, is an error naming the variable and the value.
//! - Text is coloured (ANSI escapes) only when stdout is a terminal and `NO_COLOR` is
//!   unset or empty (<https://no-color.org>): under `kubectl logs`, `podman logs` or any
//!   pipe the lines are plain.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Log to stdout as `RUST_LOG` and `LOG_FORMAT` say; call it first in `main`.
///
/// # Errors
///
/// `LOG_FORMAT` set to anything but `text` or `json`. Nothing is logged then: the caller
/// reports the error the way it reports its other configuration errors.
pub fn init() -> Result<(), LogFormatError> {
    let json = match std::env::var_os("LOG_FORMAT") {
        None => false,
        Some(value) if value == "text" => false,
        Some(value) if value == "json" => true,
        Some(value) => return Err(LogFormatError(value.to_string_lossy().into_owned())),
    };
    // Unset or empty: `info`. A directive that does not parse is skipped, said on stderr.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        let no_color = std::env::var_os("NO_COLOR");
        logs.with_ansi(colour(std::io::stdout().is_terminal(), no_color.as_deref()))
            .init();
    }
    Ok(())
}

/// Whether text logs are coloured: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string.
pub fn colour(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// `LOG_FORMAT` holds a value that is not a log format.
#[derive(Debug)]
pub struct LogFormatError(String);

impl std::fmt::Display for LogFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LOG_FORMAT={:?} is not a log format: `text` (the default) or `json`",
            self.0
        )
    }
}

impl std::error::Error for LogFormatError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(true, Some(OsStr::new("0"))), "any non-empty value");
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn the_error_names_the_variable_and_the_value() {
        let message = LogFormatError("xml".into()).to_string();
        assert!(message.contains("LOG_FORMAT=\"xml\""), "{message}");
        assert!(
            message.contains("text") && message.contains("json"),
            "{message}"
        );
    }
}
