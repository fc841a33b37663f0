//! systemd's service notifications (`sd_notify(3)`), spoken on the datagram socket systemd
//! names in `NOTIFY_SOCKET`, so that a `Type=notify` unit knows when the service is ready,
//! when it began to shut down, that it is alive, and that its drain may outlast
//! `TimeoutStopSec=`.
//!
//! Nothing here is public: it is a behaviour of [`Lifecycle::run`](crate::Lifecycle::run),
//! turned off with [`Builder::no_sd_notify`](crate::Builder::no_sd_notify).
//!
//! # When anything is sent
//!
//! Only when `NOTIFY_SOCKET` is set (read at build time, through the same lookup as the
//! `LAMEDUCK_*` variables: the process environment for [`Lifecycle::builder`] and
//! [`Builder::from_env`], the given function for [`Builder::from_lookup`]) to an absolute
//! path (`/run/systemd/notify`) or an abstract socket (`@name`). Unset, nothing is sent and
//! no socket is created; set to anything else (`vsock:…`, a relative path) it is a warning
//! and nothing is sent. One task, spawned by the first `run`, follows the state; the
//! request path is untouched.
//!
//! [`Lifecycle::builder`]: crate::Lifecycle::builder
//! [`Builder::from_env`]: crate::Builder::from_env
//! [`Builder::from_lookup`]: crate::Builder::from_lookup
//!
//! # What is sent (one datagram per row, newline-separated assignments)
//!
//! | when | datagram |
//! |---|---|
//! | the state becomes `Ready` | `READY=1`, `STATUS=ready` |
//! | shutdown begins (`Draining`) | `STOPPING=1`, `STATUS=shutting down: <reason>`, `EXTEND_TIMEOUT_USEC=<left>` |
//! | every second while `Draining` | `EXTEND_TIMEOUT_USEC=<left>` |
//! | `Stopping` begins, and every second while `Stopping` | `STATUS=stopping: <c> connections, <r> requests, <t> tasks pending`, `EXTEND_TIMEOUT_USEC=<left>` |
//! | `Stopped` | `STATUS=stopped: clean` or `STATUS=stopped: exit code <n>[, deadline exceeded][, forced by <signal>]` |
//! | every half of `WATCHDOG_USEC`, from the start until `Stopped`, when the liveness checks pass | `WATCHDOG=1` |
//!
//! `<reason>` is the report's (`signal:SIGTERM`, `prestop`, `api`, `task:NAME`). A trigger
//! before `Ready` sends no `READY=1`. `STATUS=stopped` is the last thing the task does and
//! races the process's exit, so it may not reach systemd.
//!
//! # The stop-timeout rule
//!
//! `<left>` is the time, in microseconds, from now until `grace_period` after the first
//! trigger; it is left out once that time has passed. Each such message tells systemd to
//! wait at least that long before its stop timeout fires (`EXTEND_TIMEOUT_USEC` moves the
//! timeout to `max(TimeoutStopSec, now + value)`), so systemd never kills the service
//! before lameduck's own deadline (`grace_period - safety_margin` after the trigger) nor
//! before its exit watchdog (`grace_period - safety_margin / 2`). It is repeated every
//! second, because systemd re-arms its timeout at each of its own state changes (a
//! `systemctl stop` after a `STOPPING=1` sent for `/shutdown`) and forgets the extension.
//! A `TimeoutStopSec=` of at least the grace period makes all this moot; `TimeoutStopSec=`
//! should still be a little longer, for the exit itself (docs/platform.md).
//!
//! # The watchdog
//!
//! With `WATCHDOG_USEC` set (by `WatchdogSec=`) and `WATCHDOG_PID` unset or this process's
//! id, as `sd_watchdog_enabled(3)` specifies, the liveness checks run every half of
//! `WATCHDOG_USEC`, and `WATCHDOG=1` is sent when they pass. A failing liveness check
//! sends nothing, so that systemd restarts the service, as Kubernetes would. A
//! `WATCHDOG_USEC` or `WATCHDOG_PID` that is not a number is a logged warning (systemd
//! sets them, so they are no configuration error) and disables the pings.
//!
//! # Errors
//!
//! Sends do not block (the socket is non-blocking; a full buffer drops the datagram), so
//! they never delay the shutdown. The first failure is logged at `warn`, later ones are
//! not.
//!
//! # Children inherit `NOTIFY_SOCKET`
//!
//! `sd_notify(3)` can unset `NOTIFY_SOCKET` so that child processes do not inherit it;
//! lameduck does not (changing the environment of a running process is `unsafe`), so a
//! program the service starts sees it: remove it from the child's environment
//! (`Command::env_remove("NOTIFY_SOCKET")`) unless it should notify systemd too (with
//! `NotifyAccess=main`, systemd ignores it anyway).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::clock::deadline_after;
use crate::health::CheckKind;
use crate::lifecycle::Lifecycle;
use crate::state::State;

/// The socket systemd listens on for this service's notifications.
pub(crate) const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog timeout, in microseconds (`WatchdogSec=`).
pub(crate) const ENV_WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog is for, when systemd says.
pub(crate) const ENV_WATCHDOG_PID: &str = "WATCHDOG_PID";

/// How often `EXTEND_TIMEOUT_USEC` is sent again while shutting down.
const EXTEND_EVERY: Duration = Duration::from_secs(1);
/// Bounds of the watchdog ping interval: no busy loop for a tiny `WATCHDOG_USEC`, no
/// clock overflow for a huge one.
const PING_MIN: Duration = Duration::from_millis(1);
const PING_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// Where the builder takes systemd's variables from.
#[derive(Debug, Clone, Default)]
pub(crate) enum Source {
    /// The process environment, when the configuration is validated.
    #[default]
    Process,
    /// Read through `Builder::from_lookup`'s function.
    Lookup(Env),
    /// `Builder::no_sd_notify`.
    Off,
}

impl Source {
    /// What to send where, if anything; bad values are logged here.
    pub(crate) fn settings(&self) -> Option<Settings> {
        match self {
            Self::Process => Env::read(|name| std::env::var_os(name)).settings(),
            Self::Lookup(env) => env.settings(),
            Self::Off => None,
        }
    }
}

/// systemd's variables, as found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    socket: Option<OsString>,
    watchdog_usec: Option<OsString>,
    watchdog_pid: Option<OsString>,
}

impl Env {
    pub(crate) fn read(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        Self {
            socket: lookup(ENV_NOTIFY_SOCKET),
            watchdog_usec: lookup(ENV_WATCHDOG_USEC),
            watchdog_pid: lookup(ENV_WATCHDOG_PID),
        }
    }

    fn settings(&self) -> Option<Settings> {
        let raw = self.socket.as_ref()?;
        let bytes = raw.as_bytes();
        let address = match bytes.first() {
            Some(b'/') => Address::Path(PathBuf::from(raw)),
            Some(b'@') => Address::Abstract(bytes[1..].to_vec()),
            _ => {
                tracing::warn!(
                    value = ?raw,
                    "{ENV_NOTIFY_SOCKET} is neither an absolute path nor @abstract; \
                     not notifying systemd"
                );
                return None;
            }
        };
        Some(Settings {
            address,
            ping_every: self.ping_every(),
        })
    }

    /// Half of `WATCHDOG_USEC`, when the watchdog is for this process.
    fn ping_every(&self) -> Option<Duration> {
        let usec = self.watchdog_usec.as_ref()?;
        let Some(usec) = usec
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&n| n > 0)
        else {
            tracing::warn!(
                value = ?usec,
                "{ENV_WATCHDOG_USEC} is not a positive number of microseconds; \
                 no watchdog pings"
            );
            return None;
        };
        if let Some(pid) = &self.watchdog_pid {
            match pid.to_str().and_then(|s| s.parse::<u32>().ok()) {
                Some(pid) if pid == std::process::id() => {}
                Some(pid) => {
                    tracing::debug!(pid, "the systemd watchdog is for another process");
                    return None;
                }
                None => {
                    tracing::warn!(
                        value = ?pid,
                        "{ENV_WATCHDOG_PID} is not a process id; no watchdog pings"
                    );
                    return None;
                }
            }
        }
        Some((Duration::from_micros(usec) / 2).clamp(PING_MIN, PING_MAX))
    }
}

/// What to send where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    address: Address,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on and for this process.
    ping_every: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Path(PathBuf),
    /// The name, without the leading `@` (a NUL byte on the wire).
    Abstract(Vec<u8>),
}

impl Address {
    fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Path(path) => SocketAddr::from_pathname(path),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(name) => {
                #[cfg(target_os = "android")]
                use std::os::android::net::SocketAddrExt;
                #[cfg(target_os = "linux")]
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Self::Abstract(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract sockets exist only on Linux",
            )),
        }
    }
}

/// An unbound, non-blocking datagram socket and systemd's address.
struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    warned: AtomicBool,
}

impl Notifier {
    fn new(address: &Address) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            address: address.socket_addr()?,
            warned: AtomicBool::new(false),
        })
    }

    /// Send one datagram; never blocks, never fails the caller.
    fn send(&self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.address) {
            Ok(_) => tracing::trace!(message, "notified systemd"),
            Err(error) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        message,
                        "could not notify systemd; later failures are not logged"
                    );
                }
            }
        }
    }
}

/// Spawn the task that tells systemd about `lifecycle` until it has stopped.
pub(crate) fn spawn(lifecycle: &Lifecycle, settings: Settings) {
    let notifier = match Notifier::new(&settings.address) {
        Ok(notifier) => notifier,
        Err(error) => {
            tracing::warn!(%error, address = ?settings.address, "cannot notify systemd");
            return;
        }
    };
    tracing::info!(
        address = ?settings.address,
        watchdog_every = ?settings.ping_every,
        "notifying systemd"
    );
    let lifecycle = lifecycle.clone();
    tokio::spawn(async move {
        let pings = async {
            match settings.ping_every {
                Some(every) => watchdog(&lifecycle, &notifier, every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = follow_state(&lifecycle, &notifier) => {}
            () = pings => {}
        }
    });
}

/// Tell each state change, and repeat the stop-timeout extension while shutting down.
async fn follow_state(lifecycle: &Lifecycle, notifier: &Notifier) {
    let mut rx = lifecycle.subscribe();
    let mut told = State::Starting;
    let mut extend_at = None;
    loop {
        let state = *rx.borrow_and_update();
        // A skipped state is still told (but not Ready, which a trigger during startup
        // never reaches).
        for next in [
            State::Ready,
            State::Draining,
            State::Stopping,
            State::Stopped,
        ] {
            if told < next && next <= state && (next != State::Ready || state == State::Ready) {
                notifier.send(&message(lifecycle, next));
                told = next;
                extend_at = Some(deadline_after(Instant::now(), EXTEND_EVERY));
            }
        }
        if state == State::Stopped {
            return;
        }
        match extend_at.filter(|_| state.is_shutting_down()) {
            Some(at) => {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = sleep_until(at) => {
                        if let Some(message) = extension(lifecycle, state) {
                            notifier.send(&message);
                        }
                        extend_at = Some(deadline_after(at, EXTEND_EVERY));
                    }
                }
            }
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The datagram for entering `state`.
fn message(lifecycle: &Lifecycle, state: State) -> String {
    match state {
        State::Starting => String::new(),
        State::Ready => "READY=1\nSTATUS=ready".to_owned(),
        State::Draining => {
            let reason = lifecycle
                .reason()
                .map(|r| r.to_string())
                .unwrap_or_default();
            with_extension(
                lifecycle,
                format!("STOPPING=1\nSTATUS=shutting down: {reason}"),
            )
        }
        State::Stopping => with_extension(lifecycle, stopping_status(lifecycle)),
        State::Stopped => match lifecycle.report() {
            Some(report) if report.clean => "STATUS=stopped: clean".to_owned(),
            Some(report) => {
                let mut status = format!("STATUS=stopped: exit code {}", report.exit_code);
                if report.deadline_exceeded {
                    status.push_str(", deadline exceeded");
                }
                if let Some(signal) = report.forced_by {
                    status.push_str(&format!(", forced by {signal}"));
                }
                status
            }
            None => "STATUS=stopped".to_owned(),
        },
    }
}

/// The datagram repeated every [`EXTEND_EVERY`] in `state`, if there is time left.
fn extension(lifecycle: &Lifecycle, state: State) -> Option<String> {
    let usec = extend_usec(lifecycle)?;
    Some(match state {
        State::Stopping => format!("{}\nEXTEND_TIMEOUT_USEC={usec}", stopping_status(lifecycle)),
        _ => format!("EXTEND_TIMEOUT_USEC={usec}"),
    })
}

fn with_extension(lifecycle: &Lifecycle, message: String) -> String {
    match extend_usec(lifecycle) {
        Some(usec) => format!("{message}\nEXTEND_TIMEOUT_USEC={usec}"),
        None => message,
    }
}

fn stopping_status(lifecycle: &Lifecycle) -> String {
    let inner = &lifecycle.inner;
    format!(
        "STATUS=stopping: {} connections, {} requests, {} tasks pending",
        inner.connections.active(),
        inner.requests.active(),
        inner.tasks.running_names().len()
    )
}

/// Microseconds from now until `grace_period` after the first trigger; `None` once that
/// has passed (or before any trigger).
fn extend_usec(lifecycle: &Lifecycle) -> Option<u128> {
    let (_, triggered_at) = lifecycle.inner.trigger.get()?;
    let end = deadline_after(*triggered_at, lifecycle.config().grace_period());
    let left = end.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left.as_micros())
}

/// Ping every `every` while the liveness checks pass.
async fn watchdog(lifecycle: &Lifecycle, notifier: &Notifier, every: Duration) {
    let mut next = Instant::now();
    let mut failing = false;
    loop {
        sleep_until(next).await;
        let live = lifecycle.health().check(CheckKind::Liveness).await.ok;
        if live {
            notifier.send("WATCHDOG=1");
        } else if !failing {
            tracing::warn!("liveness failing: no systemd watchdog ping until it passes");
        }
        failing = !live;
        next = deadline_after(next, every).max(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Builder;
    use crate::health::Check;
    use std::sync::Arc;

    fn lookup(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    /// A lifecycle that reads systemd's variables from `env` only: a lame duck of 2 s, a
    /// drain timeout of 10 s, a grace period of 30 s.
    fn builder(env: Vec<(&'static str, String)>) -> Builder {
        Builder::from_lookup(lookup(env))
            .unwrap()
            .shutdown_delay(Duration::from_secs(2))
            .drain_timeout(Duration::from_secs(10))
            .grace_period(Duration::from_secs(30))
            .exit_process(false)
            .no_signals()
            .no_termination_log()
    }

    fn lifecycle(env: Vec<(&'static str, String)>) -> Lifecycle {
        builder(env).build().unwrap()
    }

    /// A socket standing in for systemd's, bound to a fresh path in the temp dir.
    struct Systemd {
        socket: tokio::net::UnixDatagram,
        path: PathBuf,
    }

    impl Systemd {
        fn at_path() -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "lameduck-notify-{}-{}.sock",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&path);
            let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
            Self { socket, path }
        }

        fn env(&self) -> (&'static str, String) {
            (ENV_NOTIFY_SOCKET, self.path.display().to_string())
        }

        /// The next datagram; fails the test if none comes within a minute (of paused
        /// time: at once in real time).
        async fn recv(&self) -> String {
            let mut buf = vec![0; 4096];
            let n = tokio::time::timeout(Duration::from_secs(60), self.socket.recv(&mut buf))
                .await
                .expect("no notification within a minute")
                .unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        /// Whatever has arrived and not been read yet.
        fn pending(&self) -> Vec<String> {
            let mut buf = vec![0; 4096];
            let mut out = Vec::new();
            while let Ok(n) = self.socket.try_recv(&mut buf) {
                out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
            }
            out
        }
    }

    impl Drop for Systemd {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ready_then_stopping_then_stopped() {
        let systemd = Systemd::at_path();
        let lifecycle = lifecycle(vec![systemd.env()]);
        let run = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        assert_eq!(systemd.recv().await, "READY=1\nSTATUS=ready");
        lifecycle.shutdown();
        assert_eq!(
            systemd.recv().await,
            "STOPPING=1\nSTATUS=shutting down: api\nEXTEND_TIMEOUT_USEC=30000000"
        );
        let report = run.await.unwrap();
        assert!(report.clean);
        lifecycle.stopped().await;
        let mut rest = systemd.pending();
        while rest.last().map(String::as_str) != Some("STATUS=stopped: clean") {
            rest.push(systemd.recv().await);
        }
        assert!(
            rest.contains(
                &"STATUS=stopping: 0 connections, 0 requests, 0 tasks pending\n\
                  EXTEND_TIMEOUT_USEC=28000000"
                    .to_owned()
            ),
            "{rest:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(start_paused = true)]
    async fn abstract_socket() {
        let name = format!("lameduck-notify-test-{}", std::process::id());
        let addr = {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let std_socket = UnixDatagram::bind_addr(&addr).unwrap();
        std_socket.set_nonblocking(true).unwrap();
        let socket = tokio::net::UnixDatagram::from_std(std_socket).unwrap();
        let lifecycle = lifecycle(vec![(ENV_NOTIFY_SOCKET, format!("@{name}"))]);
        tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        let mut buf = [0; 256];
        let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ready");
        lifecycle.shutdown();
        let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"STOPPING=1\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_pings_while_liveness_passes() {
        let systemd = Systemd::at_path();
        let lifecycle = lifecycle(vec![
            systemd.env(),
            (ENV_WATCHDOG_USEC, "2000000".into()),
            (ENV_WATCHDOG_PID, std::process::id().to_string()),
        ]);
        let live = Arc::new(AtomicBool::new(true));
        lifecycle.health().add(
            Check::liveness("flag", {
                let live = Arc::clone(&live);
                move || {
                    let ok = live.load(Ordering::SeqCst);
                    async move { if ok { Ok(()) } else { Err("down") } }
                }
            })
            .cache_for(Duration::ZERO),
        );
        tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        let start = Instant::now();
        let mut pings = Vec::new();
        while pings.len() < 4 {
            let message = systemd.recv().await;
            if message == "WATCHDOG=1" {
                pings.push(start.elapsed());
            } else {
                assert_eq!(message, "READY=1\nSTATUS=ready");
            }
        }
        assert_eq!(
            pings,
            [0, 1, 2, 3].map(Duration::from_secs),
            "a ping every half of WATCHDOG_USEC"
        );
        live.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5500)).await;
        assert_eq!(
            systemd.pending(),
            Vec::<String>::new(),
            "no ping while not live"
        );
        live.store(true, Ordering::SeqCst);
        assert_eq!(systemd.recv().await, "WATCHDOG=1");
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_for_another_process_or_garbled_sends_no_ping() {
        for (usec, pid) in [("2000000", "1"), ("soon", ""), ("0", "")] {
            let mut env = vec![(ENV_NOTIFY_SOCKET, "/run/systemd/notify".to_owned())];
            env.push((ENV_WATCHDOG_USEC, usec.to_owned()));
            if !pid.is_empty() {
                env.push((ENV_WATCHDOG_PID, pid.to_owned()));
            }
            let settings = Env::read(lookup(env)).settings().unwrap();
            assert_eq!(settings.ping_every, None, "{usec} {pid}");
        }
        let env = vec![
            (ENV_NOTIFY_SOCKET, "@x".to_owned()),
            (ENV_WATCHDOG_USEC, "3000000".to_owned()),
        ];
        let settings = Env::read(lookup(env)).settings().unwrap();
        assert_eq!(settings.address, Address::Abstract(b"x".to_vec()));
        assert_eq!(settings.ping_every, Some(Duration::from_millis(1500)));
        for socket in ["", "vsock:2:1234", "relative/path"] {
            let env = vec![(ENV_NOTIFY_SOCKET, socket.to_owned())];
            assert_eq!(Env::read(lookup(env)).settings(), None, "{socket:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_without_notify_socket() {
        let systemd = Systemd::at_path();
        let lifecycle = lifecycle(vec![(ENV_WATCHDOG_USEC, "2000000".into())]);
        assert_eq!(lifecycle.config().sd_notify, None);
        tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        lifecycle.ready().await;
        lifecycle.shutdown();
        lifecycle.stopped().await;
        tokio::task::yield_now().await;
        assert_eq!(systemd.pending(), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn no_sd_notify_turns_it_off() {
        let config = Builder::from_lookup(lookup(vec![(
            ENV_NOTIFY_SOCKET,
            "/run/systemd/notify".into(),
        )]))
        .unwrap()
        .no_sd_notify()
        .config()
        .unwrap();
        assert_eq!(config.sd_notify, None);
    }

    #[tokio::test(start_paused = true)]
    async fn extend_timeout_while_the_drain_runs() {
        let systemd = Systemd::at_path();
        // Off the second, so that no state change falls on a repetition.
        let lifecycle = builder(vec![systemd.env()])
            .shutdown_delay(Duration::from_millis(2500))
            .build()
            .unwrap();
        // Work that takes 4.5 s to finish once Stopping begins (2.5 s after the trigger).
        lifecycle.spawn("slow", |cancel| async move {
            cancel.cancelled().await;
            tokio::time::sleep(Duration::from_millis(4500)).await;
        });
        tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        assert_eq!(systemd.recv().await, "READY=1\nSTATUS=ready");
        lifecycle.shutdown();
        let mut seen = Vec::new();
        loop {
            let message = systemd.recv().await;
            let done = message.starts_with("STATUS=stopped");
            seen.push(message);
            if done {
                break;
            }
        }
        let expected = [
            "STOPPING=1\nSTATUS=shutting down: api\nEXTEND_TIMEOUT_USEC=30000000",
            "EXTEND_TIMEOUT_USEC=29000000",
            "EXTEND_TIMEOUT_USEC=28000000",
            // Stopping, 2.5 s after the trigger; then every second from there.
            "STATUS=stopping: 0 connections, 0 requests, 1 tasks pending\n\
             EXTEND_TIMEOUT_USEC=27500000",
            "STATUS=stopping: 0 connections, 0 requests, 1 tasks pending\n\
             EXTEND_TIMEOUT_USEC=26500000",
            "STATUS=stopping: 0 connections, 0 requests, 1 tasks pending\n\
             EXTEND_TIMEOUT_USEC=25500000",
            "STATUS=stopping: 0 connections, 0 requests, 1 tasks pending\n\
             EXTEND_TIMEOUT_USEC=24500000",
            "STATUS=stopping: 0 connections, 0 requests, 1 tasks pending\n\
             EXTEND_TIMEOUT_USEC=23500000",
            // The task is done 7 s after the trigger.
            "STATUS=stopped: clean",
        ];
        assert_eq!(seen, expected);
    }
}
