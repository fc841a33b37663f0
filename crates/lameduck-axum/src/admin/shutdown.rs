//! `/shutdown`: the preStop trigger (docs/shutdown-timeline.md, "Triggers").

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use lameduck::Hold;
use subtle::ConstantTimeEq;

use super::AdminState;

/// The header that carries the shutdown token when `LAMEDUCK_SHUTDOWN_TOKEN` is set.
pub const TOKEN_HEADER: &str = "x-lameduck-token";

/// The name of the exit hold each `/shutdown` request takes until its response is sent
/// (it may show in the report if the deadline cut one short).
pub const SHUTDOWN_HOLD: &str = "shutdown-request";

/// Trigger shutdown (reason `prestop`) and answer once Stopping began, i.e. once the
/// lame-duck delay (and any drain hold) is over, so the kubelet's preStop hook blocks for
/// exactly that long before it sends SIGTERM. Every call, first or not, gets the same 200
/// at the same moment, and gets it before the process exits.
pub(super) async fn shutdown(State(admin): AdminState, headers: HeaderMap) -> Response {
    let lifecycle = &admin.lifecycle;
    if let Some(expected) = admin.shutdown_token.as_deref() {
        match headers.get(TOKEN_HEADER) {
            None => {
                tracing::warn!("/shutdown refused: no {TOKEN_HEADER} header");
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    "missing X-Lameduck-Token header\n",
                )
                    .into_response();
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
                return (StatusCode::FORBIDDEN, "wrong X-Lameduck-Token\n").into_response();
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
    let mut response = Response::new(Body::new(HeldBody {
        data: Some(Bytes::from(body)),
        _hold: hold,
    }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A complete body that keeps an exit hold until the server drops it, which hyper's
/// HTTP/1 does as it queues the last bytes, in the same poll that then flushes them: so
/// `run()` cannot return, and the process cannot exit, before the answer is written.
// Internal: dropping the hold as the handler returns was rejected: when the router is
// merged into an h2 server, the response is written later by the connection's task, after
// `run()` may already have returned.
struct HeldBody {
    data: Option<Bytes>,
    _hold: Hold,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, Bytes::len);
        SizeHint::with_exact(u64::try_from(len).unwrap_or(u64::MAX))
    }
}
