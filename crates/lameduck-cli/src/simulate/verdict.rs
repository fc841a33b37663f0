//! What a simulated termination found, judged: the figures, one line of advice per
//! problem, the text a person reads, the JSON a pipeline reads, and the exit status.

use std::fmt::Write as _;
use std::time::Duration;

use lameduck_load::Class;

/// The failing classes, in the order they are reported.
pub(crate) const FAILING: [Class; 4] = [
    Class::Refused,
    Class::NoResponse,
    Class::Status5xx,
    Class::Timeout,
];

/// Exit status: the service passed.
pub(crate) const EXIT_PASSED: u8 = 0;
/// Exit status: a request failed, liveness failed or SIGKILL was needed.
pub(crate) const EXIT_PROBLEMS: u8 = 1;
/// Exit status: the service never became ready, or could not be started.
pub(crate) const EXIT_NOT_READY: u8 = 3;

/// One failed request: when it started, relative to the trigger (negative before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) at_ms: i64,
    pub(crate) class: Class,
}

/// One second of traffic, relative to the trigger: requests started in it by class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Second {
    /// Seconds since the trigger at which the second starts (negative before it).
    pub(crate) from_s: i64,
    /// Requests by class, in the order of [`lameduck_load::Class::ALL`].
    pub(crate) counts: Vec<(Class, u64)>,
}

/// Everything observed, relative to the trigger (the moment the pod would be deleted).
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    /// Requests sent, by class (every class, failures and not).
    pub(crate) requests: Vec<(Class, u64)>,
    /// Failed requests with their times, capped by the load generator.
    pub(crate) failures: Vec<Failure>,
    /// Failures the load generator did not keep the time of (over its cap).
    pub(crate) failures_untimed: u64,
    /// The first few distinct error messages.
    pub(crate) errors: Vec<String>,
    /// The traffic, per second.
    pub(crate) timeline: Vec<Second>,
    /// When SIGTERM was sent (after the preStop hook, if any).
    pub(crate) sigterm_ms: u64,
    /// How long the preStop hook took, and what it answered.
    pub(crate) prestop: Option<(u64, String)>,
    /// The first failing readiness probe after the trigger.
    pub(crate) ready_flip_ms: Option<u64>,
    /// Readiness probes made between the trigger and the exit.
    pub(crate) ready_probes: u64,
    /// Liveness probes made, and failed, between the trigger and the exit.
    pub(crate) live_probes: Option<u64>,
    pub(crate) liveness_failures: u64,
    /// The first liveness failure's reason.
    pub(crate) liveness_failure: Option<String>,
    /// Liveness probes that failed between readiness and the trigger (steady state).
    pub(crate) liveness_failures_before: u64,
    /// The rate asked for, requests per second.
    pub(crate) rate_asked: u64,
    /// Whole seconds of traffic before the trigger (the first second of a `--before` that
    /// is not a whole number of seconds is partial, and not counted in the rate).
    pub(crate) full_seconds_before: u64,
    /// When the process exited, its exit code (128+N for a signal N), and whether it had
    /// to be killed.
    pub(crate) exit_ms: u64,
    pub(crate) exit_code: i32,
    pub(crate) killed: bool,
    /// How long traffic kept coming after the trigger, and the grace period.
    pub(crate) propagation: Duration,
    pub(crate) grace: Duration,
    /// The termination message the service left, if any.
    pub(crate) termination_message: Option<String>,
}

impl Observed {
    /// Requests of `class`.
    pub(crate) fn count(&self, class: Class) -> u64 {
        self.requests
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(0, |(_, n)| *n)
    }

    /// Every request sent: attempts hyper gave back unwritten (`not_sent`, sent again on
    /// a new connection) are not requests.
    pub(crate) fn total(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(c, _)| *c != Class::NotSent)
            .map(|(_, n)| n)
            .sum()
    }

    /// Failed requests that started before the trigger (steady state, not the shutdown).
    pub(crate) fn failed_before_trigger(&self) -> u64 {
        self.failures.iter().filter(|f| f.at_ms < 0).count() as u64
    }

    /// Failures of `class` at or after the trigger (all of them when their times were not
    /// all kept).
    fn failed_after_trigger(&self, class: Class) -> u64 {
        if self.failures_untimed > 0 {
            return self.count(class);
        }
        self.failures
            .iter()
            .filter(|f| f.class == class && f.at_ms >= 0)
            .count() as u64
    }

    /// Requests per second reached over the whole seconds before the trigger, if any.
    pub(crate) fn rate_reached(&self) -> Option<u64> {
        let full = i64::try_from(self.full_seconds_before).unwrap_or(i64::MAX);
        let before: Vec<&Second> = self
            .timeline
            .iter()
            .filter(|s| s.from_s < 0 && s.from_s >= -full)
            .collect();
        if before.is_empty() {
            return None;
        }
        let sent: u64 = before
            .iter()
            .flat_map(|s| s.counts.iter())
            .filter(|(c, _)| *c != Class::NotSent)
            .map(|(_, n)| n)
            .sum();
        Some(sent / before.len() as u64)
    }

    /// Failed requests.
    pub(crate) fn failed(&self) -> u64 {
        FAILING.iter().map(|&c| self.count(c)).sum()
    }

    /// The exit status of `simulate`.
    pub(crate) fn exit_status(&self) -> u8 {
        if self.failed() == 0
            && self.liveness_failures == 0
            && self.liveness_failures_before == 0
            && !self.killed
        {
            EXIT_PASSED
        } else {
            EXIT_PROBLEMS
        }
    }

    /// The failures of `class` as "N from +A s to +B s" (times relative to the trigger).
    fn when(&self, class: Class) -> Option<String> {
        let times: Vec<i64> = self
            .failures
            .iter()
            .filter(|f| f.class == class)
            .map(|f| f.at_ms)
            .collect();
        let (first, last) = (times.iter().min()?, times.iter().max()?);
        Some(if first == last {
            format!("at {}", signed_seconds(*first))
        } else {
            format!(
                "from {} to {}",
                signed_seconds(*first),
                signed_seconds(*last)
            )
        })
    }

    /// One line of advice per problem found.
    pub(crate) fn advice(&self) -> Vec<String> {
        let mut advice = Vec::new();
        let propagation = self.propagation.as_millis();
        let before = self.failed_before_trigger();
        if before > 0 {
            advice.push(format!(
                "{before} requests failed before the trigger, in steady state: the service \
                 does not keep up with this load (lower --rate or --clients), or fails for \
                 another reason; fix that first, the rest is about the shutdown"
            ));
        }
        if self.liveness_failures_before > 0 {
            advice.push(format!(
                "liveness failed {} times before the trigger, in steady state: in a cluster \
                 the kubelet would restart the container",
                self.liveness_failures_before
            ));
        }
        if self.failed_after_trigger(Class::Refused) > 0 {
            advice.push(format!(
                "refused connections after SIGTERM: the listener closed before endpoints were \
                 updated: keep serving for the propagation window ({} ms here; a shutdown \
                 delay, or preStop sleep, at least that long)",
                propagation
            ));
        }
        if self.failed_after_trigger(Class::NoResponse) > 0 {
            advice.push(
                "requests written but never answered: connections were closed (or reset) with \
                 requests on them: while draining, answer with `Connection: close` (HTTP/2: \
                 GOAWAY) and close a keep-alive connection only between requests; let \
                 in-flight requests finish"
                    .to_owned(),
            );
        }
        if self.failed_after_trigger(Class::Status5xx) > 0 {
            advice.push(
                "5xx answers during the shutdown: the service refused work it was still \
                 being sent: keep serving normally until traffic has stopped coming (fail \
                 readiness, not requests)"
                    .to_owned(),
            );
        }
        if self.failed_after_trigger(Class::Timeout) > 0 {
            advice.push(
                "requests timed out: the service stopped answering without closing their \
                 connections (a drain that waits on something that never ends?)"
                    .to_owned(),
            );
        }
        match self.ready_flip_ms {
            None if self.ready_probes > 0 => advice.push(
                "readiness never failed before the exit: fail readiness as soon as shutdown \
                 begins, so the platform stops routing to the pod while it still serves"
                    .to_owned(),
            ),
            Some(flip) if u128::from(flip) > propagation && self.failed() > 0 => {
                advice.push(format!(
                    "readiness failed only {flip} ms after the trigger: fail it at once when \
                     shutdown begins"
                ))
            }
            _ => {}
        }
        if self.liveness_failures > 0 {
            advice.push(
                "liveness failed during the shutdown: the kubelet would kill the container \
                 before its drain ends: keep the liveness endpoint answering until the exit \
                 (serve probes on a port that outlives the traffic listener)"
                    .to_owned(),
            );
        }
        if self.killed {
            advice.push(format!(
                "SIGKILL was needed at the grace period ({} s): the service ignores SIGTERM \
                 or drains for too long: handle SIGTERM and bound the drain below the grace \
                 period",
                self.grace.as_secs_f64()
            ));
        } else if self.exit_code != 0 {
            advice.push(format!(
                "the service exited with status {} after SIGTERM: exit 0 after a graceful \
                 shutdown, or the platform counts a failure",
                self.exit_code
            ));
        }
        if !self.killed && u128::from(self.exit_ms) < propagation && self.failed() > 0 {
            advice.push(format!(
                "the service exited {} ms after the trigger, before traffic stopped coming \
                 ({} ms): stay up for the whole propagation window",
                self.exit_ms, propagation
            ));
        }
        advice
    }

    /// The verdict as text, for a person.
    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        let failed = self.failed();
        let passed = self.exit_status() == EXIT_PASSED;
        let _ = writeln!(
            out,
            "{}: {} of {} requests failed; {}",
            if passed { "PASSED" } else { "FAILED" },
            failed,
            self.total(),
            if self.killed {
                format!("SIGKILL needed at {} ms", self.exit_ms)
            } else {
                format!(
                    "exited {} ms after the trigger with status {}",
                    self.exit_ms, self.exit_code
                )
            }
        );
        for class in FAILING {
            let n = self.count(class);
            if n > 0 {
                let when = self.when(class).unwrap_or_default();
                let _ = writeln!(out, "  {:<12} {n:>7}  {when}", class.as_str());
            }
        }
        if self.failures_untimed > 0 {
            let _ = writeln!(
                out,
                "  ({} more failures than the timeline keeps times for)",
                self.failures_untimed
            );
        }
        let _ = writeln!(out, "  {:<12} {:>7}", "ok", self.count(Class::Ok));
        if let Some(reached) = self.rate_reached() {
            let _ = writeln!(
                out,
                "load: {} requests/s asked, {reached} reached before the trigger{}",
                self.rate_asked,
                if reached * 10 < self.rate_asked * 9 {
                    " (short of the rate: the load generator or the service could not keep up)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(out, "timeline (from the trigger):");
        let mut events: Vec<(u64, String)> = Vec::new();
        if let Some((ms, answer)) = &self.prestop {
            events.push((0, format!("preStop hook sent ({answer} after {ms} ms)")));
        }
        events.push((self.sigterm_ms, "SIGTERM".to_owned()));
        if let Some(ms) = self.ready_flip_ms {
            events.push((ms, "readiness failed".to_owned()));
        }
        events.push((
            u64::try_from(self.propagation.as_millis()).unwrap_or(u64::MAX),
            "traffic stopped (end of the propagation window)".to_owned(),
        ));
        events.push((
            self.exit_ms,
            if self.killed {
                "SIGKILL (the grace period was over)".to_owned()
            } else {
                format!("exited with status {}", self.exit_code)
            },
        ));
        // Stable: at the same time, the order above (cause before effect).
        events.sort_by_key(|(ms, _)| *ms);
        for (ms, what) in events {
            let _ = writeln!(out, "  {:>10}  {what}", format!("+{ms} ms"));
        }
        if self.ready_flip_ms.is_none() {
            let _ = writeln!(out, "  {:>10}  readiness never failed before the exit", "");
        }
        match self.live_probes {
            Some(probes) => {
                let _ = writeln!(
                    out,
                    "liveness: {} of {probes} probes failed during the shutdown, {} before it{}",
                    self.liveness_failures,
                    self.liveness_failures_before,
                    self.liveness_failure
                        .as_deref()
                        .map(|why| format!(" (first: {why})"))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(out, "liveness: not probed (no --live)");
            }
        }
        match &self.termination_message {
            Some(message) => {
                let _ = writeln!(out, "termination message: {}", message.trim());
            }
            None => {
                let _ = writeln!(out, "termination message: none written");
            }
        }
        for error in self.errors.iter().take(5) {
            let _ = writeln!(out, "error seen: {error}");
        }
        let advice = self.advice();
        if advice.is_empty() {
            let _ = writeln!(out, "no problem found");
        }
        for line in advice {
            let _ = writeln!(out, "advice: {line}");
        }
        out
    }

    /// The verdict as one JSON object.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let by_class: serde_json::Map<String, serde_json::Value> = FAILING
            .iter()
            .map(|&c| (c.as_str().to_owned(), self.count(c).into()))
            .collect();
        let timeline: Vec<serde_json::Value> = self
            .timeline
            .iter()
            .map(|second| {
                let mut entry = serde_json::Map::new();
                entry.insert("from_s".into(), second.from_s.into());
                for (class, n) in &second.counts {
                    entry.insert(class.as_str().into(), (*n).into());
                }
                serde_json::Value::Object(entry)
            })
            .collect();
        let termination_message = self
            .termination_message
            .as_deref()
            .map(|text| {
                serde_json::from_str::<serde_json::Value>(text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
            })
            .unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "passed": self.exit_status() == EXIT_PASSED,
            "requests": self.total(),
            "ok": self.count(Class::Ok),
            "not_sent": self.count(Class::NotSent),
            "rate_asked": self.rate_asked,
            "rate_reached": self.rate_reached(),
            "failed_before_trigger": self.failed_before_trigger(),
            "failed": self.failed(),
            "failed_by_class": by_class,
            "failures": self.failures.iter().map(|f| serde_json::json!({"at_ms": f.at_ms, "class": f.class.as_str()})).collect::<Vec<_>>(),
            "failures_untimed": self.failures_untimed,
            "sigterm_ms": self.sigterm_ms,
            "prestop_ms": self.prestop.as_ref().map(|(ms, _)| *ms),
            "ready_flip_ms": self.ready_flip_ms,
            "liveness_probes": self.live_probes,
            "liveness_failures": self.liveness_failures,
            "liveness_failures_before_trigger": self.liveness_failures_before,
            "exit_code": self.exit_code,
            "exit_ms": self.exit_ms,
            "killed": self.killed,
            "propagation_ms": u64::try_from(self.propagation.as_millis()).unwrap_or(u64::MAX),
            "grace_ms": u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            "termination_message": termination_message,
            "advice": self.advice(),
            "errors": self.errors,
            "timeline": timeline,
        })
    }
}

/// `+1.250 s` or `-0.500 s`.
fn signed_seconds(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03} s", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Observed {
        Observed {
            requests: vec![(Class::Ok, 1000)],
            sigterm_ms: 0,
            ready_flip_ms: Some(3),
            ready_probes: 5,
            live_probes: Some(5),
            exit_ms: 4000,
            exit_code: 0,
            propagation: Duration::from_secs(2),
            grace: Duration::from_secs(30),
            ..Observed::default()
        }
    }

    /// `n` failures of `class`, all at `at_ms`.
    fn failing(mut observed: Observed, class: Class, n: u64, at_ms: i64) -> Observed {
        observed.requests.push((class, n));
        observed
            .failures
            .extend((0..n).map(|_| Failure { at_ms, class }));
        observed
    }

    #[test]
    fn a_clean_shutdown_passes_with_no_advice() {
        let observed = clean();
        assert_eq!(observed.exit_status(), EXIT_PASSED);
        assert!(observed.advice().is_empty(), "{:?}", observed.advice());
        assert!(observed.to_text().starts_with("PASSED: 0 of 1000"));
        let json = observed.to_json();
        assert_eq!(json["failed"], 0);
        assert_eq!(json["killed"], false);
        assert_eq!(json["ready_flip_ms"], 3);
    }

    #[test]
    fn each_problem_fails_the_verdict_and_gets_its_advice() {
        let mut refused = clean();
        refused.requests.push((Class::Refused, 7));
        refused.failures = vec![
            Failure {
                at_ms: 30,
                class: Class::Refused,
            },
            Failure {
                at_ms: 1_970,
                class: Class::Refused,
            },
        ];
        refused.exit_ms = 20;
        assert_eq!(refused.exit_status(), EXIT_PROBLEMS);
        let advice = refused.advice().join("\n");
        assert!(
            advice.contains("listener closed before endpoints"),
            "{advice}"
        );
        assert!(advice.contains("before traffic stopped coming"), "{advice}");
        let text = refused.to_text();
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains("from +0.030 s to +1.970 s"), "{text}");
        assert_eq!(refused.to_json()["failed_by_class"]["refused"], 7);

        let unanswered = failing(clean(), Class::NoResponse, 3, 5);
        assert_eq!(unanswered.exit_status(), EXIT_PROBLEMS);
        assert!(unanswered.advice().join("\n").contains("never answered"));

        let errors = failing(clean(), Class::Status5xx, 2, 100);
        assert!(errors.advice().join("\n").contains("5xx answers"));

        let mut killed = clean();
        killed.killed = true;
        killed.exit_code = 137;
        assert_eq!(killed.exit_status(), EXIT_PROBLEMS);
        assert!(killed.advice().join("\n").contains("SIGKILL was needed"));
        assert_eq!(killed.to_json()["killed"], true);

        let mut restarted = clean();
        restarted.liveness_failures = 2;
        assert_eq!(restarted.exit_status(), EXIT_PROBLEMS);
        assert!(restarted.advice().join("\n").contains("liveness failed"));
    }

    #[test]
    fn advice_alone_does_not_fail_the_verdict() {
        // Readiness that never flipped and a non-zero exit are advice, not failures: the
        // verdict is about lost requests, restarts and SIGKILL.
        let mut observed = clean();
        observed.ready_flip_ms = None;
        observed.exit_code = 1;
        assert_eq!(observed.exit_status(), EXIT_PASSED);
        let advice = observed.advice().join("\n");
        assert!(advice.contains("readiness never failed"), "{advice}");
        assert!(advice.contains("exited with status 1"), "{advice}");
    }

    #[test]
    fn failures_before_the_trigger_are_told_apart_from_the_shutdown() {
        let mut observed = clean();
        observed.requests.push((Class::Refused, 2));
        observed.failures = vec![
            Failure {
                at_ms: -800,
                class: Class::Refused,
            },
            Failure {
                at_ms: -10,
                class: Class::Refused,
            },
        ];
        assert_eq!(observed.exit_status(), EXIT_PROBLEMS);
        assert_eq!(observed.failed_before_trigger(), 2);
        let advice = observed.advice().join("\n");
        assert!(
            advice.contains("2 requests failed before the trigger"),
            "{advice}"
        );
        assert!(!advice.contains("after SIGTERM"), "{advice}");
    }

    #[test]
    fn requests_resent_unwritten_are_not_requests() {
        let mut observed = clean();
        observed.requests.push((Class::NotSent, 5));
        assert_eq!(observed.total(), 1000);
        assert_eq!(observed.to_json()["not_sent"], 5);
    }

    #[test]
    fn a_liveness_failure_in_steady_state_fails_the_verdict() {
        let mut observed = clean();
        observed.liveness_failures_before = 1;
        assert_eq!(observed.exit_status(), EXIT_PROBLEMS);
        assert!(observed.advice().join("\n").contains("before the trigger"));
    }

    #[test]
    fn signed_seconds_reads_both_ways() {
        assert_eq!(signed_seconds(1_250), "+1.250 s");
        assert_eq!(signed_seconds(-500), "-0.500 s");
        assert_eq!(signed_seconds(0), "+0.000 s");
    }
}
