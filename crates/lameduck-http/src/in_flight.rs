//! [`InFlightLayer`]: counts in-flight requests for the lifecycle, for any tower server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{CONNECTION, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use lameduck::{ActivityCounter, ActivityGuard, Lifecycle, State};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::InFlightBody;
use crate::io::ConnectionState;
use crate::state_watch::StateWatch;
use crate::stop_token::StopToken;

/// Default `Retry-After` of the `503` answered after Stopping began.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `Connection: close`, on the responses of a server that wants its clients to leave.
pub(crate) const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// A tower layer that reports every request to the lifecycle's
/// [`requests`](Lifecycle::requests) counter until its response body has ended, so that
/// Stopping waits for it (up to `drain_timeout`) and the report counts it if it is cut.
///
/// It also speaks for the lifecycle on the wire:
///
/// - from Draining on, HTTP/1 responses carry `Connection: close`, so keep-alive clients
///   reconnect — to another replica, once the platform has stopped routing here;
/// - once Stopping has begun, a new request is answered `503 Service Unavailable` with
///   `Retry-After` and `Connection: close` instead of reaching the service: its
///   connection should not be carrying new work any more.
///
/// Use it with a server that knows nothing of the lifecycle (`axum::serve`, a plain hyper
/// loop). [`Server`](crate::Server) does the same by itself — with one difference: it
/// serves the requests that reach it during Stopping, because it only lets through those
/// a client had already sent — so do not add it there.
///
/// The request path takes no lock and allocates nothing: one atomic load for the state
/// (mirrored by a task that follows the lifecycle), and the counter's atomics.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use lameduck_http::InFlightLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = lameduck::Lifecycle::builder()
///     .shutdown_delay(std::time::Duration::ZERO)
///     .exit_process(false)
///     .no_termination_log()
///     .no_signals()
///     .build()
///     .unwrap();
/// let service = ServiceBuilder::new()
///     .layer(InFlightLayer::new(&lifecycle))
///     .service_fn(|_: Request<String>| async {
///         Ok::<_, Infallible>(Response::new(String::from("hello")))
///     });
///
/// let response = service.clone().oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(lifecycle.requests().active(), 1); // until the body has been sent
/// drop(response);
/// assert_eq!(lifecycle.requests().active(), 0);
///
/// lifecycle.shutdown();
/// assert!(lifecycle.run().await.clean); // through Draining and Stopping
/// tokio::task::yield_now().await; // let the layer's mirror catch up
/// let response = service.oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(response.headers()["retry-after"], "1");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct InFlightLayer {
    shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
struct Shared {
    states: StateWatch,
    requests: ActivityCounter,
    retry_after: HeaderValue,
    signal: StopToken,
    insert_signal: bool,
}

impl InFlightLayer {
    /// A layer reporting to `lifecycle`. Call it inside a tokio runtime if you can (the
    /// task that mirrors the state starts then; otherwise on the first request).
    pub fn new(lifecycle: &Lifecycle) -> Self {
        Self {
            shared: Arc::new(Shared {
                states: StateWatch::new(lifecycle),
                requests: lifecycle.requests().clone(),
                retry_after: retry_after_value(DEFAULT_RETRY_AFTER),
                signal: StopToken::new(lifecycle),
                insert_signal: false,
            }),
        }
    }

    /// The `Retry-After` of the `503` answered after Stopping began, in whole seconds
    /// (rounded up). Default [`DEFAULT_RETRY_AFTER`].
    pub fn retry_after(self, after: Duration) -> Self {
        self.update(|shared| shared.retry_after = retry_after_value(after))
    }

    /// Insert a [`StopToken`] into every request's extensions, for handlers of
    /// long-lived responses. Off by default: it costs an allocation per request.
    pub fn insert_stop_token(self) -> Self {
        self.update(|shared| shared.insert_signal = true)
    }

    fn update(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }
}

fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    HeaderValue::from(secs)
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`InFlightLayer`].
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What keeps a request counted: the lifecycle's guard and, under [`Server`](crate::Server),
/// the connection's count of requests in progress. Dropping it ends the request.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    _in_flight: ActivityGuard,
    connection: Option<Arc<ConnectionState>>,
}

impl RequestGuard {
    pub(crate) fn new(in_flight: ActivityGuard) -> Self {
        Self::with_connection(in_flight, None)
    }

    #[inline]
    pub(crate) fn with_connection(
        in_flight: ActivityGuard,
        connection: Option<Arc<ConnectionState>>,
    ) -> Self {
        Self {
            _in_flight: in_flight,
            connection,
        }
    }
}

impl Drop for RequestGuard {
    #[inline]
    fn drop(&mut self) {
        if let Some(connection) = &self.connection {
            connection.request_ended();
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InFlight<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<InFlightBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let http1 = req.version() <= Version::HTTP_11;
        if shared.states.state() >= State::Stopping {
            return ResponseFuture {
                kind: Kind::Rejected {
                    retry_after: shared.retry_after.clone(),
                    http1,
                },
            };
        }
        // Counted before the service sees the request, so that Stopping cannot miss it.
        let guard = RequestGuard::new(shared.requests.enter());
        if shared.insert_signal {
            req.extensions_mut().insert(shared.signal.clone());
        }
        ResponseFuture {
            kind: Kind::Called {
                future: self.inner.call(req),
                guard: Some(guard),
                shared: Arc::clone(shared),
                http1,
            },
        }
    }
}

fn service_unavailable<B>(retry_after: HeaderValue, http1: bool) -> Response<InFlightBody<B>> {
    let mut response = Response::new(InFlightBody::empty());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, retry_after);
    if http1 {
        headers.insert(CONNECTION, CLOSE);
    }
    response
}

pin_project! {
    /// The response future of [`InFlight`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            guard: Option<RequestGuard>,
            shared: Arc<Shared>,
            http1: bool,
        },
        // Small: the future's size is paid on every request.
        Rejected {
            retry_after: HeaderValue,
            http1: bool,
        },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<InFlightBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                shared,
                http1,
            } => {
                let mut response = ready!(future.poll(cx))?;
                // Decided when the response leaves, not when the request came: a request
                // that began while Ready and ends while Draining still closes.
                if *http1 && shared.states.is_draining() {
                    response.headers_mut().insert(CONNECTION, CLOSE);
                }
                let guard = guard.take();
                Poll::Ready(Ok(response.map(|body| InFlightBody::tracked(body, guard))))
            }
            KindProj::Rejected { retry_after, http1 } => {
                Poll::Ready(Ok(service_unavailable(retry_after.clone(), *http1)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_value(Duration::from_secs(1)), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_value(Duration::ZERO), "0");
    }
}
