//! `lameduck prestop`: the preStop exec hook for images without `curl` or `sleep`.
//!
//! It never fails: the kubelet does not retry a failed preStop hook and terminates the
//! container anyway, so a non-zero exit would only add a `FailedPreStopHook` event while
//! hiding nothing. Problems are logged instead (see [`crate::hook_log`]).

use std::time::{Duration, Instant};

use crate::duration;
use crate::header::Header;
use crate::hook_log::HookLog;
use crate::http_get::{self, GetRequest};
use crate::target::Target;

/// How much of the answer's body is logged: enough for a one-line message from the service.
const BODY_EXCERPT_CHARS: usize = 200;

/// What the hook should do: call, sleep, or call then sleep.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The endpoint to GET (usually the service's `/shutdown`), if any.
    pub(crate) url: Option<Target>,
    /// Headers for that request.
    pub(crate) headers: Vec<Header>,
    /// Deadline for the request, body included.
    pub(crate) timeout: Duration,
    /// How long to sleep after the call (or instead of it).
    pub(crate) sleep: Option<Duration>,
}

/// Carries out the plan, logging each step.
pub(crate) fn run(plan: Plan, log: &mut HookLog) {
    if let Some(url) = plan.url {
        call(url, plan.headers, plan.timeout, log);
    }
    if let Some(pause) = plan.sleep {
        log.line(&format!("sleeping {}", duration::display(pause)));
        std::thread::sleep(pause);
        log.line("done sleeping");
    }
}

/// GETs the endpoint and waits for its answer. The status is reported but, as for the
/// kubelet's own httpGet preStop, only a transport error counts as a failure.
fn call(url: Target, headers: Vec<Header>, timeout: Duration, log: &mut HookLog) {
    log.line(&format!(
        "GET {url} (timeout {})",
        duration::display(timeout)
    ));
    let request = GetRequest {
        url,
        headers,
        default_user_agent: format!("lameduck-prestop/{}", env!("CARGO_PKG_VERSION")),
        timeout,
    };
    let started = Instant::now();
    let outcome = http_get::get_blocking(&request);
    let took = duration::display(started.elapsed());
    match outcome {
        Ok(response) => {
            let mut line = format!("{} answered {} after {took}", response.url, response.status);
            let body = response.body_excerpt(BODY_EXCERPT_CHARS);
            if !body.is_empty() {
                line.push_str(&format!(": {body}"));
            }
            log.line(&line);
        }
        Err(err) => log.line(&format!(
            "GET {} failed after {took}: {err}; continuing the shutdown",
            request.url
        )),
    }
}
