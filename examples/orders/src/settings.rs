//! The example's own settings (the lifecycle's come from `Lifecycle::from_env`). A bad
//! value stops the service at start with a message naming the variable and the value.

use std::path::PathBuf;
use std::time::Duration;

pub struct Settings {
    pub port: u16,
    pub state: PathBuf,
    pub work_time: Duration,
    pub warmup: Duration,
    pub queue_capacity: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} {why}")]
pub struct SettingsError {
    var: &'static str,
    value: String,
    why: &'static str,
}

fn read<T>(
    var: &'static str,
    default: T,
    parse: impl Fn(&str) -> Option<T>,
    why: &'static str,
) -> Result<T, SettingsError> {
    match std::env::var(var) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(value)) => Err(SettingsError {
            var,
            value: value.to_string_lossy().into_owned(),
            why: "is not valid UTF-8",
        }),
        Ok(value) => parse(value.trim()).ok_or(SettingsError { var, value, why }),
    }
}

fn duration(value: &str) -> Option<Duration> {
    humantime::parse_duration(value).ok()
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            port: read("PORT", 8080, |v| v.parse().ok(), "is not a port number")?,
            state: read(
                "ORDERS_STATE",
                std::env::temp_dir().join("orders-state.json"),
                |v| (!v.is_empty()).then(|| PathBuf::from(v)),
                "is not a file path",
            )?,
            work_time: read(
                "ORDERS_WORK_TIME",
                Duration::from_millis(50),
                duration,
                "is not a duration (e.g. 50ms, 2s)",
            )?,
            warmup: read(
                "ORDERS_WARMUP",
                Duration::from_millis(200),
                duration,
                "is not a duration (e.g. 200ms, 1s)",
            )?,
            queue_capacity: read(
                "ORDERS_QUEUE_CAPACITY",
                10_000,
                |v| v.parse().ok().filter(|n| *n > 0),
                "is not a positive number",
            )?,
        })
    }
}
