//! Command-line durations: humantime syntax (`250ms`, `1s`, `1m 30s`).

use std::time::Duration;

/// Why a duration argument was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DurationError {
    /// Not humantime syntax.
    #[error("invalid duration {input:?} ({source}); examples: 250ms, 1s, 1m30s")]
    Syntax {
        /// What was given.
        input: String,
        /// The parser's reason.
        source: humantime::DurationError,
    },
    /// A zero timeout would fail every request before it starts.
    #[error("a timeout must be longer than zero")]
    ZeroTimeout,
}

/// Parses any duration, zero included (`--sleep 0s` is a valid no-op).
pub(crate) fn parse(input: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(input.trim()).map_err(|source| DurationError::Syntax {
        input: input.to_owned(),
        source,
    })
}

/// Parses a timeout: like [`parse`], but zero is refused.
pub(crate) fn parse_timeout(input: &str) -> Result<Duration, DurationError> {
    let duration = parse(input)?;
    if duration.is_zero() {
        return Err(DurationError::ZeroTimeout);
    }
    Ok(duration)
}

/// Formats a duration for messages (`1.002s`, `300ms`), rounded to milliseconds
/// because finer precision is noise in a log line.
pub(crate) fn display(duration: Duration) -> String {
    let millis = Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(millis).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humantime() {
        assert_eq!(parse("250ms").ok(), Some(Duration::from_millis(250)));
        assert_eq!(parse("1s").ok(), Some(Duration::from_secs(1)));
        assert_eq!(parse("0s").ok(), Some(Duration::ZERO));
        assert!(parse("1").is_err());
        assert!(parse("soon").is_err());
    }

    #[test]
    fn timeout_must_be_positive() {
        assert!(matches!(
            parse_timeout("0ms"),
            Err(DurationError::ZeroTimeout)
        ));
        assert_eq!(
            parse_timeout("300ms").ok(),
            Some(Duration::from_millis(300))
        );
    }

    #[test]
    fn displays_milliseconds() {
        assert_eq!(display(Duration::from_micros(1_002_400)), "1s 2ms");
        assert_eq!(display(Duration::from_millis(300)), "300ms");
    }
}
