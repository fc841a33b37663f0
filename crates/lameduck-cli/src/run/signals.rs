//! The signals the supervisor hears: the shutdown triggers, the ones it forwards to the
//! child, and SIGCHLD for the reaper; and `--stop-signal`'s names.

use std::io;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

/// What the supervisor does with a signal it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// SIGTERM or SIGINT: start shutdown; a second one sends the stop signal at once.
    Shutdown(Signal),
    /// Passed on to the child, as tini does.
    Forward(Signal),
    /// A child (or an adopted orphan) changed state: reap.
    Child,
}

/// The shutdown triggers, as the SDK's defaults.
const SHUTDOWN: [Signal; 2] = [Signal::SIGTERM, Signal::SIGINT];

/// Forwarded to the child. SIGTSTP too: the child decides what stopping means, as under
/// tini; SIGTTIN and SIGTTOU keep their default action on the supervisor.
const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTSTP,
];

/// Every signal the supervisor handles, registered at once (before the child is started,
/// so that none arriving in between keeps its default action, which would end or stop the
/// supervisor).
pub(crate) struct Signals {
    streams: Vec<(Heard, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub(crate) fn register() -> io::Result<Self> {
        let mut streams = Vec::new();
        for sig in SHUTDOWN {
            streams.push((
                Heard::Shutdown(sig),
                signal(SignalKind::from_raw(sig as i32))?,
            ));
        }
        for sig in FORWARDED {
            streams.push((
                Heard::Forward(sig),
                signal(SignalKind::from_raw(sig as i32))?,
            ));
        }
        streams.push((Heard::Child, signal(SignalKind::child())?));
        Ok(Self { streams })
    }

    /// The next signal heard. Signals of one kind that arrive together may be delivered
    /// as one, as the kernel does.
    pub(crate) async fn next(&mut self) -> Heard {
        std::future::poll_fn(|cx| {
            for (heard, stream) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*heard);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// `--stop-signal`'s value: `SIGQUIT`, `QUIT`, `sigquit` or a number (`3`).
pub(crate) fn parse_signal(text: &str) -> Result<Signal, String> {
    let trimmed = text.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("{number} is not a signal number"));
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match name.parse::<Signal>() {
        Ok(Signal::SIGKILL | Signal::SIGSTOP) => Err(format!(
            "{name} cannot be a stop signal: the child could not stop gracefully on it"
        )),
        Ok(signal) => Ok(signal),
        Err(_) => Err(format!(
            "{text:?} is not a signal name (expected e.g. SIGTERM, SIGQUIT, QUIT, 3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stop_signals_by_name_or_number() {
        for text in ["SIGQUIT", "QUIT", "quit", "SigQuit", "3", " SIGQUIT "] {
            assert_eq!(parse_signal(text), Ok(Signal::SIGQUIT), "{text}");
        }
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGWINCH"), Ok(Signal::SIGWINCH));
    }

    #[test]
    fn bad_stop_signals_are_named() {
        for text in ["NOPE", "SIGNOPE", "", "99", "-1"] {
            let err = parse_signal(text).unwrap_err();
            assert!(!err.is_empty(), "{text}");
        }
        assert!(parse_signal("KILL").unwrap_err().contains("SIGKILL"));
        assert!(parse_signal("SIGSTOP").unwrap_err().contains("SIGSTOP"));
    }
}
