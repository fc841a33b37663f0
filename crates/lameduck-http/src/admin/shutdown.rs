//! `/shutdown`: the preStop trigger (docs/shutdown-timeline.md, "Triggers").

use http::{HeaderValue, Response, StatusCode, header};
use lameduck::Lifecycle;
use subtle::ConstantTimeEq;

use super::body::AdminBody;
use super::render::{json_response, text_response};

/// The header that carries the shutdown token when `LAMEDUCK_SHUTDOWN_TOKEN` is set.
pub const TOKEN_HEADER: &str = "x-lameduck-token";

/// The name of the exit hold each `/shutdown` request takes until its response is sent
/// (it may show in the report if the deadline cut one short).
pub const SHUTDOWN_HOLD: &str = "shutdown-request";

/// Trigger shutdown (reason `prestop`) and answer once Stopping began, i.e. once the
/// lame-duck delay (and any drain hold) is over, so the kubelet's preStop hook blocks for
/// exactly that long before it sends SIGTERM. Every call, first or not, gets the same 200
/// at the same moment, and gets it before the process exits.
pub(super) async fn shutdown(
    lifecycle: &Lifecycle,
    shutdown_token: Option<&str>,
    given_token: Option<HeaderValue>,
) -> Response<AdminBody> {
    if let Some(expected) = shutdown_token {
        match given_token {
            None => {
                tracing::warn!("/shutdown refused: no {TOKEN_HEADER} header");
                let mut response = text_response(
                    StatusCode::UNAUTHORIZED,
                    "missing X-Lameduck-Token header\n",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("X-Lameduck-Token"),
                );
                return response;
            }
            // Constant time, so the comparison does not tell an attacker how much of a
            // guess was right (the length still shows; a token's length is no secret).
            Some(given) if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) => {
                tracing::warn!("/shutdown refused: wrong {TOKEN_HEADER}");
                return text_response(StatusCode::FORBIDDEN, "wrong X-Lameduck-Token\n");
            }
            Some(_) => {}
        }
    }

    // Taken before the trigger, so `run()` cannot finish between the two.
    let hold = lifecycle.hold_exit(SHUTDOWN_HOLD);
    let trigger = lifecycle.trigger(lameduck::Reason::PreStop);
    if trigger.first {
        tracing::info!("shutdown requested on /shutdown (preStop)");
    }
    lifecycle.stopping().await;
    let body = serde_json::json!({
        "first": trigger.first,
        "state": lifecycle.state().as_str(),
        "reason": trigger.reason.to_string(),
    })
    .to_string();
    let mut response = json_response(StatusCode::OK, String::new());
    *response.body_mut() = AdminBody::held(body, hold);
    response
}
