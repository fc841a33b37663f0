//! Health answers as an operator reads them with curl (Kubernetes apiserver style) or as
//! JSON for machines.

use std::fmt::Write as _;

use bytes::Bytes;

use http::{HeaderValue, Response, StatusCode, header};
use lameduck::{CheckKind, CheckResult};

use super::Options;
use super::body::AdminBody;

const WITHHELD: &str = "reason withheld";

/// 200 when `ok`, else 503; text or JSON as the request asked.
pub(super) fn respond(
    label: &str,
    ok: bool,
    checks: &[CheckResult],
    unmatched_excludes: &[String],
    options: &Options,
    expose_details: bool,
) -> Response<AdminBody> {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if options.json {
        json_response(status, json(ok, checks, expose_details))
    } else {
        let body = text(
            label,
            ok,
            checks,
            unmatched_excludes,
            options.verbose,
            expose_details,
        );
        text_response(status, body)
    }
}

/// 404 for `/readyz/NAME` (and siblings) when no check of `kind` is named `name`; JSON
/// (`{"status":"not_found","error":..}`) when the request asked for it, like every answer.
pub(super) fn unknown_check(kind: CheckKind, name: &str, options: &Options) -> Response<AdminBody> {
    let error = format!("no {kind} check named {name:?}");
    if options.json {
        let body = serde_json::json!({"status": "not_found", "error": error}).to_string();
        json_response(StatusCode::NOT_FOUND, body)
    } else {
        text_response(StatusCode::NOT_FOUND, error + "\n")
    }
}

/// A plain-text answer, typed as axum types a `String` response.
pub(super) fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<AdminBody> {
    with_content_type(status, body, "text/plain; charset=utf-8")
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response<AdminBody> {
    with_content_type(status, body, "application/json")
}

fn with_content_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<AdminBody> {
    let mut response = Response::new(AdminBody::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Why a check failed, as shown: the built-in check's state name always, a registered
/// check's error only when the application opted in.
fn shown_error(check: &CheckResult, expose_details: bool) -> Option<&str> {
    if check.ok {
        None
    } else if check.builtin || expose_details {
        Some(check.error.as_deref().unwrap_or("failed"))
    } else {
        Some(WITHHELD)
    }
}

/// `ok` when all passed and no detail was asked for; otherwise one line per check, then
/// `LABEL check passed|failed` (what the apiserver's `/readyz?verbose` prints).
fn text(
    label: &str,
    ok: bool,
    checks: &[CheckResult],
    unmatched_excludes: &[String],
    verbose: bool,
    expose_details: bool,
) -> String {
    if ok && !verbose {
        return "ok".to_owned();
    }
    let mut out = String::new();
    for check in checks {
        match shown_error(check, expose_details) {
            None => {
                let _ = writeln!(out, "[+]{} ok", one_line(&check.name));
            }
            Some(error) => {
                let _ = writeln!(
                    out,
                    "[-]{} failed: {}",
                    one_line(&check.name),
                    one_line(error)
                );
            }
        }
    }
    if !unmatched_excludes.is_empty() {
        let names: Vec<String> = unmatched_excludes
            .iter()
            .map(|n| format!("{:?}", one_line(n)))
            .collect();
        let _ = writeln!(
            out,
            "warn: some health checks cannot be excluded: no matches for {}",
            names.join(",")
        );
    }
    let verdict = if ok { "passed" } else { "failed" };
    let _ = writeln!(out, "{label} check {verdict}");
    out
}

/// Keeps one check on one line whatever its error says.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    status: &'static str,
    checks: Vec<JsonCheck<'a>>,
}

#[derive(serde::Serialize)]
struct JsonCheck<'a> {
    name: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `{"status":"ok"|"failed","checks":[{"name":..,"ok":..}]}`, with `"error"` where shown.
fn json(ok: bool, checks: &[CheckResult], expose_details: bool) -> String {
    let report = JsonReport {
        status: if ok { "ok" } else { "failed" },
        checks: checks
            .iter()
            .map(|check| JsonCheck {
                name: &check.name,
                ok: check.ok,
                error: shown_error(check, expose_details).filter(|e| *e != WITHHELD),
            })
            .collect(),
    };
    // Serializing strings and booleans cannot fail; keep a valid body if it ever did.
    serde_json::to_string(&report)
        .unwrap_or_else(|_| format!(r#"{{"status":"{}"}}"#, report.status))
}
