//! The terminating signals a lifecycle listens to.
//!
//! tokio installs its own handler the first time a signal is listened to and never restores
//! the default disposition, so after that a second SIGTERM or Ctrl-C would no longer kill the
//! process. The lifecycle therefore keeps listening after the first signal and forces the
//! exit itself (see [`Builder::force_on_second_signal`](crate::Builder::force_on_second_signal)).

use std::fmt;

use tokio::signal::unix::SignalKind;

/// A Unix signal that can trigger shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGTERM`: what the kubelet and most supervisors send.
    Term,
    /// `SIGINT`: Ctrl-C in a terminal.
    Int,
    /// `SIGQUIT`.
    Quit,
    /// `SIGHUP`.
    Hup,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
}

impl Signal {
    /// The conventional name, e.g. `"SIGTERM"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Int => "SIGINT",
            Self::Quit => "SIGQUIT",
            Self::Hup => "SIGHUP",
            Self::Usr1 => "SIGUSR1",
            Self::Usr2 => "SIGUSR2",
        }
    }

    /// The signal's number on this platform.
    pub fn number(self) -> i32 {
        match self {
            Self::Term => libc::SIGTERM,
            Self::Int => libc::SIGINT,
            Self::Quit => libc::SIGQUIT,
            Self::Hup => libc::SIGHUP,
            Self::Usr1 => libc::SIGUSR1,
            Self::Usr2 => libc::SIGUSR2,
        }
    }

    pub(crate) fn kind(self) -> SignalKind {
        SignalKind::from_raw(self.number())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Listens to every configured signal at once; each `recv` yields the next one to arrive.
pub(crate) struct SignalListener {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl SignalListener {
    pub(crate) fn new(signals: &[Signal]) -> std::io::Result<Self> {
        let streams = signals
            .iter()
            .map(|&s| tokio::signal::unix::signal(s.kind()).map(|stream| (s, stream)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { streams })
    }

    /// The next signal; pends forever when no signal is configured.
    pub(crate) async fn recv(&mut self) -> Signal {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for (signal, stream) in &mut self.streams {
                if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return std::task::Poll::Ready(*signal);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(Signal::Term.to_string(), "SIGTERM");
        assert_eq!(Signal::Int.name(), "SIGINT");
        assert_eq!(Signal::Term.number(), 15);
        assert_eq!(Signal::Int.number(), 2);
    }
}
