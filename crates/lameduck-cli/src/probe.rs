//! `lameduck probe`: the kubelet's HTTP probe as a command, for exec probes.

use std::time::Duration;

use crate::header::Header;
use crate::http_get::{self, GetRequest, GetResponse, Unfollowed};
use crate::target::Target;

/// What the kubelet would conclude.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 200–399. A 3xx answer carries a warning, as the kubelet logs one ("Probe terminated
    /// redirects") while still counting it a success.
    Success {
        /// The warning for a 3xx answer.
        warning: Option<String>,
    },
    /// Anything else, with the reason.
    Failure(String),
}

/// Probes `url` once.
pub(crate) fn run(url: Target, headers: Vec<Header>, timeout: Duration) -> Verdict {
    let request = GetRequest {
        url,
        headers,
        default_user_agent: format!("lameduck-probe/{}", env!("CARGO_PKG_VERSION")),
        timeout,
    };
    match http_get::get_blocking(&request) {
        Ok(response) => judge(&response),
        Err(err) => Verdict::Failure(err.to_string()),
    }
}

/// Classifies an answer by its status.
fn judge(response: &GetResponse) -> Verdict {
    let status = response.status;
    let mut answered = format!("{} answered {}", response.url, status_text(status));
    if response.redirects > 0 {
        answered.push_str(&format!(" (after {} redirects)", response.redirects));
    }
    if status.is_success() {
        return Verdict::Success { warning: None };
    }
    if status.is_redirection() {
        let why = match &response.unfollowed {
            Some(Unfollowed::OtherHost(next)) => {
                format!("redirect to another host ({next}) not followed")
            }
            Some(Unfollowed::NoLocation) => "redirect without a Location header".to_owned(),
            Some(Unfollowed::NotARedirect) | None => "not a redirect that is followed".to_owned(),
        };
        return Verdict::Success {
            warning: Some(format!(
                "warning: {answered}: {why}; a success, as for the kubelet"
            )),
        };
    }
    Verdict::Failure(answered)
}

/// `503 Service Unavailable`.
fn status_text(status: http::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn response(code: u16, unfollowed: Option<Unfollowed>) -> GetResponse {
        GetResponse {
            status: StatusCode::from_u16(code).unwrap_or_default(),
            url: Target::parse("http://h/x").unwrap_or_else(|e| panic!("{e}")),
            redirects: 0,
            unfollowed,
            body: Vec::new(),
        }
    }

    #[test]
    fn kubelet_status_ranges() {
        assert_eq!(
            judge(&response(200, None)),
            Verdict::Success { warning: None }
        );
        assert_eq!(
            judge(&response(204, None)),
            Verdict::Success { warning: None }
        );
        assert!(matches!(
            judge(&response(302, Some(Unfollowed::NoLocation))),
            Verdict::Success { warning: Some(_) }
        ));
        assert!(matches!(
            judge(&response(399, None)),
            Verdict::Success { warning: Some(_) }
        ));
        assert_eq!(
            judge(&response(404, None)),
            Verdict::Failure("http://h/x answered 404 Not Found".to_owned())
        );
        assert!(matches!(judge(&response(199, None)), Verdict::Failure(_)));
        assert!(matches!(judge(&response(503, None)), Verdict::Failure(_)));
    }
}
