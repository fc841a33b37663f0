//! The shutdown report: what happened, as one JSON object for the termination log
//! (docs/platform.md, "Termination message") and a summary line in the log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Once, PoisonError, RwLock};
use std::time::Duration;

use crate::hooks::{HookOutcome, HookReport};
use crate::signal::Signal;
use crate::state::{Reason, State};
use crate::tasks::TaskFailure;

/// Kubernetes shows at most this many bytes of the termination message.
pub const MAX_REPORT_BYTES: usize = 4096;

/// How long one state lasted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StateTiming {
    /// The state.
    pub state: State,
    /// How long the lifecycle was in it.
    pub duration_ms: u64,
}

/// What a shutdown did, returned by [`Lifecycle::run`](crate::Lifecycle::run) and written
/// to the termination log.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let lifecycle = lameduck::Lifecycle::builder()
///     .exit_process(false)
///     .no_termination_log()
///     .build()
///     .unwrap();
/// lifecycle.shutdown();
/// let report = lifecycle.run().await;
/// assert!(report.clean);
/// assert_eq!(report.reason.to_string(), "api");
/// assert_eq!(report.exit_code, 0);
/// assert!(report.to_json().starts_with(r#"{"reason":"api","clean":true"#));
/// # }
/// ```
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The first trigger's reason.
    pub reason: Reason,
    /// True when nothing failed, nothing was abandoned or cut, and nothing was forced.
    pub clean: bool,
    /// Milliseconds from the first trigger to Stopped.
    pub duration_ms: u64,
    /// The process exit status this report asks for: 0 when clean; [`EXIT_UNCLEAN`] (1)
    /// when something failed, was cut or abandoned; [`EXIT_DEADLINE`] (2) when the
    /// deadline was reached; 128 + N when signal N forced the exit. `main` can return the
    /// report itself (it is a [`Termination`](std::process::Termination)) to exit with it.
    pub exit_code: u8,
    /// Set when a second signal forced the exit.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "signal_name"
    )]
    pub forced_by: Option<Signal>,
    /// Set when the shutdown deadline was reached with work still pending.
    pub deadline_exceeded: bool,
    /// How long each state lasted, in order.
    pub states: Vec<StateTiming>,
    /// Every hook that was due to run (startup hooks only when they failed).
    pub hooks: Vec<HookReport>,
    /// Tracked tasks still running at the drain deadline (aborted).
    pub tasks_abandoned: Vec<String>,
    /// Tracked tasks that returned an error or panicked.
    pub tasks_failed: Vec<TaskFailure>,
    /// Holds still alive when the deadline overrode them.
    pub holds_abandoned: Vec<String>,
    /// Connections still open when the drain deadline cut them.
    pub connections_cut: usize,
    /// Requests still in flight when the drain deadline cut them.
    pub requests_cut: usize,
}

fn signal_name<S: serde::Serializer>(signal: &Option<Signal>, s: S) -> Result<S::Ok, S::Error> {
    match signal {
        Some(signal) => s.serialize_str(signal.name()),
        None => s.serialize_none(),
    }
}

/// Exit status when something failed, was cut or abandoned before the deadline.
pub const EXIT_UNCLEAN: u8 = 1;
/// Exit status when the shutdown deadline was reached.
pub const EXIT_DEADLINE: u8 = 2;

impl Report {
    pub(crate) fn finish(mut self) -> Self {
        let hooks_ok = self.hooks.iter().all(|h| h.outcome == HookOutcome::Ok);
        self.clean = hooks_ok
            && self.forced_by.is_none()
            && !self.deadline_exceeded
            && self.tasks_abandoned.is_empty()
            && self.tasks_failed.is_empty()
            && self.holds_abandoned.is_empty()
            && self.connections_cut == 0
            && self.requests_cut == 0;
        self.exit_code = match (self.forced_by, self.deadline_exceeded, self.clean) {
            // Shell convention for death by a signal.
            (Some(signal), _, _) => u8::try_from(128 + signal.number()).unwrap_or(u8::MAX),
            (None, true, _) => EXIT_DEADLINE,
            (None, false, false) => EXIT_UNCLEAN,
            (None, false, true) => 0,
        };
        self
    }

    /// The report as one JSON object of at most [`MAX_REPORT_BYTES`] bytes. When the whole
    /// report is longer, error texts are shortened and list entries dropped (failures are
    /// kept before successes); `"omitted"` then counts what was left out of each list,
    /// e.g. `"omitted":{"hooks":940}`.
    pub fn to_json(&self) -> String {
        let full = serde_json::to_string(self).unwrap_or_default();
        if full.len() <= MAX_REPORT_BYTES {
            return full;
        }
        let truncated = self.truncated_json();
        if truncated.len() <= MAX_REPORT_BYTES {
            return truncated;
        }
        // Only a pathological reason (a task name of kilobytes) gets here.
        serde_json::json!({
            "reason": shorten(&self.reason.to_string()),
            "clean": self.clean,
            "duration_ms": self.duration_ms,
            "exit_code": self.exit_code,
            "omitted": "the report did not fit in 4096 bytes; see the log",
        })
        .to_string()
    }

    fn truncated_json(&self) -> String {
        let mut value = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return String::from("{}"),
        };
        if let Some(serde_json::Value::String(reason)) = value.get_mut("reason") {
            *reason = shorten(reason);
        }
        let mut omitted = serde_json::Map::new();
        let mut lists: Vec<(&str, Vec<serde_json::Value>)> = Vec::new();
        // Short lists first, so one long list cannot crowd out the others.
        for key in [
            "states",
            "holds_abandoned",
            "tasks_abandoned",
            "tasks_failed",
            "hooks",
        ] {
            if let Some(serde_json::Value::Array(items)) = value.get_mut(key) {
                let items: Vec<_> = std::mem::take(items)
                    .into_iter()
                    .map(|mut item| {
                        shorten_error(&mut item);
                        item
                    })
                    .collect();
                lists.push((key, items));
            }
        }
        // Room for `"omitted":{...}` is kept aside from the start.
        let budget = MAX_REPORT_BYTES - 160;
        let mut used = serde_json::to_string(&value).map(|s| s.len()).unwrap_or(0);
        for (key, items) in lists {
            let sizes: Vec<usize> = items
                .iter()
                .map(|i| serde_json::to_string(i).map(|s| s.len() + 1).unwrap_or(0))
                .collect();
            // Failures first: an operator reading `kubectl describe` wants what went wrong.
            let mut order: Vec<usize> = (0..items.len()).collect();
            order.sort_by_key(|&i| is_success(&items[i]));
            let mut keep = vec![false; items.len()];
            let mut left_out = 0usize;
            for i in order {
                if used + sizes[i] <= budget {
                    used += sizes[i];
                    keep[i] = true;
                } else {
                    left_out += 1;
                }
            }
            if left_out > 0 {
                omitted.insert(key.to_owned(), left_out.into());
            }
            let kept: Vec<_> = items
                .into_iter()
                .zip(keep)
                .filter_map(|(item, keep)| keep.then_some(item))
                .collect();
            value.insert(key.to_owned(), serde_json::Value::Array(kept));
        }
        value.insert("omitted".to_owned(), serde_json::Value::Object(omitted));
        serde_json::to_string(&value).unwrap_or_default()
    }

    /// Log the summary line (at `info` when clean, `warn` otherwise).
    pub(crate) fn log_summary(&self) {
        let failed_hooks = self
            .hooks
            .iter()
            .filter(|h| h.outcome != HookOutcome::Ok)
            .count();
        if self.clean {
            tracing::info!(
                reason = %self.reason,
                duration_ms = self.duration_ms,
                hooks = self.hooks.len(),
                "shutdown complete"
            );
        } else {
            tracing::warn!(
                reason = %self.reason,
                duration_ms = self.duration_ms,
                exit_code = self.exit_code,
                failed_hooks,
                tasks_failed = self.tasks_failed.len(),
                tasks_abandoned = self.tasks_abandoned.len(),
                connections_cut = self.connections_cut,
                requests_cut = self.requests_cut,
                deadline_exceeded = self.deadline_exceeded,
                forced_by = self.forced_by.map(Signal::name).unwrap_or(""),
                "shutdown was not clean"
            );
        }
    }
}

/// `main` can return the report itself: the process exits with its
/// [`exit_code`](Report::exit_code) (the report is already logged and written). A
/// configuration error through `?` prints `Error: ` and the error's message, and exits 1.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<lameduck::Report, lameduck::ConfigError> {
///     let lifecycle = lameduck::Lifecycle::from_env()?;
///     Ok(lifecycle.run().await)
/// }
/// ```
impl std::process::Termination for Report {
    fn report(self) -> ExitCode {
        ExitCode::from(self.exit_code)
    }
}

const MAX_ERROR_CHARS: usize = 200;

/// Shorten the free texts of a list item (a name, an error) to [`MAX_ERROR_CHARS`].
fn shorten_error(item: &mut serde_json::Value) {
    match item {
        serde_json::Value::String(text) => *text = shorten(text),
        serde_json::Value::Object(fields) => {
            for key in ["name", "error"] {
                if let Some(serde_json::Value::String(text)) = fields.get_mut(key) {
                    *text = shorten(text);
                }
            }
        }
        _ => {}
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.to_owned();
    }
    let short: String = text.chars().take(MAX_ERROR_CHARS).collect();
    format!("{short}…")
}

fn is_success(item: &serde_json::Value) -> bool {
    item.get("outcome").and_then(|o| o.as_str()) == Some("ok")
}

/// Write `bytes` to `path`, replacing what was there, without ever waiting on a reader:
/// the open does not block (a FIFO nobody reads fails at once with `ENXIO`) and neither do
/// the writes (a full pipe fails with `WouldBlock`). A hung network file system can still
/// block the open itself; [`write_within`] bounds that.
///
/// Atomic where the path allows: a regular file (or none yet) is replaced by renaming a
/// file written next to it, so a process killed mid-write leaves the previous message
/// whole, never half of each. Where that cannot be done (Kubernetes bind-mounts
/// `/dev/termination-log`, which a rename cannot replace, in a directory a non-root
/// process cannot write; a FIFO or a symbolic link must stay what they are), the file is
/// truncated and written in one call.
pub(crate) fn write_message(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let replaceable = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata.file_type().is_file(),
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
    };
    if replaceable && write_by_rename(path, bytes).is_ok() {
        return Ok(());
    }
    write_in_place(path, bytes)
}

/// `bytes` into a new file beside `path`, then renamed over it.
fn write_by_rename(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.lameduck-tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written =
        write_in_place(&temporary, bytes).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn write_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    file.write_all(bytes)?;
    file.flush()
}

/// [`write_message`] on a thread of its own; `done` gets its outcome. If the write hangs
/// (a dead NFS server), the thread is left behind and dies with the process.
pub(crate) fn spawn_write(
    path: &Path,
    bytes: Vec<u8>,
    done: impl FnOnce(std::io::Result<()>) + Send + 'static,
) -> std::io::Result<()> {
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("lameduck-termination-log".into())
        .spawn(move || done(write_message(&path, &bytes)))?;
    Ok(())
}

/// Write a termination message to `path`, replacing what was there, and wait at most
/// `within` for it: what the lifecycle does with its report, for a program that writes a
/// message of its own (the `lameduck run` supervisor adds its child to the report). The
/// open and the writes never wait for a reader (a FIFO nobody reads is an error at once),
/// and they run on a thread of their own, so a path that blocks anyway (a hung network
/// file system) costs at most `within`: the exit it precedes is never held up. Keep the
/// message under [`MAX_REPORT_BYTES`], which is all Kubernetes shows.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let path = std::env::temp_dir().join(format!("termination-log-{}", std::process::id()));
/// let message = r#"{"reason":"signal:SIGTERM","clean":true}"#;
/// lameduck::write_termination_message(&path, message, std::time::Duration::from_secs(1))?;
/// assert_eq!(std::fs::read_to_string(&path)?, message);
/// # std::fs::remove_file(&path)
/// # }
/// ```
pub fn write_termination_message(
    path: &Path,
    message: &str,
    within: Duration,
) -> std::io::Result<()> {
    write_within(path, message.as_bytes().to_vec(), within)
}

/// [`write_termination_message`] for bytes the caller already owns.
pub(crate) fn write_within(path: &Path, bytes: Vec<u8>, within: Duration) -> std::io::Result<()> {
    let (done, outcome) = std::sync::mpsc::channel();
    spawn_write(path, bytes, move |result| {
        let _ = done.send(result);
    })?;
    match outcome.recv_timeout(within) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(timed_out(within)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(std::io::Error::other("the writing thread ended"))
        }
    }
}

pub(crate) fn timed_out(within: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "still blocked after {}; given up so the exit is not delayed",
            humantime::format_duration(within)
        ),
    )
}

/// The termination message for a panic: valid JSON of at most [`MAX_REPORT_BYTES`],
/// whatever the message holds (it is shortened by characters, never cut mid-character).
fn panic_json(message: &str, location: &str) -> String {
    let mut keep = message.chars().count();
    loop {
        let shown: String = message.chars().take(keep).collect();
        let json = serde_json::json!({
            "reason": "panic",
            "clean": false,
            "panic": shown,
            "location": location.chars().take(300).collect::<String>(),
        })
        .to_string();
        if json.len() <= MAX_REPORT_BYTES || keep == 0 {
            return json;
        }
        keep /= 2;
    }
}

/// Where the panic hook writes; the latest lifecycle with a termination log wins.
static PANIC_LOG: RwLock<Option<PathBuf>> = RwLock::new(None);
static PANIC_HOOK: Once = Once::new();

/// Make every panic in the process write its message to `path` (then run the previous
/// panic hook), so that a service that dies of a panic says so in `kubectl describe`.
/// The final report, if the process gets that far, replaces it.
pub(crate) fn install_panic_hook(path: &Path) {
    *PANIC_LOG.write().unwrap_or_else(PoisonError::into_inner) = Some(path.to_path_buf());
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let path = PANIC_LOG
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(path) = path {
                let message = crate::hooks::panic_message(info.payload());
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let json = panic_json(&message, &location);
                let _ = write_message(&path, json.as_bytes());
            }
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn report(hooks: usize) -> Report {
        Report {
            reason: Reason::Signal(Signal::Term),
            clean: false,
            duration_ms: 1234,
            exit_code: 0,
            forced_by: None,
            deadline_exceeded: false,
            states: vec![StateTiming {
                state: State::Draining,
                duration_ms: 5000,
            }],
            hooks: (0..hooks)
                .map(|i| HookReport {
                    name: format!("hook-number-{i}"),
                    phase: "after_drain",
                    outcome: if i == 777 {
                        HookOutcome::Failed
                    } else {
                        HookOutcome::Ok
                    },
                    duration_ms: 1,
                    error: (i == 777).then(|| "x".repeat(10_000)),
                })
                .collect(),
            tasks_abandoned: vec![],
            tasks_failed: vec![],
            holds_abandoned: vec![],
            connections_cut: 0,
            requests_cut: 0,
        }
        .finish()
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json: serde_json::Value = serde_json::from_str(&report(2).to_json()).unwrap();
        assert_eq!(json["reason"], "signal:SIGTERM");
        assert_eq!(json["clean"], true);
        assert_eq!(json["duration_ms"], 1234);
        assert_eq!(json["exit_code"], 0);
        assert_eq!(json["hooks"][0]["name"], "hook-number-0");
        assert_eq!(json["hooks"][0]["outcome"], "ok");
        assert_eq!(json["states"][0]["state"], "draining");
        assert!(json.get("forced_by").is_none());
    }

    #[test]
    fn json_stays_under_4096_bytes_with_1000_hooks() {
        let report = report(1000);
        assert!(!report.clean);
        assert_eq!(report.exit_code, EXIT_UNCLEAN);
        let text = report.to_json();
        assert!(text.len() <= MAX_REPORT_BYTES, "{} bytes", text.len());
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let hooks = json["hooks"].as_array().unwrap();
        assert!(hooks.len() > 10, "kept {} hooks", hooks.len());
        // The failed hook is kept, with its error shortened.
        let failed = hooks.iter().find(|h| h["outcome"] == "failed").unwrap();
        assert_eq!(failed["name"], "hook-number-777");
        assert!(failed["error"].as_str().unwrap().chars().count() <= MAX_ERROR_CHARS + 1);
        assert_eq!(
            json["omitted"]["hooks"].as_u64().unwrap() as usize + hooks.len(),
            1000
        );
        assert_eq!(json["reason"], "signal:SIGTERM");
        assert_eq!(json["clean"], false);
        assert_eq!(json["states"][0]["state"], "draining");
    }

    #[test]
    fn panic_messages_of_any_size_and_alphabet_give_valid_short_json() {
        for message in [
            "boom".to_owned(),
            "€".repeat(2000),
            "\"".repeat(3000),
            "\n".repeat(5000),
        ] {
            let json = panic_json(&message, "src/main.rs:1");
            assert!(json.len() <= MAX_REPORT_BYTES, "{} bytes", json.len());
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["reason"], "panic");
            let shown = value["panic"].as_str().unwrap();
            assert!(message.starts_with(shown));
            assert!(!shown.is_empty());
        }
    }

    #[test]
    fn a_huge_task_name_cannot_push_the_report_past_4096_bytes() {
        let mut r = report(3);
        r.reason = Reason::Task("t".repeat(5000));
        r.tasks_abandoned = vec!["x".repeat(5000); 3];
        let json = r.to_json();
        assert!(json.len() <= MAX_REPORT_BYTES, "{} bytes", json.len());
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value["reason"].as_str().unwrap().starts_with("task:ttt"));
    }

    #[test]
    fn writing_a_message_replaces_the_file() {
        let path = std::env::temp_dir().join(format!("lameduck-report-{}", std::process::id()));
        std::fs::write(&path, "x".repeat(10_000)).unwrap();
        let r = report(1);
        write_termination_message(&path, &r.to_json(), Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r.to_json());
        std::fs::remove_file(&path).ok();
    }

    /// A regular file is replaced whole: whoever had the old one open still reads the
    /// old message, never a mix, and a kill during the write would leave it intact.
    #[test]
    fn a_regular_file_is_replaced_by_a_rename() {
        use std::io::Read;
        let dir = std::env::temp_dir().join(format!("lameduck-rename-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("termination-log");
        std::fs::write(&path, "old message").unwrap();
        let mut old = std::fs::File::open(&path).unwrap();
        write_message(&path, b"new message").unwrap();
        let mut seen = String::new();
        old.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "old message");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new message");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A symbolic link is written through, not replaced by a file of its own.
    #[test]
    fn a_symbolic_link_stays_a_link() {
        let dir = std::env::temp_dir().join(format!("lameduck-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        let link = dir.join("termination-log");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_message(&link, b"through the link").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "through the link"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_codes() {
        let mut r = report(1);
        assert_eq!(r.exit_code, 0);
        r.deadline_exceeded = true;
        assert_eq!(r.clone().finish().exit_code, EXIT_DEADLINE);
        r.forced_by = Some(Signal::Term);
        let r = r.finish();
        assert_eq!(r.exit_code, 143);
        assert!(r.to_json().contains(r#""forced_by":"SIGTERM""#));
    }

    #[test]
    fn main_can_return_the_report() {
        use std::process::Termination;
        let mut r = report(1);
        r.deadline_exceeded = true;
        let r = r.finish();
        assert_eq!(
            format!("{:?}", r.clone().report()),
            format!("{:?}", ExitCode::from(EXIT_DEADLINE))
        );
    }
}
