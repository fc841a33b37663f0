//! The lifecycle's states and the reasons a shutdown can start (docs/shutdown-timeline.md).

use std::fmt;

use crate::signal::Signal;

/// Where a [`Lifecycle`](crate::Lifecycle) is. States only move forward, in this order;
/// a trigger before `Ready` goes straight from `Starting` to `Draining`.
///
/// | state | readiness | accepts connections |
/// |---|---|---|
/// | `Starting` | fails (`starting`) | yes |
/// | `Ready` | passes if every readiness check does | yes |
/// | `Draining` (lame duck) | fails (`draining`) | yes, and serves them |
/// | `Stopping` | fails | no: listeners are closed, in-flight work finishes |
/// | `Stopped` | — | — |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum State {
    /// Startup hooks are running or readiness is held back.
    Starting,
    /// Serving, and ready for traffic.
    Ready,
    /// Lame duck: still serving, readiness failing, waiting for the platform to stop routing.
    Draining,
    /// Listeners closed; in-flight requests, tracked tasks and hooks are finishing.
    Stopping,
    /// Everything is done or abandoned; the report is written.
    Stopped,
}

impl State {
    /// The state's name in lower case, as used in health output and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Starting,
            1 => Self::Ready,
            2 => Self::Draining,
            3 => Self::Stopping,
            _ => Self::Stopped,
        }
    }

    /// Whether shutdown has begun (`Draining` or later).
    pub fn is_shutting_down(self) -> bool {
        self >= Self::Draining
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why shutdown started: the first trigger's reason, as written in the report
/// (`"signal:SIGTERM"`, `"prestop"`, `"api"`, `"task:NAME"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A configured signal arrived.
    Signal(Signal),
    /// The platform's preStop hook called `/shutdown`.
    PreStop,
    /// The application called [`Lifecycle::shutdown`](crate::Lifecycle::shutdown).
    Api,
    /// A critical task failed or ended (see
    /// [`Lifecycle::spawn_critical`](crate::Lifecycle::spawn_critical)).
    Task(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signal(signal) => write!(f, "signal:{signal}"),
            Self::PreStop => f.write_str("prestop"),
            Self::Api => f.write_str("api"),
            Self::Task(name) => write!(f, "task:{name}"),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_documented() {
        assert_eq!(Reason::Signal(Signal::Term).to_string(), "signal:SIGTERM");
        assert_eq!(Reason::Signal(Signal::Int).to_string(), "signal:SIGINT");
        assert_eq!(Reason::PreStop.to_string(), "prestop");
        assert_eq!(Reason::Api.to_string(), "api");
        assert_eq!(Reason::Task("db".into()).to_string(), "task:db");
    }

    #[test]
    fn states_round_trip_through_their_number() {
        for state in [
            State::Starting,
            State::Ready,
            State::Draining,
            State::Stopping,
            State::Stopped,
        ] {
            assert_eq!(State::from_u8(state as u8), state);
        }
    }

    #[test]
    fn states_are_ordered() {
        assert!(State::Starting < State::Ready);
        assert!(State::Ready < State::Draining);
        assert!(State::Draining < State::Stopping);
        assert!(State::Stopping < State::Stopped);
        assert!(State::Draining.is_shutting_down());
        assert!(!State::Ready.is_shutting_down());
    }
}
