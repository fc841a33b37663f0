//! `lameduck simulate -- CMD`: plays the kubelet's termination sequence against a service,
//! under load, and judges what it saw.
//!
//! 1. CMD is started (in a process group of its own, the environment passed on, its output
//!    to a log file) and `--ready` is probed, as a startup probe, until it answers 200–399
//!    within 1 s or `--startup-timeout` passes.
//! 2. `--clients` keep-alive clients send `--rate` requests/s in total to `--traffic`
//!    (lameduck-load classifies each), and `--ready` (and `--live`) are probed every
//!    `--probe-period`, all along.
//! 3. After `--before`, the trigger (the pod is deleted): the preStop hook (`--prestop`, an
//!    httpGet, blocking) if any, then SIGTERM. Traffic keeps coming for `--propagation`
//!    from the trigger (endpoints, kube-proxy and load balancers catching up), then stops.
//!    SIGKILL (to the process group) at `--grace` from the trigger if CMD is still there.
//! 4. The verdict ([`verdict`]): failed requests by class and when, the readiness flip,
//!    liveness failures, the exit, the termination message, advice; exit status 0 only when
//!    nothing failed, liveness held and no SIGKILL was needed.

mod plot;
mod verdict;

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use lameduck_load::{Class, LoadConfig};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use crate::http_get::{self, GetRequest};
use crate::target::Target;
use verdict::{EXIT_NOT_READY, Failure, Observed, Second};

/// Exit status when simulate itself was interrupted (the shell's 128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;
/// The kubelet's extension of the grace period when the preStop hook used all of it.
const PRESTOP_EXTENSION: Duration = Duration::from_secs(2);
/// How long a process killed with SIGKILL may take to be reaped before simulate gives up.
const KILL_PATIENCE: Duration = Duration::from_secs(10);
/// The kubelet's probe timeout default (`timeoutSeconds: 1`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often readiness is polled while waiting for the service to start.
const STARTUP_POLL: Duration = Duration::from_millis(100);
/// A liveness probe that failed this close to the exit saw the process go, not a liveness
/// failure of a running container.
const EXIT_MARGIN: Duration = Duration::from_millis(50);
/// The variable lameduck services write their termination message to.
const TERMINATION_LOG_VAR: &str = "LAMEDUCK_TERMINATION_LOG";
/// What every container of a pod finds in its environment (the API server's Service),
/// by which services such as lameduck's know they run on Kubernetes.
const POD_ENV: [(&str, &str); 2] = [
    ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
    ("KUBERNETES_SERVICE_PORT", "443"),
];

/// What to simulate, as checked on the command line.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) command: Vec<OsString>,
    pub(crate) ready: Target,
    pub(crate) live: Option<Target>,
    pub(crate) prestop: Option<Target>,
    pub(crate) load: LoadConfig,
    /// Where the load goes, for checking that nothing else answers there first.
    pub(crate) traffic: Target,
    pub(crate) before: Duration,
    pub(crate) propagation: Duration,
    pub(crate) grace: Duration,
    pub(crate) startup_timeout: Duration,
    pub(crate) probe_period: Duration,
    pub(crate) json: bool,
    pub(crate) plot: Option<PathBuf>,
    pub(crate) service_log: Option<PathBuf>,
    /// Set [`POD_ENV`] for CMD, unless already set, as in a pod.
    pub(crate) pod_env: bool,
}

/// Runs the simulation and prints the verdict; the exit status.
pub(crate) fn run(plan: Plan) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lameduck simulate: cannot start the runtime: {error}");
            return EXIT_NOT_READY;
        }
    };
    // Ctrl-C or a SIGTERM to simulate ends the simulation; dropping it kills the
    // service's process group, which the terminal's Ctrl-C does not reach.
    let outcome = runtime.block_on(async {
        let interrupted = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(term) => { term.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        };
        tokio::select! {
            outcome = simulate(&plan) => Some(outcome),
            _ = interrupted => None,
        }
    });
    runtime.shutdown_background();
    let Some(outcome) = outcome else {
        eprintln!("lameduck simulate: interrupted; the service was killed");
        return EXIT_INTERRUPTED;
    };
    match outcome {
        Err(why) => {
            eprintln!("lameduck simulate: {why}");
            EXIT_NOT_READY
        }
        Ok((observed, log)) => {
            if plan.json {
                println!("{}", observed.to_json());
            } else {
                print!("{}", observed.to_text());
                println!("service log: {}", log.display());
            }
            if let Some(path) = &plan.plot {
                // The program by its name, not its path: the picture is for people.
                let words: Vec<String> = plan
                    .command
                    .iter()
                    .enumerate()
                    .map(|(i, arg)| match Path::new(arg).file_name() {
                        Some(name) if i == 0 => name.to_string_lossy().into_owned(),
                        _ => arg.to_string_lossy().into_owned(),
                    })
                    .collect();
                let title = format!("lameduck simulate -- {}", words.join(" "));
                if let Err(error) = std::fs::write(path, plot::svg(&observed, &title)) {
                    eprintln!(
                        "lameduck simulate: cannot write the plot {}: {error}",
                        path.display()
                    );
                }
            }
            observed.exit_status()
        }
    }
}

/// The service process, and its end once it came.
struct Service {
    pid: Pid,
    exited: watch::Receiver<Option<(ExitStatus, Instant)>>,
}

impl Service {
    fn start(plan: &Plan, log: &Path, termination_log: Option<&Path>) -> Result<Self, String> {
        let (program, args) = plan
            .command
            .split_first()
            .ok_or_else(|| "no command given".to_owned())?;
        let out = std::fs::File::create(log)
            .map_err(|e| format!("cannot create the service log {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot share the service log: {e}"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // The service dies with simulate even when simulate is killed (SIGKILL, OOM).
        crate::child::tie_to_runner(&mut command, None);
        if let Some(path) = termination_log {
            command.env(TERMINATION_LOG_VAR, path);
        }
        if plan.pod_env {
            for (name, value) in POD_ENV {
                if std::env::var_os(name).is_none() {
                    command.env(name, value);
                }
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
        let pid = i32::try_from(child.id())
            .map(Pid::from_raw)
            .map_err(|_| "the service's pid is out of range".to_owned())?;
        let (tell, exited) = watch::channel(None);
        std::thread::Builder::new()
            .name("simulate-wait".into())
            .spawn(move || {
                if let Ok(status) = child.wait() {
                    let _ = tell.send(Some((status, Instant::now())));
                }
            })
            .map_err(|e| format!("cannot watch the service: {e}"))?;
        // What `Drop` does, for a panic in a build that aborts on panic.
        crate::on_panic::on_panic(move || {
            let _ = killpg(pid, Signal::SIGKILL);
        });
        Ok(Service { pid, exited })
    }

    fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    async fn wait(&self) -> (ExitStatus, Instant) {
        let mut exited = self.exited.clone();
        loop {
            if let Some(end) = *exited.borrow_and_update() {
                return end;
            }
            if exited.changed().await.is_err() {
                // The watcher thread ended without a status (the wait failed): nothing
                // more will come; the caller's deadline (the grace period, then the
                // patience after SIGKILL) ends the wait.
                std::future::pending::<()>().await;
            }
        }
    }

    /// SIGKILL to the whole process group (what a container runtime's kill does).
    fn kill_all(&self) {
        let _ = killpg(self.pid, Signal::SIGKILL);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Nothing the simulation started outlives it.
        self.kill_all();
    }
}

/// One probe: when it began, when it ended, and why it failed.
#[derive(Debug, Clone)]
struct ProbeResult {
    began: Instant,
    ended: Instant,
    failure: Option<String>,
}

/// The kubelet's verdict on one GET: 200–399 within the timeout passes.
async fn probe(target: &Target) -> Option<String> {
    let request = GetRequest {
        url: target.clone(),
        headers: Vec::new(),
        default_user_agent: format!("lameduck-simulate/{}", env!("CARGO_PKG_VERSION")),
        timeout: PROBE_TIMEOUT,
    };
    match http_get::get(&request).await {
        Ok(response) if response.status.is_success() || response.status.is_redirection() => None,
        Ok(response) => Some(format!("answered {}", response.status)),
        Err(error) => Some(error.to_string()),
    }
}

/// Probes `target` every `period` until `stop` turns true.
fn probe_every(
    target: Target,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<ProbeResult>> {
    tokio::spawn(async move {
        let mut results = Vec::new();
        loop {
            let began = Instant::now();
            let failure = probe(&target).await;
            results.push(ProbeResult {
                began,
                ended: Instant::now(),
                failure,
            });
            tokio::select! {
                _ = sleep_until(began + period) => {}
                _ = stop.wait_for(|stop| *stop) => return results,
            }
        }
    })
}

/// A fresh directory for the service's log and termination message.
fn scratch_dir() -> Result<PathBuf, String> {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir =
        std::env::temp_dir().join(format!("lameduck-simulate-{}-{unique}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The simulation; what was observed and where the service's log is, or why the service
/// never became ready.
async fn simulate(plan: &Plan) -> Result<(Observed, PathBuf), String> {
    let dir = scratch_dir()?;
    let log = plan
        .service_log
        .clone()
        .unwrap_or_else(|| dir.join("service.log"));
    // Another process answering where the service is to serve would be judged in its
    // place (a stale instance, a port taken).
    for (flag, target) in [("--ready", &plan.ready), ("--traffic", &plan.traffic)] {
        if http_get::connect(target.host(), target.port())
            .await
            .is_ok()
        {
            return Err(format!(
                "something already accepts connections at {flag} {target} before the service \
                 started: stop it, or choose another port"
            ));
        }
    }
    // A termination log of the caller's own choosing is read only if the service wrote
    // it during this run.
    let own_termination_log = std::env::var_os(TERMINATION_LOG_VAR).map(PathBuf::from);
    let previous_message = own_termination_log.as_deref().and_then(modified);
    let ours = dir.join("termination-log");
    let termination_log = own_termination_log.clone().unwrap_or_else(|| ours.clone());
    let service = Service::start(
        plan,
        &log,
        own_termination_log.is_none().then_some(ours.as_path()),
    )?;

    // Starting: the startup probe.
    let started = Instant::now();
    loop {
        if let Some((status, _)) = *service.exited.borrow() {
            return Err(format!(
                "the service exited ({}) before it was ready; its log: {}",
                describe(status),
                log.display()
            ));
        }
        let failure = probe(&plan.ready).await;
        if failure.is_none() {
            break;
        }
        if started.elapsed() >= plan.startup_timeout {
            return Err(format!(
                "the service was not ready within {} ({}: {}); its log: {}",
                humantime::format_duration(plan.startup_timeout),
                plan.ready,
                failure.unwrap_or_default(),
                log.display()
            ));
        }
        sleep(STARTUP_POLL).await;
    }

    // Ready: traffic and probes.
    let (stop_probes, probes_stop) = watch::channel(false);
    let ready_probes = probe_every(plan.ready.clone(), plan.probe_period, probes_stop.clone());
    let live_probes = plan
        .live
        .clone()
        .map(|live| probe_every(live, plan.probe_period, probes_stop.clone()));
    let load_started = Instant::now();
    // The load's clock starts a whole number of seconds before the trigger, so that its
    // per-second buckets begin at the trigger (slots before `load_started` are skipped).
    let whole_seconds_before = plan.before.as_secs() + u64::from(plan.before.subsec_nanos() > 0);
    let origin = (load_started + plan.before)
        .checked_sub(Duration::from_secs(whole_seconds_before))
        .unwrap_or(load_started);
    let (stop_load, load_stops) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(lameduck_load::run_from(
        plan.load.clone(),
        async move {
            let _ = load_stops.await;
        },
        origin.into_std(),
    ));

    // The trigger: preStop, then SIGTERM; traffic for the propagation window.
    let trigger = load_started + plan.before;
    sleep_until(trigger).await;
    if let Some((status, _)) = *service.exited.borrow() {
        return Err(format!(
            "the service exited ({}) {} after it was ready, before the trigger; its log: {}",
            describe(status),
            humantime::format_duration(Duration::from_millis(millis(started.elapsed()))),
            log.display()
        ));
    }
    let traffic_stops = trigger + plan.propagation;
    let stop_traffic = tokio::spawn(async move {
        sleep_until(traffic_stops).await;
        let _ = stop_load.send(());
    });
    let mut grace_ends = trigger + plan.grace;
    let mut prestop = None;
    if let Some(url) = &plan.prestop {
        let request = GetRequest {
            url: url.clone(),
            headers: Vec::new(),
            default_user_agent: format!("lameduck-simulate/{}", env!("CARGO_PKG_VERSION")),
            // The kubelet gives the hook the whole grace period.
            timeout: plan.grace,
        };
        let answer = match http_get::get(&request).await {
            Ok(response) => format!("answered {}", response.status),
            Err(error) => error.to_string(),
        };
        prestop = Some((millis(trigger.elapsed()), answer));
        if Instant::now() >= grace_ends {
            // The kubelet's one-off extension for a preStop hook that used the whole grace
            // period, so SIGTERM still gets a moment.
            grace_ends = Instant::now() + PRESTOP_EXTENSION;
        }
    }
    let sigterm_at = Instant::now();
    if !service.has_exited() {
        let _ = kill(service.pid, Signal::SIGTERM);
    }
    let mut killed = false;
    let (status, exit_at) = tokio::select! {
        end = service.wait() => end,
        _ = sleep_until(grace_ends) => {
            killed = true;
            service.kill_all();
            tokio::time::timeout(KILL_PATIENCE, service.wait())
                .await
                .map_err(|_| format!(
                    "the service (pid {}) did not end within {} of SIGKILL",
                    service.pid,
                    humantime::format_duration(KILL_PATIENCE)
                ))?
        }
    };
    let _ = stop_probes.send(true);
    let _ = stop_traffic.await;
    let report = load
        .await
        .map_err(|e| format!("the load generator failed: {e}"))?;
    let ready_results = ready_probes.await.unwrap_or_default();
    let live_results = match live_probes {
        Some(handle) => Some(handle.await.unwrap_or_default()),
        None => None,
    };
    service.kill_all();

    let offset_ms = i64::try_from(millis(trigger - origin)).unwrap_or(i64::MAX);
    let failures = report
        .failures_at
        .iter()
        .map(|f| Failure {
            at_ms: i64::try_from(f.at_ms).unwrap_or(i64::MAX) - offset_ms,
            class: f.class,
        })
        .collect();
    let offset_s = i64::try_from(whole_seconds_before).unwrap_or(i64::MAX);
    let timeline = report
        .timeline
        .iter()
        .map(|bucket| Second {
            from_s: i64::try_from(bucket.second).unwrap_or(i64::MAX) - offset_s,
            counts: Class::ALL
                .iter()
                .map(|&c| (c, bucket.counts.get(c)))
                .collect(),
        })
        .collect();
    // A probe counts when it ended while the process still ran: one that failed because
    // the process went is no verdict on a running container.
    let during =
        |result: &&ProbeResult| result.began >= trigger && result.ended + EXIT_MARGIN < exit_at;
    let ready_during: Vec<&ProbeResult> = ready_results.iter().filter(during).collect();
    let ready_flip_ms = ready_during
        .iter()
        .find(|r| r.failure.is_some())
        .map(|r| millis(r.began - trigger));
    let live_during: Vec<&ProbeResult> = live_results.iter().flatten().filter(during).collect();
    let live_failed_before = live_results
        .iter()
        .flatten()
        .filter(|r| r.began < trigger && r.failure.is_some())
        .count() as u64;
    let live_failed: Vec<&&ProbeResult> =
        live_during.iter().filter(|r| r.failure.is_some()).collect();
    let written_now = own_termination_log.is_none()
        || modified(&termination_log).is_some_and(|at| Some(at) != previous_message);
    let termination_message = written_now
        .then(|| std::fs::read_to_string(&termination_log).ok())
        .flatten()
        .filter(|text| !text.trim().is_empty());
    if own_termination_log.is_none() && plan.service_log.is_some() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let observed = Observed {
        requests: Class::ALL
            .iter()
            .map(|&c| (c, report.counts.get(c)))
            .collect(),
        failures,
        failures_untimed: report.failures_at_dropped,
        errors: report.errors.clone(),
        timeline,
        sigterm_ms: millis(sigterm_at - trigger),
        prestop,
        ready_flip_ms,
        ready_probes: ready_during.len() as u64,
        live_probes: live_results.as_ref().map(|_| live_during.len() as u64),
        liveness_failures: live_failed.len() as u64,
        liveness_failure: live_failed.first().and_then(|r| r.failure.clone()),
        liveness_failures_before: live_failed_before,
        rate_asked: plan.load.rate,
        full_seconds_before: plan.before.as_secs(),
        exit_ms: millis(exit_at.saturating_duration_since(trigger)),
        exit_code: exit_code(status),
        killed,
        propagation: plan.propagation,
        grace: plan.grace,
        termination_message,
    };
    Ok((observed, log))
}

/// When the file at `path` was last written, if it exists.
fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The shell's convention: the code, or 128+N for a signal N.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn describe(status: ExitStatus) -> String {
    format!("status {}", exit_code(status))
}

/// The parts a test checks without a process.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_128_plus_its_number() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
    }
}
