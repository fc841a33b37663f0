//! The classes, the per-worker recorder, and the serializable [`LoadReport`].

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What became of one request attempt. Every attempt gets exactly one class; see the crate
/// docs for how "written" is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A complete response (status below 500), body read to the end.
    Ok,
    /// A complete response with a 5xx status, body read to the end.
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

/// The result of [`run`](crate::run): totals per class, latency, a per-second timeline and
/// sample error messages. Serializes to the JSON the `loadgen --json` command prints.
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
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    buckets: Vec<BucketAcc>,
    errors: [Vec<String>; 6],
    pub(crate) no_response_reused: u64,
    pub(crate) idle_closed: u64,
    pub(crate) connections_opened: u64,
}

#[derive(Debug, Default)]
struct BucketAcc {
    counts: Counts,
    latencies_us: Vec<u32>,
}

impl Recorder {
    /// Records one attempt that started `since_start` after the run began.
    pub(crate) fn record(
        &mut self,
        since_start: Duration,
        class: Class,
        latency: Option<Duration>,
    ) {
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

    pub(crate) fn error(&mut self, class: Class, message: String) {
        let kept = &mut self.errors[class.index()];
        if kept.len() < ERRORS_PER_CLASS && !kept.contains(&message) {
            kept.push(message);
        }
    }

    pub(crate) fn merge(&mut self, other: Recorder) {
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

    /// Fills in the totals, latency, timeline and errors of `report`.
    pub(crate) fn finish(mut self, report: &mut LoadReport) {
        report.counts = self.counts();
        report.no_response_reused = self.no_response_reused;
        report.idle_closed = self.idle_closed;
        report.connections_opened = self.connections_opened;
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
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["refused"], 1);
        assert_eq!(json["timeline"][0]["ok"], 1);
        let back: LoadReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        let csv = report.timeline_csv();
        assert!(csv.starts_with("second,ok,status_5xx,refused,no_response,timeout,not_sent,"));
        assert_eq!(csv.lines().nth(3), Some("2,0,0,1,0,0,0,0,0"));
    }
}
