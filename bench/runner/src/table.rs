//! Output: the machine, the results table (Markdown, printed and written to `table.md`),
//! the CSVs, and the goals each result is held against.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use lameduck_loadgen::Counts;
use serde::{Deserialize, Serialize};

use crate::Results;

/// What the numbers were measured on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory_gib: f64,
    pub(crate) kernel: String,
    pub(crate) open_files_limit: u64,
}

/// The `cpu` line of /proc/stat: (all jiffies, steal jiffies).
pub(crate) fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest and guest_nice are in user).
    let total = fields.iter().take(8).sum();
    Some((total, *fields.get(7)?))
}

/// The steal share between two [`cpu_times`] readings, %.
pub(crate) fn steal_percent(start: Option<(u64, u64)>, end: Option<(u64, u64)>) -> Option<f64> {
    let ((total0, steal0), (total1, steal1)) = (start?, end?);
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    Some(steal1.saturating_sub(steal0) as f64 * 100.0 / total as f64)
}

impl Machine {
    pub(crate) fn detect(open_files_limit: u64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            memory_gib: mem_kib / 1024.0 / 1024.0,
            kernel,
            open_files_limit,
        }
    }
}

/// Where a result stands against its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Met,
    Missed,
}

impl Status {
    fn of(met: bool) -> Status {
        if met { Status::Met } else { Status::Missed }
    }

    fn word(self) -> &'static str {
        match self {
            Status::Met => "**met**",
            Status::Missed => "**missed**",
        }
    }
}

/// One line of the table (and of `summary.csv`).
struct Row {
    part: &'static str,
    what: String,
    lameduck: String,
    baseline: String,
    /// Parts 1 and 2: `baseline-axum` with `BASELINE_SHUTDOWN_DELAY` = lameduck's delay.
    delayed: String,
    goal: String,
    status: String,
}

/// Thousands separators: 12345 → 12,345.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn classes(c: &Counts) -> String {
    format!(
        "refused {}, written but never answered {}, 5xx {}, timeout {}",
        thousands(c.refused),
        thousands(c.no_response),
        thousands(c.status_5xx),
        thousands(c.timeout)
    )
}

fn failed(failures: u64, requests: u64, c: &Counts) -> String {
    format!(
        "**{}** of {} ({})",
        thousands(failures),
        thousands(requests),
        classes(c)
    )
}

fn latency(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(o) = &r.failed_requests {
        let s = &o.settings;
        let after_window = if s.stay_max_ms > 0 {
            format!(
                ", then clients stay on their keep-alive connections until the service closes them (no new connections; at most {} s)",
                secs(s.stay_max_ms)
            )
        } else {
            String::new()
        };
        let part1 = |side: &crate::failed_requests::SideOutcome| {
            let mut cell = failed(side.failures(), side.requests(), &side.totals);
            if s.stay_max_ms > 0 {
                cell += &match side.last_left_after_window_ms() {
                    Some(ms) => format!("; last client gone {} s after the window", secs(ms)),
                    None => "; some clients still connected when stopped".to_owned(),
                };
            }
            cell
        };
        rows.push(Row {
            part: "1",
            what: format!(
                "Failed requests across a shutdown: `GET /`, {} keep-alive connections at {}/s; SIGTERM after {} s, traffic (new connections too) for {} s more{after_window} (lameduck: `LAMEDUCK_SHUTDOWN_DELAY={} s`); {} run(s) per side",
                s.connections,
                thousands(s.rate),
                s.before_ms as f64 / 1000.0,
                s.window_ms as f64 / 1000.0,
                s.shutdown_delay_ms as f64 / 1000.0,
                s.trials
            ),
            lameduck: part1(&o.lameduck),
            baseline: part1(&o.baseline),
            delayed: match &o.baseline_delay {
                Some(d) => part1(d),
                None => "not run".to_owned(),
            },
            goal: "0 failed (lameduck)".to_owned(),
            status: Status::of(o.lameduck.failures() == 0).word().to_owned(),
        });
    }
    if let Some(o) = &r.rolling_restart {
        let s = &o.settings;
        let restarts = |side: &crate::rolling_restart::SideOutcome| {
            let max = side
                .restarts
                .iter()
                .map(|r| r.sigterm_to_exit_ms)
                .fold(0.0_f64, f64::max);
            format!(
                "; {} restarts, SIGTERM→exit ≤ {}",
                side.restarts.len(),
                if max >= 10.0 {
                    format!("{max:.0} ms")
                } else {
                    format!("{max:.1} ms")
                }
            )
        };
        for v in &o.variants {
            rows.push(Row {
                part: "2",
                what: format!(
                    "Rolling restart behind nginx, `{}`: `POST /orders` at {}/s ({} clients, a new connection to nginx per request); {} replicas restarted one by one, {} round(s); endpoint removal (upstream rewrite + `nginx -s reload`) {} s after SIGTERM (lameduck: `orders`, `LAMEDUCK_SHUTDOWN_DELAY={} s`)",
                    v.retry.directive(),
                    thousands(s.rate),
                    s.connections,
                    s.replicas,
                    s.rounds,
                    s.lag_ms as f64 / 1000.0,
                    s.shutdown_delay_ms as f64 / 1000.0
                ),
                lameduck: failed(v.lameduck.failures(), v.lameduck.requests(), &v.lameduck.report.counts)
                    + &restarts(&v.lameduck),
                baseline: failed(v.baseline.failures(), v.baseline.requests(), &v.baseline.report.counts)
                    + &restarts(&v.baseline),
                delayed: match &v.baseline_delay {
                    Some(d) => failed(d.failures(), d.requests(), &d.report.counts) + &restarts(d),
                    None => "not run (quick mode: only under `proxy_next_upstream off`)".to_owned(),
                },
                goal: "0 failed (lameduck)".to_owned(),
                status: Status::of(v.lameduck.failures() == 0).word().to_owned(),
            });
        }
        let c = &o.control;
        rows.push(Row {
            part: "2",
            what: format!(
                "Control: the same load with keep-alive between clients and nginx, {} × `nginx -s reload` with an unchanged upstream, no restart (what the proxy's reload alone costs)",
                c.reloads
            ),
            lameduck: "—".to_owned(),
            baseline: format!(
                "{} ({} of them on reused keep-alive connections)",
                failed(c.report.failures(), c.report.counts.total() - c.report.counts.not_sent, &c.report.counts),
                thousands(c.report.no_response_reused)
            ),
            delayed: "—".to_owned(),
            goal: "—".to_owned(),
            status: "—".to_owned(),
        });
    }
    if let Some(o) = &r.overhead {
        let s = &o.settings;
        let loss = (1.0 - o.median_throughput_ratio) * 100.0;
        rows.push(Row {
            part: "3",
            what: format!(
                "Throughput, trivial `GET /` (`hello` vs bare `axum::serve`): `{}`, median of {} A/B pairs ({}; pair ratios {:.3}–{:.3})",
                o.command,
                s.pairs,
                match &s.server_cpus {
                    Some(cpus) => format!("server on CPU {cpus}, wrk on the others"),
                    None => "wrk shares the core with the server".to_owned(),
                },
                o.min_throughput_ratio,
                o.max_throughput_ratio,
            ),
            lameduck: format!("{} req/s", thousands(o.lameduck_median_rps.round() as u64)),
            baseline: format!("{} req/s", thousands(o.baseline_median_rps.round() as u64)),
            delayed: "—".to_owned(),
            goal: "< 2 % lower than bare axum".to_owned(),
            status: format!(
                "{} (ratio {:.3}: {:+.1} %)",
                Status::of(loss < 2.0).word(),
                o.median_throughput_ratio,
                -loss
            ),
        });
        let more = (o.median_p99_ratio - 1.0) * 100.0;
        rows.push(Row {
            part: "3",
            what: "p99 latency, same runs".to_owned(),
            lameduck: latency(o.lameduck_median_p99_us),
            baseline: latency(o.baseline_median_p99_us),
            delayed: "—".to_owned(),
            goal: "< 5 % higher than bare axum".to_owned(),
            status: format!(
                "{} (ratio {:.3}: {:+.1} %)",
                Status::of(more < 5.0).word(),
                o.median_p99_ratio,
                more
            ),
        });
        let more_cpu = (o.median_cpu_ratio - 1.0) * 100.0;
        rows.push(Row {
            part: "3",
            what: "Server CPU time per request (all threads, `/proc/PID/task/*/schedstat`; a hypervisor's steal time is not in it), same runs".to_owned(),
            lameduck: format!("{:.2} µs", o.lameduck_median_cpu_ns / 1000.0),
            baseline: format!("{:.2} µs", o.baseline_median_cpu_ns / 1000.0),
            delayed: "—".to_owned(),
            goal: "—".to_owned(),
            status: format!("ratio {:.3}: {more_cpu:+.1} %", o.median_cpu_ratio),
        });
        let i = &o.instructions;
        match (&i.skipped, &i.lameduck, &i.baseline, i.ratio) {
            (None, Some(l), Some(b), Some(ratio)) => rows.push(Row {
                part: "3",
                what: format!(
                    "User-space instructions per request, counted by callgrind (`{}`): steady from run to run, unlike throughput on a shared machine; the kernel's share, the same on both sides, is not in it",
                    i.command
                ),
                lameduck: format!("{} ({} requests)", thousands(l.per_request.round() as u64), thousands(l.requests)),
                baseline: format!("{} ({} requests)", thousands(b.per_request.round() as u64), thousands(b.requests)),
                delayed: "—".to_owned(),
                goal: "—".to_owned(),
                status: format!("ratio {ratio:.3}: {:+.1} %", (ratio - 1.0) * 100.0),
            }),
            (reason, ..) => rows.push(Row {
                part: "3",
                what: "User-space instructions per request (callgrind)".to_owned(),
                lameduck: format!(
                    "not run: {}",
                    reason.as_deref().unwrap_or("incomplete counts")
                ),
                baseline: "—".to_owned(),
                delayed: "—".to_owned(),
                goal: "—".to_owned(),
                status: "—".to_owned(),
            }),
        }
        let c = &o.criterion;
        match &c.skipped {
            Some(reason) => rows.push(Row {
                part: "3",
                what: "`InFlightLayer` micro-benchmark (criterion)".to_owned(),
                lameduck: format!("not run: {reason}"),
                baseline: "—".to_owned(),
                delayed: "—".to_owned(),
                goal: "—".to_owned(),
                status: "—".to_owned(),
            }),
            None => {
                for group in ["trivial service_fn", "axum router"] {
                    if let Some((bare, layered)) = c.group(group) {
                        rows.push(Row {
                            part: "3",
                            what: format!(
                                "`InFlightLayer` cost per request, {group} (criterion, `{}`)",
                                c.command
                            ),
                            lameduck: format!("{layered:.0} ns (+{:.0} ns)", layered - bare),
                            baseline: format!("{bare:.0} ns"),
                            delayed: "—".to_owned(),
                            goal: "—".to_owned(),
                            status: "—".to_owned(),
                        });
                    }
                }
            }
        }
    }
    if let Some(o) = &r.drain_speed {
        let s = &o.settings;
        rows.push(Row {
            part: "4",
            what: format!(
                "Drain speed: SIGTERM → exit (waitpid) with {} idle keep-alive connections (lameduck: `orders`, delay 0, so Stopping starts at SIGTERM); median of {}",
                thousands(s.idle_connections as u64),
                s.trials
            ),
            lameduck: match o.lameduck_idle_median_stopping_ms {
                Some(stopping) => format!(
                    "{:.1} ms (its report: Stopping {stopping:.0} ms)",
                    o.lameduck.idle_median_exit_ms
                ),
                None => format!("{:.1} ms", o.lameduck.idle_median_exit_ms),
            },
            baseline: format!("{:.1} ms", o.baseline.idle_median_exit_ms),
            delayed: "—".to_owned(),
            goal: "≤ 1.15 × the floor (SIGKILL, next row) of the same run".to_owned(),
            status: {
                let met = if o.floor.is_empty() {
                    "not measured (no floor)"
                } else {
                    Status::of(
                        o.lameduck.idle_median_exit_ms <= 1.15 * o.floor_median_exit_ms,
                    )
                    .word()
                };
                let floor = if o.floor.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (×{:.2} the floor, {:.1} ms)",
                        o.lameduck.idle_median_exit_ms / o.floor_median_exit_ms,
                        o.floor_median_exit_ms
                    )
                };
                if s.idle_connections < 10_000 {
                    format!(
                        "{met} (quick mode: {} connections{floor})",
                        thousands(s.idle_connections as u64)
                    )
                } else {
                    format!("{met}{floor}")
                }
            },
        });
        if !o.floor.is_empty() {
            rows.push(Row {
                part: "4",
                what: format!(
                    "Floor: the baseline with the same {} idle connections, SIGKILL → exit (waitpid): the kernel tearing down the process and its sockets, which no graceful exit can beat; median of {}",
                    thousands(s.idle_connections as u64),
                    o.floor.len()
                ),
                lameduck: "—".to_owned(),
                baseline: format!("{:.1} ms", o.floor_median_exit_ms),
                delayed: "—".to_owned(),
                goal: "—".to_owned(),
                status: format!(
                    "lameduck's exit {:+.1} ms beyond it",
                    o.lameduck.idle_median_exit_ms - o.floor_median_exit_ms
                ),
            });
        }
        let slow = |side: &crate::drain_speed::SideOutcome| {
            let ok: u64 = side.slow.iter().map(|t| t.ok).sum();
            let all: usize = side.slow.iter().map(|t| t.requests).sum();
            format!(
                "{:.0} ms ({} of {} answered; exit {:.1} ms after the last response)",
                side.slow_median_exit_ms,
                thousands(ok),
                thousands(all as u64),
                side.slow_median_after_last_ms
            )
        };
        rows.push(Row {
            part: "4",
            what: format!(
                "Drain speed: SIGTERM → exit with {} in-flight `GET /work?ms={}` (SIGTERM ~0.3 s after they were sent); median of {}",
                thousands(s.slow_requests as u64),
                s.slow_ms,
                s.trials
            ),
            lameduck: slow(&o.lameduck),
            baseline: slow(&o.baseline),
            delayed: "—".to_owned(),
            goal: "—".to_owned(),
            status: "—".to_owned(),
        });
    }
    if let Some(o) = &r.memory {
        let side = |s: &crate::memory::SideOutcome| {
            format!(
                "{:.1} KiB ({} → {} KiB RSS)",
                s.bytes_per_connection / 1024.0,
                thousands(s.rss_before_kib),
                thousands(s.rss_with_connections_kib)
            )
        };
        rows.push(Row {
            part: "5",
            what: format!(
                "Resident memory per idle keep-alive connection ({} connections)",
                thousands(o.settings.connections as u64)
            ),
            lameduck: side(&o.lameduck),
            baseline: side(&o.baseline),
            delayed: "—".to_owned(),
            goal: "—".to_owned(),
            status: "—".to_owned(),
        });
    }
    if let Some(o) = &r.grpc {
        let s = &o.settings;
        let side = |side: &crate::grpc::SideOutcome| {
            let (c, d) = (&side.totals, &side.detail);
            let codes = if d.status_codes.is_empty() {
                String::new()
            } else {
                let codes: Vec<String> = d
                    .status_codes
                    .iter()
                    .map(|(code, n)| format!("{code} {}", thousands(*n)))
                    .collect();
                format!(": {}", codes.join(", "))
            };
            format!(
                "**{}** of {} (unavailable before sent {} [connect failed {}, connection closed before sent {}], sent but no response {} [ended by GOAWAY {}], other status {}{codes}, timeout {})",
                thousands(side.failures()),
                thousands(side.calls()),
                thousands(c.refused),
                thousands(d.refused_connect),
                thousands(d.refused_unsent),
                thousands(c.no_response),
                thousands(d.no_response_goaway),
                thousands(c.status_5xx),
                thousands(c.timeout)
            )
        };
        rows.push(Row {
            part: "6",
            what: format!(
                "Failed RPCs across a shutdown, gRPC: unary `SayHello`, {} clients (a tonic channel each, `connect_lazy`) at {}/s; SIGTERM after {} s, calls for {} s more (lameduck: `greeter` on lameduck-tonic, `LAMEDUCK_SHUTDOWN_DELAY={} s`; baseline: `baseline-tonic`, tonic's own `Server::serve_with_shutdown`); {} run(s) per side",
                s.connections,
                thousands(s.rate),
                s.before_ms as f64 / 1000.0,
                s.window_ms as f64 / 1000.0,
                s.shutdown_delay_ms as f64 / 1000.0,
                s.trials
            ),
            lameduck: side(&o.lameduck),
            baseline: side(&o.baseline),
            delayed: "—".to_owned(),
            goal: "0 failed (lameduck)".to_owned(),
            status: Status::of(o.lameduck.failures() == 0).word().to_owned(),
        });
    }
    rows
}

fn secs(ms: u64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// What a side of parts 1 and 2 is called in the text.
fn side_name(side: crate::process::Side, delayed: bool, delay_ms: u64) -> String {
    match (side, delayed) {
        (crate::process::Side::Lameduck, _) => "lameduck".to_owned(),
        (_, false) => "plain axum".to_owned(),
        (_, true) => format!("axum + the same {} s sleep", secs(delay_ms)),
    }
}

/// How lameduck's count compares with another side's, when the numbers alone could
/// mislead.
fn edge(lameduck: u64, other: u64) -> &'static str {
    if lameduck == other {
        " (no difference in this run)"
    } else if lameduck > other {
        " (lameduck did worse in this run)"
    } else {
        ""
    }
}

fn max_ms(values: impl Iterator<Item = f64>) -> String {
    let max = values.fold(0.0_f64, f64::max);
    if max >= 10.0 {
        format!("{max:.0} ms")
    } else {
        format!("{max:.1} ms")
    }
}

/// The headline above the table: lameduck's edge in parts 1 and 2, against plain axum and
/// against axum + the same delay (what a preStop `sleep` gives plain axum).
fn headline(out: &mut String, r: &Results) {
    let mut lines = Vec::new();
    if let Some(o) = &r.failed_requests {
        let s = &o.settings;
        let (l, b) = (&o.lameduck, &o.baseline);
        let traffic = if s.stay_max_ms > 0 {
            format!(
                "new connections for {} s after SIGTERM, then clients stay on their keep-alive connections until the service closes them",
                secs(s.window_ms)
            )
        } else {
            format!("traffic for {} s after SIGTERM", secs(s.window_ms))
        };
        let mut line = format!(
            "- **Part 1** ({} shutdown(s) per side, {traffic}): against plain axum, **{}** vs **{}** failed requests{}.",
            s.trials,
            thousands(l.failures()),
            thousands(b.failures()),
            edge(l.failures(), b.failures()),
        );
        if let Some(d) = &o.baseline_delay {
            let per: Vec<String> = d
                .trials
                .iter()
                .map(|t| thousands(t.report.counts.no_response))
                .collect();
            line += &format!(
                " Against axum + the same {} s sleep: **{}** vs **{}** failed{}; of them written but never answered: **{}** vs **{}** (per shutdown: {}; on a reused keep-alive connection: {}){}.",
                secs(s.shutdown_delay_ms),
                thousands(l.failures()),
                thousands(d.failures()),
                edge(l.failures(), d.failures()),
                thousands(l.totals.no_response),
                thousands(d.totals.no_response),
                per.join(", "),
                thousands(d.no_response_reused),
                edge(l.totals.no_response, d.totals.no_response),
            );
        }
        lines.push(line);
    }
    if let Some(o) = &r.rolling_restart {
        let delay = o.settings.shutdown_delay_ms;
        for v in &o.variants {
            let sides: Vec<_> = v.sides().collect();
            let names: Vec<String> = sides
                .iter()
                .map(|x| side_name(x.side, x.delayed, delay))
                .collect();
            let failed: Vec<String> = sides
                .iter()
                .map(|x| format!("**{}**", thousands(x.failures())))
                .collect();
            let unanswered: Vec<String> = sides
                .iter()
                .map(|x| format!("**{}**", thousands(x.unanswered_upstream())))
                .collect();
            let mut line = format!(
                "- **Part 2**, `{}` ({} restarts per side): failed requests, {}: {}; written to a replica and never answered (nginx's 502s, from its error log): {}.",
                v.retry.directive(),
                v.lameduck.restarts.len(),
                names.join(" / "),
                failed.join(" / "),
                unanswered.join(" / "),
            );
            if v.baseline_delay.is_none() {
                line += " (axum + the sleep not run here: quick mode runs it only under `proxy_next_upstream off`.)";
            }
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "lameduck against plain axum and against axum + the same delay (axum's documented shutdown after a sleep as long as lameduck's delay; \"written but never answered\": the request was written, and the connection closed without a response):\n"
    );
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
}

/// Parts 1 and 2 side by side, one line per side, with every class in its own column.
fn by_side(out: &mut String, r: &Results) {
    if r.failed_requests.is_none() && r.rolling_restart.is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "\nParts 1 and 2 by side. *Written, never answered*: the request was written and the connection closed without a complete response (loadgen's `no_response`); *on reused keep-alive*: of those, the ones on a connection that had already carried a request, before any response head. Behind nginx (part 2) the client does not see that case: nginx answers it 502 (in *5xx*), and the next column counts it from nginx's error log.\n"
    );
    let _ = writeln!(
        out,
        "| part | setting | side | requests | failed | refused | written, never answered | on reused keep-alive | 5xx | timeout | behind nginx: written to a replica, never answered (502 to the client) | SIGTERM→exit (max) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut line = |part: &str,
                    setting: &str,
                    name: String,
                    requests: u64,
                    c: &Counts,
                    reused: u64,
                    upstream: String,
                    exit: String| {
        let _ = writeln!(
            out,
            "| {part} | {setting} | {name} | {} | **{}** | {} | **{}** | {} | {} | {} | {upstream} | {exit} |",
            thousands(requests),
            thousands(c.failures()),
            thousands(c.refused),
            thousands(c.no_response),
            thousands(reused),
            thousands(c.status_5xx),
            thousands(c.timeout),
        );
    };
    if let Some(o) = &r.failed_requests {
        let setting = format!("{} run(s), direct", o.settings.trials);
        for side in o.sides() {
            line(
                "1",
                &setting,
                side_name(side.side, side.delayed, o.settings.shutdown_delay_ms),
                side.requests(),
                &side.totals,
                side.no_response_reused,
                "—".to_owned(),
                max_ms(side.trials.iter().map(|t| t.sigterm_to_exit_ms)),
            );
        }
    }
    if let Some(o) = &r.rolling_restart {
        for v in &o.variants {
            let setting = format!("`{}`", v.retry.directive());
            for side in v.sides() {
                line(
                    "2",
                    &setting,
                    side_name(side.side, side.delayed, o.settings.shutdown_delay_ms),
                    side.requests(),
                    &side.report.counts,
                    side.report.no_response_reused,
                    thousands(side.unanswered_upstream()),
                    max_ms(side.restarts.iter().map(|r| r.sigterm_to_exit_ms)),
                );
            }
        }
    }
}

/// The Markdown: date, machine, commands, the table, and any parts that could not run.
pub(crate) fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(out, "Measured {} ({} mode).\n", r.date, r.mode);
    let _ = writeln!(
        out,
        "- Machine: {} × {} (`nproc` {}), {:.1} GiB memory, Linux {}; open-file limit {}. \
         The load generators (loadgen, wrk, nginx) and the servers share these cores.",
        m.nproc,
        m.cpu_model,
        m.nproc,
        m.memory_gib,
        m.kernel,
        thousands(m.open_files_limit)
    );
    if let Some(steal) = r.steal_percent {
        let _ = writeln!(
            out,
            "- CPU time taken by the hypervisor for other guests during the run (steal): {steal:.1} %."
        );
    }
    if !r.tools.is_empty() {
        let _ = writeln!(out, "- Tools: {}.", r.tools.join(", "));
    }
    let _ = writeln!(out, "- Command: `{}`.", r.command);
    let _ = writeln!(out);
    headline(&mut out, r);
    let _ = writeln!(
        out,
        "| part | measurement | lameduck | baseline (plain axum; part 6: plain tonic) | axum + the same delay (parts 1, 2) | goal | where it stands |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in rows(r) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.part, row.what, row.lameduck, row.baseline, row.delayed, row.goal, row.status
        );
    }
    by_side(&mut out, r);
    if !r.errors.is_empty() {
        let _ = writeln!(out, "\nParts that could not run:\n");
        for e in &r.errors {
            let _ = writeln!(out, "- {}", e.lines().next().unwrap_or(e));
        }
    }
    out
}

/// `summary.csv`: one line per table row.
pub(crate) fn summary_csv(r: &Results) -> String {
    let mut out = String::from("part,measurement,lameduck,baseline,baseline_delay,goal,status\n");
    for row in rows(r) {
        let cells = [
            row.part.to_owned(),
            row.what,
            row.lameduck,
            row.baseline,
            row.delayed,
            row.goal,
            row.status,
        ];
        let cells: Vec<String> = cells
            .iter()
            .map(|c| {
                format!(
                    "\"{}\"",
                    c.replace("**", "").replace('`', "").replace('"', "\"\"")
                )
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

/// Writes the per-part CSVs next to `results.json`.
pub(crate) fn write_csvs(r: &Results, out: &Path) -> Result<()> {
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("summary.csv", summary_csv(r))?;
    if let Some(o) = &r.failed_requests {
        for side in o.sides() {
            if let Some(first) = side.trials.first() {
                write(
                    &format!("shutdown_timeline_{}.csv", side.label()),
                    first.report.timeline_csv(),
                )?;
            }
        }
    }
    if let Some(o) = &r.rolling_restart {
        for v in &o.variants {
            for side in v.sides() {
                write(
                    &format!(
                        "rolling_restart_timeline_{}_retry_{}.csv",
                        side.label(),
                        serde_json::to_value(v.retry)?.as_str().unwrap_or("x")
                    ),
                    side.report.timeline_csv(),
                )?;
            }
        }
    }
    if let Some(o) = &r.overhead {
        let mut csv = String::from("pair,side,requests_per_sec,p50_us,p99_us,requests,errors\n");
        for (n, pair) in o.pairs.iter().enumerate() {
            for (label, w) in [("lameduck", &pair.lameduck), ("baseline", &pair.baseline)] {
                let _ = writeln!(
                    csv,
                    "{},{label},{:.2},{:.1},{:.1},{},{}",
                    n + 1,
                    w.requests_per_sec,
                    w.p50_us,
                    w.p99_us,
                    w.requests,
                    w.errors
                );
            }
        }
        write("overhead.csv", csv)?;
    }
    if let Some(o) = &r.drain_speed {
        let mut csv = String::from(
            "side,situation,trial,count,sigterm_to_exit_ms,last_response_to_exit_ms,ok,failed,exit_code\n",
        );
        let idle = [
            (o.lameduck.side.label(), &o.lameduck.idle),
            (o.baseline.side.label(), &o.baseline.idle),
            ("floor_sigkill", &o.floor),
        ];
        for (label, trials) in idle {
            for (n, t) in trials.iter().enumerate() {
                let _ = writeln!(
                    csv,
                    "{label},idle,{},{},{:.2},,,,{}",
                    n + 1,
                    t.opened,
                    t.sigterm_to_exit_ms,
                    t.exit_code
                );
            }
        }
        for side in [&o.lameduck, &o.baseline] {
            let label = side.side.label();
            for (n, t) in side.slow.iter().enumerate() {
                let _ = writeln!(
                    csv,
                    "{label},slow,{},{},{:.2},{:.2},{},{},{}",
                    n + 1,
                    t.requests,
                    t.sigterm_to_exit_ms,
                    t.last_response_to_exit_ms,
                    t.ok,
                    t.failed,
                    t.exit_code
                );
            }
        }
        write("drain_speed.csv", csv)?;
    }
    if let Some(o) = &r.memory {
        let mut csv = String::from(
            "side,service,connections,rss_before_kib,rss_with_kib,bytes_per_connection\n",
        );
        for s in [&o.lameduck, &o.baseline] {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{:.0}",
                s.side.label(),
                s.service,
                o.settings.connections,
                s.rss_before_kib,
                s.rss_with_connections_kib,
                s.bytes_per_connection
            );
        }
        write("memory.csv", csv)?;
    }
    if let Some(o) = &r.grpc {
        let mut csv = String::from(
            "side,service,trial,calls,ok,refused,refused_connect,refused_unsent,no_response,no_response_goaway,other_status,timeout,latency_p50_us,latency_p99_us,sigterm_to_exit_ms,exit_code\n",
        );
        for side in [&o.lameduck, &o.baseline] {
            for (n, t) in side.trials.iter().enumerate() {
                let (c, d) = (&t.report.load.counts, &t.report.detail);
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.2},{}",
                    side.side.label(),
                    side.service,
                    n + 1,
                    c.total() - c.not_sent,
                    c.ok,
                    c.refused,
                    d.refused_connect,
                    d.refused_unsent,
                    c.no_response,
                    d.no_response_goaway,
                    c.status_5xx,
                    c.timeout,
                    t.report.load.latency_p50_us,
                    t.report.load.latency_p99_us,
                    t.sigterm_to_exit_ms,
                    t.exit_code
                );
            }
            if let Some(first) = side.trials.first() {
                write(
                    &format!("grpc_timeline_{}.csv", side.side.label()),
                    first.report.load.timeline_csv(),
                )?;
            }
        }
        write("grpc.csv", csv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(latency(850.0), "850 µs");
        assert_eq!(latency(2130.0), "2.13 ms");
        assert_eq!(latency(12345.0), "12.3 ms");
    }

    fn part1_side(
        side: crate::process::Side,
        delayed: bool,
        c: Counts,
    ) -> crate::failed_requests::SideOutcome {
        let report = lameduck_loadgen::LoadReport {
            counts: c,
            ..Default::default()
        };
        crate::failed_requests::SideOutcome {
            side,
            service: "s".to_owned(),
            delayed,
            totals: c,
            no_response_reused: c.no_response,
            trials: vec![crate::failed_requests::Trial {
                report,
                sigterm_to_exit_ms: 3000.0,
                exit_code: 0,
                last_left_after_window_ms: Some(1000),
                clients_remaining: 0,
            }],
        }
    }

    #[test]
    fn three_sides_render_with_the_unanswered_column_and_headline() {
        use crate::process::Side;
        let counts = |ok, refused, no_response| Counts {
            ok,
            refused,
            no_response,
            ..Counts::default()
        };
        let r = Results {
            failed_requests: Some(crate::failed_requests::Outcome {
                settings: crate::failed_requests::Settings::new(true),
                lameduck: part1_side(Side::Lameduck, false, counts(4000, 0, 0)),
                baseline: part1_side(Side::Baseline, false, counts(2000, 1990, 1)),
                baseline_delay: Some(part1_side(Side::Baseline, true, counts(3996, 0, 4))),
            }),
            ..Results::default()
        };
        let md = markdown(&r);
        assert!(
            md.contains("against plain axum, **0** vs **1,991** failed requests."),
            "{md}"
        );
        assert!(
            md.contains("Against axum + the same 3 s sleep: **0** vs **4** failed; of them written but never answered: **0** vs **4** (per shutdown: 4;"),
            "{md}"
        );
        assert!(md.contains("| written, never answered |"), "{md}");
        assert!(md.contains("| 1 | 1 run(s), direct | axum + the same 3 s sleep | 4,000 | **4** | 0 | **4** | 4 | 0 | 0 | — | 3000 ms |"), "{md}");
        assert!(
            md.contains("| axum + the same delay (parts 1, 2) |"),
            "{md}"
        );
        // Every table line has as many cells as its header.
        for line in md.lines().filter(|l| l.starts_with("| 1 |")) {
            let cells = line.matches(" | ").count();
            assert!(cells == 6 || cells == 11, "{line}");
        }
        assert_eq!(edge(0, 0), " (no difference in this run)");
        assert_eq!(edge(1, 0), " (lameduck did worse in this run)");
        assert_eq!(edge(0, 3), "");
    }

    #[test]
    fn empty_results_render() {
        let r = Results::default();
        let md = markdown(&r);
        assert!(md.contains("| part | measurement |"));
        assert_eq!(summary_csv(&r).lines().count(), 1);
    }
}
