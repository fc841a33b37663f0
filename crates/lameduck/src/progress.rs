//! The termination message while the shutdown runs: written when shutdown begins and at
//! each state change after it, then replaced by the final report, so that a process
//! killed before its report (a SIGKILL that came early: a shorter grace period, an
//! eviction, a preStop hook that ate the budget) still tells `kubectl describe pod` that
//! it was shutting down, why, in which state and what it was waiting for.
//!
//! Every message goes through one writer thread, in order, so a slow write of an earlier
//! message can never land after the final report. Sending never waits: the driver hands
//! the bytes over and goes on; only the final report's write is awaited, and that for a
//! bounded time (the driver's).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::report::MAX_REPORT_BYTES;
use crate::{Reason, State};

/// What a progress message says. Field names are part of the documented termination
/// message (docs/guarantees.md).
#[derive(Debug, Serialize)]
pub(crate) struct Progress {
    pub(crate) reason: String,
    /// Always false: the shutdown is not over. The final report replaces this message.
    pub(crate) clean: bool,
    /// Always true, so a reader tells a progress message from a final report.
    pub(crate) in_progress: bool,
    pub(crate) state: State,
    pub(crate) since_trigger_ms: u64,
    pub(crate) pending: Pending,
}

/// What the shutdown still waits for.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Pending {
    pub(crate) connections: usize,
    pub(crate) requests: usize,
    /// Tracked tasks still running, by name.
    pub(crate) tasks: Vec<String>,
    /// Holds not yet released, by name.
    pub(crate) holds: Vec<String>,
}

/// Names kept in a message at most, each at most this many characters: the message must
/// stay under [`MAX_REPORT_BYTES`] whatever the application named things.
const NAMES_KEPT: usize = 16;
const NAME_CHARS: usize = 64;

impl Progress {
    pub(crate) fn new(reason: &Reason, state: State, since_trigger: Duration) -> Self {
        Self {
            reason: reason.to_string(),
            clean: false,
            in_progress: true,
            state,
            since_trigger_ms: u64::try_from(since_trigger.as_millis()).unwrap_or(u64::MAX),
            pending: Pending::default(),
        }
    }

    /// The message as JSON of at most [`MAX_REPORT_BYTES`]: a long list of names keeps
    /// its first ones and ends with `"… N more"`, and is replaced by its count if the
    /// message is still too long.
    pub(crate) fn to_json(&self) -> String {
        let mut shortened = Pending {
            connections: self.pending.connections,
            requests: self.pending.requests,
            tasks: shorten(&self.pending.tasks),
            holds: shorten(&self.pending.holds),
        };
        let json = |pending: &Pending| {
            serde_json::json!({
                "reason": self.reason,
                "clean": self.clean,
                "in_progress": self.in_progress,
                "state": self.state,
                "since_trigger_ms": self.since_trigger_ms,
                "pending": pending,
            })
            .to_string()
        };
        let full = json(&shortened);
        if full.len() <= MAX_REPORT_BYTES {
            return full;
        }
        shortened.tasks = vec![format!("{} tasks", self.pending.tasks.len())];
        shortened.holds = vec![format!("{} holds", self.pending.holds.len())];
        json(&shortened)
    }
}

fn shorten(names: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = names
        .iter()
        .take(NAMES_KEPT)
        .map(|n| n.chars().take(NAME_CHARS).collect())
        .collect();
    if names.len() > NAMES_KEPT {
        kept.push(format!("… {} more", names.len() - NAMES_KEPT));
    }
    kept
}

/// A message for the writer thread, and whom to tell once it is written.
type Job = (Vec<u8>, Option<Box<dyn FnOnce(std::io::Result<()>) + Send>>);

/// The termination log's writer for one shutdown: one thread, messages in order.
pub(crate) struct ProgressLog {
    jobs: mpsc::Sender<Job>,
}

impl ProgressLog {
    /// The writer of `path`; `None` (and a warning) if its thread cannot start, in which
    /// case only the final report is written, as before.
    pub(crate) fn start(path: &Path) -> Option<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let path: PathBuf = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("lameduck-termination-log".into())
            .spawn(move || {
                for (bytes, done) in queue {
                    let written = crate::report::write_message(&path, &bytes);
                    match done {
                        Some(done) => done(written),
                        None => {
                            if let Err(error) = written {
                                tracing::debug!(%error, "could not write a progress message");
                            }
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Self { jobs }),
            Err(error) => {
                tracing::warn!(%error, "no progress in the termination log: its writer could not start");
                None
            }
        }
    }

    /// Queue a progress message; never waits.
    pub(crate) fn write(&self, progress: &Progress) {
        let _ = self.jobs.send((progress.to_json().into_bytes(), None));
    }

    /// Queue the final report, after every progress message; `done` gets the outcome of
    /// its write.
    pub(crate) fn finish(
        &self,
        report: Vec<u8>,
        done: impl FnOnce(std::io::Result<()>) + Send + 'static,
    ) -> std::io::Result<()> {
        self.jobs
            .send((report, Some(Box::new(done))))
            .map_err(|_| std::io::Error::other("the termination log's writer has ended"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Signal;

    fn progress() -> Progress {
        Progress::new(
            &Reason::Signal(Signal::Term),
            State::Stopping,
            Duration::from_millis(1234),
        )
    }

    #[test]
    fn says_the_shutdown_is_under_way_and_what_it_waits_for() {
        let mut p = progress();
        p.pending.connections = 3;
        p.pending.requests = 1;
        p.pending.tasks = vec!["consumer".into()];
        let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(json["reason"], "signal:SIGTERM");
        assert_eq!(json["in_progress"], true);
        assert_eq!(json["clean"], false);
        assert_eq!(json["state"], "stopping");
        assert_eq!(json["since_trigger_ms"], 1234);
        assert_eq!(json["pending"]["connections"], 3);
        assert_eq!(json["pending"]["requests"], 1);
        assert_eq!(json["pending"]["tasks"][0], "consumer");
    }

    #[test]
    fn stays_valid_json_under_the_limit_whatever_the_names() {
        let mut p = progress();
        p.pending.tasks = (0..1000)
            .map(|i| format!("task-{i}-{}", "x".repeat(500)))
            .collect();
        p.pending.holds = (0..1000).map(|i| format!("hold-{i}-\"é\"")).collect();
        let text = p.to_json();
        assert!(text.len() <= MAX_REPORT_BYTES, "{}", text.len());
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["state"], "stopping");
    }

    #[test]
    fn messages_are_written_in_order_and_the_report_last() {
        let dir = std::env::temp_dir().join(format!("lameduck-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("termination-log");
        let log = ProgressLog::start(&path).unwrap();
        for state in [State::Draining, State::Stopping] {
            log.write(&Progress::new(&Reason::Api, state, Duration::ZERO));
        }
        let (done, written) = mpsc::channel();
        log.finish(br#"{"final":true}"#.to_vec(), move |r| {
            done.send(r).unwrap()
        })
        .unwrap();
        written
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"final":true}"#);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
