//! `lameduck wait-ready URL`: waits until a service answers like a ready probe, for
//! postStart hooks and start-up ordering (an init container waiting for a dependency).
//!
//! The probe is `lameduck run --ready`'s ([`ReadyProbe`]): `http://` is ready at 200–399
//! (redirects as `lameduck probe` follows them), `tcp://` when a connection is accepted;
//! each attempt has the kubelet's 1 s timeout. Attempts start every [`POLL`] until one
//! succeeds or the timeout passes.

use std::time::Duration;

use tokio::time::Instant;

use crate::duration;
use crate::run::ReadyProbe;

/// How often an attempt starts (one that takes longer is followed by the next at once).
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// How the wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ready, after this long.
    Ready(Duration),
    /// Not ready at the timeout; the last attempt's reason.
    TimedOut(String),
    /// No runtime could be started.
    Internal(String),
}

/// Parses the URL: `http://HOST:PORT/PATH` or `tcp://HOST:PORT`. Messages never show
/// credentials.
pub(crate) fn parse(text: &str) -> Result<ReadyProbe, String> {
    let shown = crate::target::redact(text);
    if !(text.starts_with("http://") || text.starts_with("tcp://")) {
        return Err(format!(
            "wait-ready takes http://HOST:PORT/PATH or tcp://HOST:PORT, not {shown}"
        ));
    }
    if text.starts_with("tcp://") && text.contains('@') {
        // `ReadyProbe::parse` would take `user:pw@host` for a host name, and its
        // messages quote the input as given.
        return Err(format!(
            "{shown:?}: a tcp:// address is tcp://HOST:PORT, without credentials"
        ));
    }
    ReadyProbe::parse(text)
}

/// Waits for `probe` to succeed, at most `timeout`.
pub(crate) fn run(probe: &ReadyProbe, timeout: Duration) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Outcome::Internal(format!("cannot start: {error}")),
    };
    let outcome = runtime.block_on(wait(probe, timeout));
    // An attempt cut off at the deadline may leave a connection behind: not waited for.
    runtime.shutdown_background();
    outcome
}

/// The polling loop.
async fn wait(probe: &ReadyProbe, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let attempt = Instant::now();
        let reason = match tokio::time::timeout_at(deadline, probe.check()).await {
            Ok(Ok(())) => return Outcome::Ready(started.elapsed()),
            Ok(Err(reason)) => reason,
            Err(_) => format!(
                "{probe}: no answer within {} (cut off at the timeout)",
                duration::display(attempt.elapsed())
            ),
        };
        let next = (attempt + POLL).min(deadline);
        tokio::time::sleep_until(next).await;
        if Instant::now() >= deadline {
            return Outcome::TimedOut(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_other_schemes_and_credentials_without_showing_them() {
        for bad in [
            "ftp://x/",
            "https://h/",
            "h:80",
            "tcp://h",
            "tcp://user:secret@h:80",
            "tcp://user:secret@h",
            "http://user:secret@h:80/",
            "ftp://user:secret@h/",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!err.contains("secret"), "{bad}: {err}");
            assert!(!err.contains("--ready"), "{bad}: {err}");
        }
        assert!(parse("http://127.0.0.1:8080/healthz").is_ok());
        assert!(parse("tcp://127.0.0.1:5432").is_ok());
    }

    #[tokio::test]
    async fn ready_at_once_and_timing_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
        assert!(matches!(
            wait(&probe, Duration::from_secs(5)).await,
            Outcome::Ready(_)
        ));
        drop(listener);
        let started = Instant::now();
        match wait(&probe, Duration::from_millis(500)).await {
            Outcome::TimedOut(reason) => assert!(reason.contains("tcp://127.0.0.1"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(500));
    }
}
