//! What the lifecycle logs: every transition with its timing, and the summary.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lameduck::Lifecycle;

/// Captures what the lifecycle logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn each_transition_and_the_summary_are_logged_with_their_timing() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Global, and alone in its own test binary: tracing caches per-callsite interest
    // process-wide, so a thread-local subscriber can miss events other tests' threads saw first.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let lifecycle = Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .shutdown_delay(Duration::from_secs(2))
        .build()
        .unwrap();
    let run = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.run().await }
    });
    lifecycle.ready().await;
    lifecycle.shutdown();
    run.await.unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for (from, to) in [
        ("starting", "ready"),
        ("ready", "draining"),
        ("draining", "stopping"),
        ("stopping", "stopped"),
    ] {
        let line = log
            .lines()
            .find(|l| {
                l.contains("lifecycle state changed") && l.contains(&format!("from={from} to={to}"))
            })
            .unwrap_or_else(|| panic!("no {from} -> {to} line in:\n{log}"));
        assert!(line.contains("after_ms="), "{line}");
    }
    assert!(
        log.contains("from=draining to=stopping after_ms=2000"),
        "{log}"
    );
    assert!(log.contains("shutdown complete reason=api"), "{log}");
}
