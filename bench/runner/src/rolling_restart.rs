//! Part 2: a rolling restart behind a real reverse proxy.
//!
//! nginx (a non-daemon process, config, pid, logs and temp paths in a temp dir, listening
//! on 127.0.0.1) proxies to 3 replicas with upstream keep-alive (`keepalive 32;
//! proxy_http_version 1.1; proxy_set_header Connection "";`). Clients send `POST /orders`
//! at a steady rate while the replicas are restarted one by one, the way Kubernetes does
//! it:
//!
//! 1. SIGTERM to replica i and, at the same moment, start the endpoint update: after the
//!    propagation lag (1 s) the upstream is rewritten without it and nginx reloaded;
//! 2. wait for it to exit (and for the reload);
//! 3. start a replacement on the same port and wait until it is ready (lameduck: admin
//!    `/readyz` 200; baseline: `GET /ready` 200);
//! 4. put it back in the upstream, reload, let it take traffic for a moment, next replica.
//!
//! lameduck's replicas are `orders` with `LAMEDUCK_SHUTDOWN_DELAY` = 3 s (≥ lag + reload
//! time); the baseline's are `baseline-axum`, and the third side's are `baseline-axum` with
//! `BASELINE_SHUTDOWN_DELAY` = the same 3 s ("axum + the same delay"; in quick mode only
//! under `proxy_next_upstream off`, to keep it short).
//!
//! A request nginx wrote to a replica that then closed the connection without answering
//! ("written, never answered") does not reach the client as such: nginx does not resend a
//! POST it has sent, and answers the client 502 (the client's `status_5xx`). nginx's error
//! log names each (`upstream prematurely closed connection` / `recv() failed` `while
//! reading response header from upstream`); [`SideOutcome::unanswered_upstream`] counts
//! them.
//!
//! Two proxy settings are measured, since they decide what a client sees:
//!
//! - nginx's default, `proxy_next_upstream error timeout`: nginx does not resend a POST
//!   that reached an upstream, but it does retry a refused *connect* on the next upstream
//!   (nothing was sent yet), which hides a replica that stopped listening;
//! - `proxy_next_upstream off`: no retry at all, as with a Kubernetes Service (kube-proxy)
//!   or any proxy that does not retry.
//!
//! Clients open a new connection to nginx per request (`Connection: close`). With
//! keep-alive between client and nginx, every `nginx -s reload` closes the old workers'
//! idle client connections and races with requests arriving on them: a proxy artefact,
//! whatever the backend. A control run (same load, client keep-alive, reloads only and no
//! restart) measures it and is reported beside the results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use lameduck_loadgen::{LoadConfig, LoadReport, Method};
use serde::{Deserialize, Serialize};

use crate::process::{Bins, Ready, Service, Side, Spec, free_port, http_request, local, ms};

const READY_WITHIN: Duration = Duration::from_secs(15);

/// What part 2 runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) replicas: usize,
    /// Times every replica is restarted.
    pub(crate) rounds: usize,
    pub(crate) connections: usize,
    /// Aggregate `POST /orders` per second, through nginx.
    pub(crate) rate: u64,
    /// From SIGTERM to the upstream rewrite + reload, ms.
    pub(crate) lag_ms: u64,
    /// lameduck's `LAMEDUCK_SHUTDOWN_DELAY`, ms.
    pub(crate) shutdown_delay_ms: u64,
    /// Steady load before the first restart and after the last, ms.
    pub(crate) steady_ms: u64,
    /// Pause after a replacement is back in the upstream, before the next restart, ms.
    pub(crate) settle_ms: u64,
    /// Reloads in the control run (one every `control_interval_ms`).
    pub(crate) control_reloads: usize,
    pub(crate) control_interval_ms: u64,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Settings {
        Settings {
            replicas: 3,
            rounds: if quick { 1 } else { 2 },
            connections: 32,
            rate: if quick { 400 } else { 600 },
            lag_ms: 1000,
            shutdown_delay_ms: 3000,
            steady_ms: if quick { 1000 } else { 2000 },
            settle_ms: if quick { 300 } else { 1000 },
            control_reloads: if quick { 6 } else { 12 },
            control_interval_ms: 1000,
        }
    }
}

/// The proxy's retry setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Retry {
    /// nginx's default `proxy_next_upstream error timeout`.
    Default,
    /// `proxy_next_upstream off`.
    Off,
}

impl Retry {
    pub(crate) fn directive(self) -> &'static str {
        match self {
            Retry::Default => "proxy_next_upstream error timeout",
            Retry::Off => "proxy_next_upstream off",
        }
    }
}

/// One replica's restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Restart {
    pub(crate) replica: usize,
    /// SIGTERM to exit (waitpid), ms.
    pub(crate) sigterm_to_exit_ms: f64,
    pub(crate) exit_code: i32,
    /// How long `nginx -s reload` (the removal) took to return, ms.
    pub(crate) removal_reload_ms: f64,
    /// Replacement start to ready, ms.
    pub(crate) start_to_ready_ms: f64,
}

/// All restarts of one side under one proxy setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SideOutcome {
    pub(crate) side: Side,
    pub(crate) service: String,
    /// The baseline with `BASELINE_SHUTDOWN_DELAY` = lameduck's delay.
    #[serde(default)]
    pub(crate) delayed: bool,
    /// loadgen's report of the client side (through nginx).
    pub(crate) report: LoadReport,
    pub(crate) restarts: Vec<Restart>,
    /// nginx's error log, by message (variable parts removed), with counts.
    pub(crate) nginx_errors: BTreeMap<String, u64>,
}

impl SideOutcome {
    pub(crate) fn failures(&self) -> u64 {
        self.report.failures()
    }

    pub(crate) fn requests(&self) -> u64 {
        self.report.counts.total() - self.report.counts.not_sent
    }

    /// `lameduck`, `baseline` or `baseline_delay` (CSV names).
    pub(crate) fn label(&self) -> &'static str {
        crate::failed_requests::side_label(self.side, self.delayed)
    }

    /// Requests nginx wrote to a replica that closed the connection (or reset it) before a
    /// response head: written, never answered. The client got a 502 for each (nginx does
    /// not resend a POST once sent), so they are also in the client's `status_5xx`.
    pub(crate) fn unanswered_upstream(&self) -> u64 {
        self.nginx_errors
            .iter()
            .filter(|(message, _)| {
                message.starts_with("[error]")
                    && message.contains("while reading response header from upstream")
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// Both sides under one proxy setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Variant {
    pub(crate) retry: Retry,
    pub(crate) lameduck: SideOutcome,
    pub(crate) baseline: SideOutcome,
    /// `baseline-axum` with `BASELINE_SHUTDOWN_DELAY` = `shutdown_delay_ms`; `None` where
    /// it did not run (quick mode: `proxy_next_upstream error timeout`).
    #[serde(default)]
    pub(crate) baseline_delay: Option<SideOutcome>,
}

impl Variant {
    /// The sides that ran.
    pub(crate) fn sides(&self) -> impl Iterator<Item = &SideOutcome> {
        [
            Some(&self.lameduck),
            Some(&self.baseline),
            self.baseline_delay.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// The control run: client keep-alive to nginx, reloads only, no restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Control {
    pub(crate) reloads: usize,
    pub(crate) report: LoadReport,
}

/// Part 2's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) settings: Settings,
    pub(crate) nginx_version: String,
    pub(crate) variants: Vec<Variant>,
    pub(crate) control: Control,
}

pub(crate) async fn run(bins: &Bins, quick: bool, dir: &Path) -> Result<Outcome> {
    let settings = Settings::new(quick);
    let nginx = find_nginx()?;
    let version = crate::process::run_command(
        &nginx.display().to_string(),
        &["-v"],
        Duration::from_secs(10),
    )
    .await?;
    let nginx_version = String::from_utf8_lossy(&version.stderr).trim().to_owned();
    let mut variants = Vec::new();
    for retry in [Retry::Default, Retry::Off] {
        let mut sides = Vec::new();
        // The delayed baseline: in quick mode only under `off`, the setting without retries.
        let with_delayed = !quick || retry == Retry::Off;
        let kinds = [
            (Side::Lameduck, false),
            (Side::Baseline, false),
            (Side::Baseline, true),
        ];
        for (side, delayed) in kinds.into_iter().filter(|&(_, d)| with_delayed || !d) {
            let label = crate::failed_requests::side_label(side, delayed);
            let sub = dir.join(format!("{retry:?}-{label}"));
            std::fs::create_dir_all(&sub)?;
            let outcome = run_side(bins, &nginx, side, delayed, retry, &settings, &sub)
                .await
                .with_context(|| format!("{label} ({})", retry.directive()))?;
            eprintln!(
                "  [2] {label:<14} {:<36} {} requests, {} failed (refused {}, no_response {}, 5xx {}, timeout {}); written to a replica, never answered (nginx's log): {}; {} restarts",
                retry.directive(),
                outcome.requests(),
                outcome.failures(),
                outcome.report.counts.refused,
                outcome.report.counts.no_response,
                outcome.report.counts.status_5xx,
                outcome.report.counts.timeout,
                outcome.unanswered_upstream(),
                outcome.restarts.len()
            );
            sides.push(outcome);
        }
        let baseline_delay = if with_delayed { sides.pop() } else { None };
        let baseline = sides.pop().ok_or_else(|| anyhow!("no baseline outcome"))?;
        let lameduck = sides.pop().ok_or_else(|| anyhow!("no lameduck outcome"))?;
        variants.push(Variant {
            retry,
            lameduck,
            baseline,
            baseline_delay,
        });
    }
    let sub = dir.join("control");
    std::fs::create_dir_all(&sub)?;
    let control = control(bins, &nginx, &settings, &sub)
        .await
        .context("control run (reloads only)")?;
    eprintln!(
        "  [2] control: {} reloads, no restart, client keep-alive: {} requests, {} failed (no_response {}, on reused connections {})",
        control.reloads,
        control.report.counts.total() - control.report.counts.not_sent,
        control.report.failures(),
        control.report.counts.no_response,
        control.report.no_response_reused
    );
    Ok(Outcome {
        settings,
        nginx_version,
        variants,
        control,
    })
}

/// nginx on PATH, or Debian's /usr/sbin/nginx.
fn find_nginx() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "nginx not found (looked on PATH and in /usr/sbin): `bench/run` installs it \
                 (apt-get install nginx-light)"
            )
        })
}

/// The replicas of a side, on fresh ports.
fn replica_specs(
    bins: &Bins,
    side: Side,
    delayed: bool,
    settings: &Settings,
    dir: &Path,
) -> Result<Vec<Spec>> {
    (0..settings.replicas)
        .map(|i| match side {
            Side::Lameduck => Spec::lameduck(
                "orders",
                bins.get("orders")?,
                dir,
                Duration::from_millis(settings.shutdown_delay_ms),
                &[
                    (
                        "ORDERS_STATE",
                        dir.join(format!("orders-state-{i}.json"))
                            .display()
                            .to_string(),
                    ),
                    // Keep the queue short: this measures the HTTP path, not the worker.
                    ("ORDERS_WORK_TIME", "1ms".to_owned()),
                ],
            ),
            Side::Baseline if delayed => Spec::baseline_delayed(
                bins.get("baseline-axum")?,
                Duration::from_millis(settings.shutdown_delay_ms),
            ),
            Side::Baseline => Spec::baseline(bins.get("baseline-axum")?),
        })
        .collect()
}

/// Starts the replicas and nginx in front of them, and checks one request goes through.
async fn start_all(
    specs: &[Spec],
    nginx_bin: &Path,
    retry: Retry,
    dir: &Path,
) -> Result<(Vec<Option<Service>>, Nginx)> {
    let mut replicas = Vec::new();
    for spec in specs {
        replicas.push(Some(spec.start(dir, READY_WITHIN).await?));
    }
    let ports: Vec<u16> = specs.iter().map(|s| s.port).collect();
    let nginx = Nginx::start(nginx_bin, dir, &ports, retry).await?;
    // A smoke request through nginx, so a broken setup fails here with a clear message.
    let (status, body) = http_request(
        local(nginx.port),
        "POST",
        "/orders",
        Some(r#"{"item":"smoke"}"#),
        Duration::from_secs(5),
    )
    .await?;
    if status != 202 {
        bail!("POST /orders through nginx answered {status}, expected 202: {body}");
    }
    Ok((replicas, nginx))
}

fn load_config(nginx: &Nginx, settings: &Settings, keep_alive: bool) -> Result<LoadConfig> {
    let mut config = LoadConfig::new(&format!("http://127.0.0.1:{}/orders", nginx.port))?
        .json_body(r#"{"item":"bench"}"#);
    if !keep_alive {
        config = config.header("Connection: close")?;
    }
    config.method = Method::POST;
    config.connections = settings.connections;
    config.rate = settings.rate;
    config.duration = None;
    Ok(config)
}

async fn run_side(
    bins: &Bins,
    nginx_bin: &Path,
    side: Side,
    delayed: bool,
    retry: Retry,
    settings: &Settings,
    dir: &Path,
) -> Result<SideOutcome> {
    let specs = replica_specs(bins, side, delayed, settings, dir)?;
    let (mut replicas, nginx) = start_all(&specs, nginx_bin, retry, dir).await?;
    let config = load_config(&nginx, settings, false)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sequence = async {
        let result = restarts(&specs, &mut replicas, &nginx, settings, dir).await;
        tokio::time::sleep(Duration::from_millis(settings.steady_ms)).await;
        let _ = stop_tx.send(());
        result
    };
    let load = lameduck_loadgen::run(config, async {
        let _ = stop_rx.await;
    });
    let (report, restarts) = tokio::join!(load, sequence);
    let restarts = restarts?;
    let nginx_errors = nginx.errors();
    nginx.stop().await?;
    drop(replicas);
    Ok(SideOutcome {
        side,
        service: specs.first().map(|s| s.name.clone()).unwrap_or_default(),
        delayed,
        report,
        restarts,
        nginx_errors,
    })
}

/// Baseline replicas (they never stop here), client keep-alive to nginx, and only
/// `nginx -s reload` with an unchanged upstream, `control_reloads` times.
async fn control(
    bins: &Bins,
    nginx_bin: &Path,
    settings: &Settings,
    dir: &Path,
) -> Result<Control> {
    let specs = replica_specs(bins, Side::Baseline, false, settings, dir)?;
    let (replicas, nginx) = start_all(&specs, nginx_bin, Retry::Default, dir).await?;
    let ports: Vec<u16> = specs.iter().map(|s| s.port).collect();
    let config = load_config(&nginx, settings, true)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reloads = async {
        let mut result = Ok(());
        for _ in 0..settings.control_reloads {
            tokio::time::sleep(Duration::from_millis(settings.control_interval_ms)).await;
            if let Err(e) = nginx.set_upstream(&ports).await {
                result = Err(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(settings.control_interval_ms)).await;
        let _ = stop_tx.send(());
        result
    };
    let load = lameduck_loadgen::run(config, async {
        let _ = stop_rx.await;
    });
    let (report, reloaded) = tokio::join!(load, reloads);
    reloaded?;
    nginx.stop().await?;
    drop(replicas);
    Ok(Control {
        reloads: settings.control_reloads,
        report,
    })
}

async fn restarts(
    specs: &[Spec],
    replicas: &mut [Option<Service>],
    nginx: &Nginx,
    settings: &Settings,
    dir: &Path,
) -> Result<Vec<Restart>> {
    let all: Vec<u16> = specs.iter().map(|s| s.port).collect();
    tokio::time::sleep(Duration::from_millis(settings.steady_ms)).await;
    let mut done = Vec::new();
    for _round in 0..settings.rounds {
        for (i, spec) in specs.iter().enumerate() {
            let old = replicas[i]
                .take()
                .ok_or_else(|| anyhow!("replica {i} is not running"))?;
            let without: Vec<u16> = all.iter().copied().filter(|&p| p != spec.port).collect();
            // SIGTERM and the endpoint update start together; the update lands after the lag.
            let sent = old.sigterm()?;
            let removal = async {
                tokio::time::sleep_until((sent + Duration::from_millis(settings.lag_ms)).into())
                    .await;
                nginx.set_upstream(&without).await
            };
            let exit = old.wait_exit(
                Duration::from_millis(settings.shutdown_delay_ms) + Duration::from_secs(30),
            );
            let (removal, exit) = tokio::join!(removal, exit);
            let (removal, exit) = (removal?, exit?);
            drop(old);
            let started = Instant::now();
            let new = spec.spawn(dir)?;
            new.wait_ready(READY_WITHIN).await?;
            let start_to_ready = started.elapsed();
            replicas[i] = Some(new);
            nginx.set_upstream(&all).await?;
            done.push(Restart {
                replica: i,
                sigterm_to_exit_ms: ms(exit.at.saturating_duration_since(sent)),
                exit_code: exit.code(),
                removal_reload_ms: ms(removal),
                start_to_ready_ms: ms(start_to_ready),
            });
            tokio::time::sleep(Duration::from_millis(settings.settle_ms)).await;
        }
    }
    Ok(done)
}

/// nginx in the foreground (`daemon off`), everything in its own directory.
struct Nginx {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    service: Service,
}

impl Nginx {
    async fn start(bin: &Path, parent: &Path, ports: &[u16], retry: Retry) -> Result<Nginx> {
        let dir = parent.join("nginx");
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        std::fs::write(dir.join("nginx.conf"), config(&dir, port, retry))?;
        std::fs::write(dir.join("upstream.conf"), upstream(ports))?;
        let spec = Spec {
            name: "nginx".to_owned(),
            program: bin.to_path_buf(),
            args: nginx_args(&dir),
            env: Vec::new(),
            port,
            ready: Ready {
                port,
                path: "/nginx-ready".to_owned(),
            },
            report: None,
            own_group: true,
            cpus: None,
        };
        let service = spec.spawn(&dir)?;
        let nginx = Nginx {
            bin: bin.to_path_buf(),
            dir,
            port,
            service,
        };
        if let Err(e) = nginx.service.wait_ready(READY_WITHIN).await {
            bail!(
                "nginx did not start: {e:#}\nits error log:\n{}",
                nginx.error_log_tail()
            );
        }
        Ok(nginx)
    }

    /// Rewrites the upstream and reloads nginx (`nginx -s reload`); returns how long the
    /// reload command took.
    async fn set_upstream(&self, ports: &[u16]) -> Result<Duration> {
        std::fs::write(self.dir.join("upstream.conf"), upstream(ports))?;
        let start = Instant::now();
        let mut args = nginx_args(&self.dir);
        args.extend(["-s".to_owned(), "reload".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::process::run_command(
            &self.bin.display().to_string(),
            &args,
            Duration::from_secs(10),
        )
        .await
        .context("nginx -s reload")?;
        Ok(start.elapsed())
    }

    /// Graceful stop (SIGQUIT): the master waits for its workers.
    async fn stop(self) -> Result<()> {
        self.service.signal(nix::sys::signal::Signal::SIGQUIT)?;
        self.service.wait_exit(Duration::from_secs(15)).await?;
        Ok(())
    }

    fn error_log_tail(&self) -> String {
        crate::process::log_tail(&self.dir.join("error.log"), 20)
    }

    /// nginx's error log by message, counted.
    fn errors(&self) -> BTreeMap<String, u64> {
        let text = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            if let Some(message) = error_message(line) {
                *counts.entry(message).or_insert(0) += 1;
            }
        }
        counts
    }
}

fn nginx_args(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        "-p".to_owned(),
        format!("{d}/"),
        "-c".to_owned(),
        format!("{d}/nginx.conf"),
        "-e".to_owned(),
        format!("{d}/error.log"),
    ]
}

fn config(dir: &Path, port: u16, retry: Retry) -> String {
    let d = dir.display();
    let retry = retry.directive();
    format!(
        r#"# Written by lameduck-bench (part 2: rolling restart).
daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        location = /nginx-ready {{
            return 200 "ok\n";
        }}
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {retry};
        }}
    }}
}}
"#
    )
}

fn upstream(ports: &[u16]) -> String {
    let mut out = String::from("upstream replicas {\n");
    for port in ports {
        out.push_str(&format!("    server 127.0.0.1:{port};\n"));
    }
    out.push_str("    keepalive 32;\n}\n");
    out
}

/// `2024/01/01 00:00:00 [error] 123#123: *45 upstream prematurely closed connection while
/// reading response header from upstream, client: ...` → `[error] upstream prematurely
/// closed connection while reading response header from upstream`.
fn error_message(line: &str) -> Option<String> {
    let level_at = line.find(" [")?;
    let rest = &line[level_at + 1..];
    let (level, rest) = rest.split_once("] ")?;
    let level = format!("{level}]");
    // Skip `PID#TID: ` and an optional `*CONN `.
    let rest = rest.split_once(": ").map_or(rest, |(_, r)| r);
    let rest = match rest.strip_prefix('*') {
        Some(r) => r.split_once(' ').map_or(r, |(_, r)| r),
        None => rest,
    };
    let message = rest.split(", client:").next().unwrap_or(rest);
    // Drop "upstream: ..." ports etc. that differ per replica.
    let message = message.split(", upstream:").next().unwrap_or(message);
    Some(format!("{level} {}", message.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_config_and_upstream() {
        let conf = config(Path::new("/tmp/x"), 8081, Retry::Off);
        assert!(conf.contains("listen 127.0.0.1:8081;"));
        assert!(conf.contains("proxy_set_header Connection \"\";"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
        assert!(conf.contains("proxy_next_upstream off;"));
        let up = upstream(&[1, 2]);
        assert_eq!(
            up,
            "upstream replicas {\n    server 127.0.0.1:1;\n    server 127.0.0.1:2;\n    keepalive 32;\n}\n"
        );
    }

    #[test]
    fn counts_requests_written_upstream_and_never_answered() {
        let mut side = SideOutcome {
            side: Side::Baseline,
            service: "baseline-axum".to_owned(),
            delayed: true,
            report: LoadReport::default(),
            restarts: Vec::new(),
            nginx_errors: BTreeMap::new(),
        };
        for (message, n) in [
            (
                "[error] upstream prematurely closed connection while reading response header from upstream",
                2,
            ),
            (
                "[error] recv() failed (104: Connection reset by peer) while reading response header from upstream",
                1,
            ),
            (
                "[error] connect() failed (111: Connection refused) while connecting to upstream",
                5,
            ),
            ("[notice] signal process started", 3),
        ] {
            side.nginx_errors.insert(message.to_owned(), n);
        }
        assert_eq!(side.unanswered_upstream(), 3);
        assert_eq!(side.label(), "baseline_delay");
    }

    #[test]
    fn normalises_error_lines() {
        let line = "2026/11/22 03:20:49 [error] 123#123: *45 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: , request: \"POST /orders HTTP/1.1\", upstream: \"http://127.0.0.1:4000/orders\", host: \"127.0.0.1:1\"";
        assert_eq!(
            error_message(line).as_deref(),
            Some(
                "[error] upstream prematurely closed connection while reading response header from upstream"
            )
        );
        let line = "2026/11/22 03:20:49 [notice] 1#1: signal process started";
        assert_eq!(
            error_message(line).as_deref(),
            Some("[notice] signal process started")
        );
    }
}
