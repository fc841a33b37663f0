//! The supervisor's report: the SDK's JSON with the child's fate added, written to the
//! termination log without ever blocking the exit.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::reaper::Ended;

/// Kubernetes shows at most this many bytes of the termination message.
const MAX_BYTES: usize = lameduck::MAX_REPORT_BYTES;

/// How long the exit waits, at most, for the termination log to be written.
pub(crate) const WRITE_WAIT: Duration = Duration::from_secs(1);

/// What became of the child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildFate {
    pub(crate) pid: i32,
    /// `None` when its end was not seen (killed, and not reaped before the exit).
    pub(crate) ended: Option<Ended>,
    /// Whether the supervisor had to send SIGKILL to its process group.
    pub(crate) killed: bool,
}

impl ChildFate {
    /// `{"pid":…,"exit_code":…,"signal":…,"killed":…}`, in that order.
    fn to_json(self) -> String {
        let (exit_code, signal) = match self.ended {
            Some(Ended::Exited(code)) => (json!(code), Value::Null),
            Some(Ended::Signaled(signal)) => (Value::Null, json!(signal.as_str())),
            None => (Value::Null, Value::Null),
        };
        format!(
            r#"{{"pid":{},"exit_code":{exit_code},"signal":{signal},"killed":{}}}"#,
            self.pid, self.killed
        )
    }
}

/// The SDK's report, its fields in their order, with `"exit_code"` set to the
/// supervisor's and `"child"` added at the end.
pub(crate) fn with_child(report: &lameduck::Report, fate: ChildFate, exit_code: u8) -> String {
    let sdk = report.to_json();
    // The report's own `exit_code` comes right after `duration_ms`, before any list, so
    // the first occurrence is the top-level one.
    let theirs = format!(r#","exit_code":{},"#, report.exit_code);
    let ours = format!(r#","exit_code":{exit_code},"#);
    let sdk = sdk.replacen(&theirs, &ours, 1);
    let text = match sdk.strip_suffix('}') {
        Some(fields) => format!(r#"{fields},"child":{}}}"#, fate.to_json()),
        None => sdk,
    };
    if text.len() <= MAX_BYTES {
        return text;
    }
    // The SDK's part was already shortened to fit alone; keep its summary and the child.
    format!(
        r#"{{"reason":{},"clean":{},"duration_ms":{},"exit_code":{exit_code},"deadline_exceeded":{},"child":{},"omitted":"the lists of the report, too long with the child's fate"}}"#,
        json!(report.reason.to_string()),
        report.clean,
        report.duration_ms,
        report.deadline_exceeded,
        fate.to_json()
    )
}

/// The report when the supervisor ends before the lifecycle could, because the child
/// ended before Stopping: on its own (`reason` `child-exited` when no shutdown had begun),
/// or during the lame duck (after a second signal, say). The lifecycle's timings do not
/// exist yet, so it says which `state` the lifecycle was in instead; `clean` when the
/// child exited 0.
pub(crate) fn early(reason: &str, state: &str, fate: ChildFate, exit_code: u8) -> String {
    format!(
        r#"{{"reason":{},"clean":{},"state":{},"exit_code":{exit_code},"child":{}}}"#,
        json!(reason),
        exit_code == 0,
        json!(state),
        fate.to_json()
    )
}

/// Write `text` to the termination log, if there is one, waiting at most `within` (the
/// SDK's writer: never blocked by a reader, never holding up the exit).
pub(crate) fn write(path: Option<PathBuf>, text: String, within: Duration) {
    let Some(path) = path else { return };
    if let Err(error) = lameduck::write_termination_message(&path, &text, within) {
        eprintln!(
            "lameduck run: cannot write the report to {}: {error}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn the_child_is_described_in_the_json() {
        let fate = ChildFate {
            pid: 42,
            ended: Some(Ended::Signaled(Signal::SIGKILL)),
            killed: true,
        };
        let text = early("signal:SIGTERM", "draining", fate, 137);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["child"]["pid"], 42);
        assert_eq!(value["child"]["signal"], "SIGKILL");
        assert_eq!(value["child"]["exit_code"], Value::Null);
        assert_eq!(value["child"]["killed"], true);
        assert_eq!(value["exit_code"], 137);

        let fate = ChildFate {
            pid: 7,
            ended: Some(Ended::Exited(3)),
            killed: false,
        };
        let value: Value = serde_json::from_str(&early("child-exited", "ready", fate, 3)).unwrap();
        assert_eq!(value["child"]["exit_code"], 3);
        assert_eq!(value["child"]["signal"], Value::Null);
    }

    #[tokio::test]
    async fn the_sdk_report_keeps_its_order_and_gains_the_child() {
        let lifecycle = lameduck::Lifecycle::builder()
            .shutdown_delay(Duration::ZERO)
            .exit_process(false)
            .no_termination_log()
            .no_signals()
            .build()
            .unwrap();
        lifecycle.shutdown();
        let report = lifecycle.run().await;
        assert_eq!(report.exit_code, 0);
        let fate = ChildFate {
            pid: 9,
            ended: Some(Ended::Signaled(Signal::SIGTERM)),
            killed: false,
        };
        let text = with_child(&report, fate, 143);
        assert!(text.starts_with(r#"{"reason":"api","#), "{text}");
        assert!(
            text.ends_with(
                r#","child":{"pid":9,"exit_code":null,"signal":"SIGTERM","killed":false}}"#
            ),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["exit_code"], 143);
        assert!(value["states"].is_array());
    }

    #[test]
    fn writes_replace_the_file() {
        let dir = std::env::temp_dir().join(format!("lameduck-run-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        std::fs::write(&path, "old and longer than the new one").unwrap();
        write(Some(path.clone()), "{}".into(), WRITE_WAIT);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
