//! The classes, the per-worker recorder, and the serializable [`LoadReport`].

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What became of one request attempt. Every attempt gets exactly one class; see the crate
/// docs for how "written" is decided. Serializes as its [`as_str`](Class::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A complete response (status below 500), body read to the end.
    Ok,
    /// A complete response with a 5xx status, body read to the end.
    #[serde(rename = "status_5xx")]
    Status5xx,
    /// No connection to write the request on: the TCP connect failed (refused, reset,
    /// unreachable, or not done within the connect timeout), or a brand-new connection
    /// was closed by the server before the request could be written.
    Refused,
    /// The request was written (hyper's connection had taken it), but no complete
    /// response arrived: reset, EOF before or while reading the head, or the body was
    /// cut. The server could have seen this request.
    NoResponse,
    /// No complete response within the request timeout.
    Timeout,
    /// hyper gave the request back unwritten because its connection closed first. The
    /// server never saw it; the worker retries it on a new connection, as real clients
    /// do. Not a failure.
    NotSent,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 6] = [
        Class::Ok,
        Class::Status5xx,
        Class::Refused,
        Class::NoResponse,
        Class::Timeout,
        Class::NotSent,
    ];

    /// The class's name in JSON and CSV: `ok`, `status_5xx`, `refused`, `no_response`,
    /// `timeout`, `not_sent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Status5xx => "status_5xx",
            Class::Refused => "refused",
            Class::NoResponse => "no_response",
            Class::Timeout => "timeout",
            Class::NotSent => "not_sent",
        }
    }

    /// Whether the class counts as a failed request: `status_5xx`, `refused`,
    /// `no_response` and `timeout`.
    pub fn is_failure(self) -> bool {
        !matches!(self, Class::Ok | Class::NotSent)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts per class (the same fields [`LoadReport`] and [`Bucket`] carry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// [`Class::Ok`]
    pub ok: u64,
    /// [`Class::Status5xx`]
    pub status_5xx: u64,
    /// [`Class::Refused`]
    pub refused: u64,
    /// [`Class::NoResponse`]
    pub no_response: u64,
    /// [`Class::Timeout`]
    pub timeout: u64,
    /// [`Class::NotSent`]
    pub not_sent: u64,
}

impl Counts {
    /// The count of one class.
    pub fn get(&self, class: Class) -> u64 {
        match class {
            Class::Ok => self.ok,
            Class::Status5xx => self.status_5xx,
            Class::Refused => self.refused,
            Class::NoResponse => self.no_response,
            Class::Timeout => self.timeout,
            Class::NotSent => self.not_sent,
        }
    }

    fn slot(&mut self, class: Class) -> &mut u64 {
        match class {
            Class::Ok => &mut self.ok,
            Class::Status5xx => &mut self.status_5xx,
            Class::Refused => &mut self.refused,
            Class::NoResponse => &mut self.no_response,
            Class::Timeout => &mut self.timeout,
            Class::NotSent => &mut self.not_sent,
        }
    }

    pub(crate) fn add(&mut self, class: Class) {
        *self.slot(class) += 1;
    }

    fn merge(&mut self, other: &Counts) {
        for class in Class::ALL {
            *self.slot(class) += other.get(class);
        }
    }

    /// Every attempt, whatever its class.
    pub fn total(&self) -> u64 {
        Class::ALL.iter().map(|&c| self.get(c)).sum()
    }

    /// `status_5xx + refused + no_response + timeout`.
    pub fn failures(&self) -> u64 {
        Class::ALL
            .iter()
            .filter(|c| c.is_failure())
            .map(|&c| self.get(c))
            .sum()
    }
}

/// One second of the run: attempts started in that second, by class, and the latency of
/// those that got a complete response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Seconds since the start of the run (0-based) at which these attempts started.
    pub second: u64,
    /// Counts per class.
    #[serde(flatten)]
    pub counts: Counts,
    /// Median latency of complete responses (`ok` and `status_5xx`), µs; 0 if none.
    pub latency_p50_us: u64,
    /// 99th percentile latency of complete responses, µs; 0 if none.
    pub latency_p99_us: u64,
}

/// The most failed attempts [`LoadReport::failures_at`] lists (the earliest, by start);
/// the rest are counted in [`LoadReport::failures_at_dropped`]. At 16 bytes an entry, a
/// list of 1.6 MB at most (and as much per worker while the run lasts).
pub const FAILURES_AT_CAP: usize = 100_000;

/// One failed attempt: when it started and its (failing) class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FailureAt {
    /// Milliseconds from the run's start (see [`run_from`](crate::run_from)) to the start
    /// of the attempt (as the timeline's seconds count it).
    pub at_ms: u64,
    /// A failing class: `status_5xx`, `refused`, `no_response` or `timeout`
    /// ([`Class::is_failure`]).
    pub class: Class,
}

/// The result of [`run`](crate::run): totals per class, latency, a per-second timeline,
/// the time of each failure and sample error messages. Serializes to the JSON the
/// `loadgen --json` command prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The target URL.
    pub url: String,
    /// The request method.
    pub method: String,
    /// Concurrent workers.
    pub connections: usize,
    /// Requested aggregate rate (0: as fast as possible).
    pub rate: u64,
    /// Wall time from start until the last in-flight request was classified, ms.
    pub elapsed_ms: u64,
    /// Totals per class. Flattened: the JSON has `ok`, `status_5xx`, ... at top level.
    #[serde(flatten)]
    pub counts: Counts,
    /// Of `no_response`: those on a reused keep-alive connection that failed before any
    /// response head arrived — the "server closed an idle connection just as the request
    /// was written" race that clients such as Go's `net/http` retry for idempotent
    /// requests (a client that retries would have turned these into other classes).
    pub no_response_reused: u64,
    /// Keep-alive connections found closed by the server before their next request was
    /// handed over (hyper had already seen the close); the worker reconnects. Not a
    /// request class: no request was involved.
    pub idle_closed: u64,
    /// TCP connections established.
    pub connections_opened: u64,
    /// Median latency of complete responses, µs (from handing the request to hyper to
    /// the end of the body; connect time excluded); 0 if none.
    pub latency_p50_us: u64,
    /// 99th percentile latency of complete responses, µs; 0 if none.
    pub latency_p99_us: u64,
    /// Largest latency of a complete response, µs; 0 if none.
    pub latency_max_us: u64,
    /// Per-second buckets by the second each attempt started in, from second 0 to the
    /// last one with an attempt (seconds without any are present with zeros).
    pub timeline: Vec<Bucket>,
    /// The first few distinct error messages of each failing class, as `class: message`.
    pub errors: Vec<String>,
    /// Every failed attempt (failing classes only, [`Class::is_failure`]) with the time it
    /// started, in start order: the earliest [`FAILURES_AT_CAP`] (100,000). Absent from the
    /// JSON when empty, so a run without failures serializes as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures_at: Vec<FailureAt>,
    /// Failed attempts left out of `failures_at` by its cap (the latest ones); 0 when it
    /// lists them all. Absent from the JSON when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures_at_dropped: u64,
    /// With [`LoadConfig::new_connections_until`](crate::LoadConfig::new_connections_until):
    /// when each worker that left did so (its connection closed, or it had none, past that
    /// instant), milliseconds from the run's start, earliest first; one entry per worker
    /// that left, so `connections - left_at_ms.len()` workers were still on a connection
    /// when the run ended. Empty, and absent from the JSON, without that setting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_at_ms: Vec<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LoadReport {
    /// Requests that failed: `status_5xx + refused + no_response + timeout`.
    pub fn failures(&self) -> u64 {
        self.counts.failures()
    }

    /// The timeline as CSV: `second,ok,status_5xx,refused,no_response,timeout,not_sent`
    /// followed by `latency_p50_us,latency_p99_us`, one line per second, with a header.
    pub fn timeline_csv(&self) -> String {
        let mut out = String::from(
            "second,ok,status_5xx,refused,no_response,timeout,not_sent,latency_p50_us,latency_p99_us\n",
        );
        for b in &self.timeline {
            let c = &b.counts;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                b.second,
                c.ok,
                c.status_5xx,
                c.refused,
                c.no_response,
                c.timeout,
                c.not_sent,
                b.latency_p50_us,
                b.latency_p99_us
            );
        }
        out
    }
}

/// A human-readable table: totals, latency, the timeline and the sample errors.
impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "{} {} — {} connections, rate {}, {:.2} s",
            self.method,
            self.url,
            self.connections,
            if self.rate == 0 {
                "unlimited".to_owned()
            } else {
                format!("{}/s", self.rate)
            },
            self.elapsed_ms as f64 / 1000.0
        )?;
        writeln!(
            f,
            "requests {}  ok {}  status_5xx {}  refused {}  no_response {} (reused {})  timeout {}  not_sent {}",
            c.total(),
            c.ok,
            c.status_5xx,
            c.refused,
            c.no_response,
            self.no_response_reused,
            c.timeout,
            c.not_sent
        )?;
        writeln!(
            f,
            "failures {}  connections opened {}  idle connections closed by server {}",
            self.failures(),
            self.connections_opened,
            self.idle_closed
        )?;
        writeln!(
            f,
            "latency p50 {}  p99 {}  max {}",
            fmt_us(self.latency_p50_us),
            fmt_us(self.latency_p99_us),
            fmt_us(self.latency_max_us)
        )?;
        writeln!(
            f,
            "{:>4} {:>8} {:>10} {:>8} {:>11} {:>8} {:>8} {:>9} {:>9}",
            "sec",
            "ok",
            "status_5xx",
            "refused",
            "no_response",
            "timeout",
            "not_sent",
            "p50",
            "p99"
        )?;
        for b in &self.timeline {
            let c = &b.counts;
            writeln!(
                f,
                "{:>4} {:>8} {:>10} {:>8} {:>11} {:>8} {:>8} {:>9} {:>9}",
                b.second,
                c.ok,
                c.status_5xx,
                c.refused,
                c.no_response,
                c.timeout,
                c.not_sent,
                fmt_us(b.latency_p50_us),
                fmt_us(b.latency_p99_us)
            )?;
        }
        if let (Some(first), Some(last)) = (self.left_at_ms.first(), self.left_at_ms.last()) {
            writeln!(
                f,
                "{} of {} workers left (their connection closed, no new ones allowed) from {:.3} s to {:.3} s into the run",
                self.left_at_ms.len(),
                self.connections,
                *first as f64 / 1000.0,
                *last as f64 / 1000.0
            )?;
        }
        if let (Some(first), Some(last)) = (self.failures_at.first(), self.failures_at.last()) {
            let dropped = match self.failures_at_dropped {
                0 => String::new(),
                n => format!(", {n} more not listed"),
            };
            writeln!(
                f,
                "failures from {:.3} s to {:.3} s into the run{dropped}",
                first.at_ms as f64 / 1000.0,
                last.at_ms as f64 / 1000.0
            )?;
        }
        for e in &self.errors {
            writeln!(f, "error {e}")?;
        }
        Ok(())
    }
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}µs")
    }
}

/// Distinct error messages kept per class.
const ERRORS_PER_CLASS: usize = 5;

/// Collects what one worker (or helper task) saw; merged into a report at the end. Each
/// worker has its own, so recording takes no lock.
///
/// What [`run`](crate::run) records with, public for load over other protocols that
/// reports in the same [`LoadReport`] (`bench/loadgen`'s gRPC load): each worker records
/// its attempts into its own `Recorder`, the run [`merge`](Recorder::merge)s them and
/// [`finish`](Recorder::finish)es the report.
#[derive(Debug, Default)]
pub struct Recorder {
    buckets: Vec<BucketAcc>,
    errors: [Vec<String>; 6],
    /// Failed attempts, the earliest [`FAILURES_AT_CAP`]; sorted by `at_ms` once merged.
    failures_at: Vec<FailureAt>,
    failures_at_dropped: u64,
    pub(crate) no_response_reused: u64,
    pub(crate) idle_closed: u64,
    pub(crate) connections_opened: u64,
    /// When this worker left (see `LoadConfig::new_connections_until`), ms from the start.
    left_at_ms: Vec<u64>,
}

#[derive(Debug, Default)]
struct BucketAcc {
    counts: Counts,
    latencies_us: Vec<u32>,
}

impl Recorder {
    /// Records one attempt that started `since_start` after the run began, its class, and
    /// for a complete response (`ok`, `status_5xx`) its latency.
    pub fn record(&mut self, since_start: Duration, class: Class, latency: Option<Duration>) {
        if class.is_failure() {
            if self.failures_at.len() < FAILURES_AT_CAP {
                self.failures_at.push(FailureAt {
                    at_ms: u64::try_from(since_start.as_millis()).unwrap_or(u64::MAX),
                    class,
                });
            } else {
                self.failures_at_dropped += 1;
            }
        }
        let second = usize::try_from(since_start.as_secs()).unwrap_or(usize::MAX);
        if second >= self.buckets.len() {
            // Bounded by the run's length: one bucket per second.
            self.buckets
                .resize_with(second.saturating_add(1), BucketAcc::default);
        }
        if let Some(bucket) = self.buckets.get_mut(second) {
            bucket.counts.add(class);
            if let Some(latency) = latency {
                let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                bucket.latencies_us.push(us);
            }
        }
    }

    /// Records that the worker left, `since_start` after the run began.
    pub(crate) fn left(&mut self, since_start: Duration) {
        self.left_at_ms
            .push(u64::try_from(since_start.as_millis()).unwrap_or(u64::MAX));
    }

    /// Keeps `message` as a sample error of `class` (the first few distinct ones).
    pub fn error(&mut self, class: Class, message: String) {
        let kept = &mut self.errors[class.index()];
        if kept.len() < ERRORS_PER_CLASS && !kept.contains(&message) {
            kept.push(message);
        }
    }

    /// Adds what `other` recorded.
    pub fn merge(&mut self, other: Recorder) {
        if other.buckets.len() > self.buckets.len() {
            self.buckets
                .resize_with(other.buckets.len(), BucketAcc::default);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            mine.counts.merge(&theirs.counts);
            mine.latencies_us.extend(theirs.latencies_us);
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            for message in theirs {
                if mine.len() < ERRORS_PER_CLASS && !mine.contains(&message) {
                    mine.push(message);
                }
            }
        }
        self.no_response_reused += other.no_response_reused;
        self.idle_closed += other.idle_closed;
        self.connections_opened += other.connections_opened;
        self.left_at_ms.extend(other.left_at_ms);
        // Keep the earliest FAILURES_AT_CAP of both: each side holds its own earliest ones
        // (a side records attempts roughly in start order and stops at the cap), so the
        // earliest of the union are among them.
        self.failures_at.extend(other.failures_at);
        self.failures_at.sort_by_key(|f| f.at_ms);
        let over = self.failures_at.len().saturating_sub(FAILURES_AT_CAP);
        self.failures_at.truncate(FAILURES_AT_CAP);
        self.failures_at_dropped += other.failures_at_dropped + over as u64;
    }

    /// Totals per class.
    pub(crate) fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for b in &self.buckets {
            total.merge(&b.counts);
        }
        total
    }

    /// Sample errors as `class: message`.
    pub(crate) fn error_lines(&self) -> Vec<String> {
        Class::ALL
            .iter()
            .flat_map(|&class| {
                self.errors[class.index()]
                    .iter()
                    .map(move |m| format!("{class}: {m}"))
            })
            .collect()
    }

    /// All latencies, sorted.
    pub(crate) fn latencies(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .buckets
            .iter()
            .flat_map(|b| b.latencies_us.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }

    /// Fills in the totals, latency, timeline, failure times and errors of `report`
    /// (leaving the run's description — `url`, `method`, `connections`, `rate`,
    /// `elapsed_ms` — to the caller).
    pub fn finish(mut self, report: &mut LoadReport) {
        self.failures_at.sort_by_key(|f| f.at_ms);
        report.failures_at = std::mem::take(&mut self.failures_at);
        report.failures_at_dropped = self.failures_at_dropped;
        report.counts = self.counts();
        report.no_response_reused = self.no_response_reused;
        report.idle_closed = self.idle_closed;
        report.connections_opened = self.connections_opened;
        self.left_at_ms.sort_unstable();
        report.left_at_ms = std::mem::take(&mut self.left_at_ms);
        report.errors = self.error_lines();
        let all = self.latencies();
        report.latency_p50_us = percentile(&all, 50.0);
        report.latency_p99_us = percentile(&all, 99.0);
        report.latency_max_us = all.last().map_or(0, |&us| u64::from(us));
        report.timeline = self
            .buckets
            .iter_mut()
            .enumerate()
            .map(|(second, b)| {
                b.latencies_us.sort_unstable();
                Bucket {
                    second: second as u64,
                    counts: b.counts,
                    latency_p50_us: percentile(&b.latencies_us, 50.0),
                    latency_p99_us: percentile(&b.latencies_us, 99.0),
                }
            })
            .collect();
    }
}

/// Nearest-rank percentile of sorted samples; 0 for none.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).map_or(0, |&v| u64::from(v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn recorder_buckets_merge_and_serialize() {
        let mut a = Recorder::default();
        a.record(
            Duration::from_millis(100),
            Class::Ok,
            Some(Duration::from_micros(10)),
        );
        a.record(Duration::from_millis(2100), Class::Refused, None);
        a.error(Class::Refused, "connection refused".into());
        let mut b = Recorder::default();
        b.record(
            Duration::from_millis(900),
            Class::Status5xx,
            Some(Duration::from_micros(30)),
        );
        b.error(Class::Refused, "connection refused".into());
        a.merge(b);
        let mut report = LoadReport::default();
        a.finish(&mut report);
        assert_eq!(report.counts.ok, 1);
        assert_eq!(report.counts.status_5xx, 1);
        assert_eq!(report.counts.refused, 1);
        assert_eq!(report.failures(), 2);
        assert_eq!(report.timeline.len(), 3);
        assert_eq!(report.timeline[1].counts.total(), 0);
        assert_eq!(report.latency_max_us, 30);
        assert_eq!(
            report.errors,
            vec!["refused: connection refused".to_owned()]
        );
        // Failures only, merged in start order.
        assert_eq!(
            report.failures_at,
            vec![
                FailureAt {
                    at_ms: 900,
                    class: Class::Status5xx
                },
                FailureAt {
                    at_ms: 2100,
                    class: Class::Refused
                },
            ]
        );
        assert_eq!(report.failures_at_dropped, 0);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["refused"], 1);
        assert_eq!(json["timeline"][0]["ok"], 1);
        assert_eq!(json["failures_at"][1]["at_ms"], 2100);
        assert_eq!(json["failures_at"][1]["class"], "refused");
        assert!(json.get("failures_at_dropped").is_none());
        let back: LoadReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        let csv = report.timeline_csv();
        assert!(csv.starts_with("second,ok,status_5xx,refused,no_response,timeout,not_sent,"));
        assert_eq!(csv.lines().nth(3), Some("2,0,0,1,0,0,0,0,0"));
    }

    #[test]
    fn classes_serialize_as_their_names() {
        for class in Class::ALL {
            let json = serde_json::to_value(class).unwrap();
            assert_eq!(json, class.as_str());
            assert_eq!(serde_json::from_value::<Class>(json).unwrap(), class);
        }
    }

    #[test]
    fn a_report_without_failures_serializes_as_before() {
        let mut a = Recorder::default();
        a.record(
            Duration::from_millis(5),
            Class::Ok,
            Some(Duration::from_micros(10)),
        );
        a.record(Duration::from_millis(6), Class::NotSent, None);
        let mut report = LoadReport::default();
        a.finish(&mut report);
        assert!(report.failures_at.is_empty());
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.get("failures_at").is_none());
        assert!(json.get("failures_at_dropped").is_none());
        // And JSON written before the field existed still reads.
        let back: LoadReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn failure_times_are_capped_keeping_the_earliest() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        // Two workers, interleaved in time, each over half the cap.
        let each = FAILURES_AT_CAP / 2 + 10;
        for i in 0..each as u64 {
            a.record(Duration::from_millis(2 * i), Class::Timeout, None);
            b.record(Duration::from_millis(2 * i + 1), Class::NoResponse, None);
        }
        // One over the cap in a single worker: dropped at once.
        for _ in 0..FAILURES_AT_CAP {
            b.record(Duration::from_secs(200), Class::Refused, None);
        }
        a.merge(b);
        let mut report = LoadReport::default();
        a.finish(&mut report);
        assert_eq!(report.failures_at.len(), FAILURES_AT_CAP);
        assert_eq!(
            report.failures_at_dropped + FAILURES_AT_CAP as u64,
            report.failures()
        );
        assert!(
            report
                .failures_at
                .windows(2)
                .all(|w| w[0].at_ms <= w[1].at_ms)
        );
        // The earliest are kept: 0, 1, 2, ... with no gap.
        assert!(
            report
                .failures_at
                .iter()
                .enumerate()
                .all(|(i, f)| f.at_ms == i as u64)
        );
        assert!(report.to_string().contains("more not listed"));
    }
}
