//! One request through [`Server`](crate::Server): counted from the moment the service
//! takes it until its response body has ended, answered `500` if the handler panics, told
//! `Connection: close` from Draining on (HTTP/1).
//!
//! Internal: this is the in-flight layer, the panic catching and tower's `Oneshot` in one
//! hyper service, one future and one body. Layered, each request paid for three futures
//! and two bodies wrapped one in the other, each moved into the next (a copy of the
//! handler's future every time) and each polled through its own state machine: together
//! about 240 instructions, 2 % of a trivial request (callgrind). The public
//! [`InFlightLayer`](crate::InFlightLayer) stays, for servers that know nothing of the
//! lifecycle.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::CONNECTION;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use lameduck::{ActivityCounter, Lifecycle};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::body::end_with_last_frame;
use crate::in_flight::{CLOSE, RequestGuard};
use crate::io::ConnectionState;
use crate::panic::{BodyPanicked, internal_server_error, log_panic, panic_message};
use crate::state_watch::StateWatch;
use crate::stop_token::StopToken;

/// What every connection's service shares.
pub(crate) struct RequestShared {
    states: StateWatch,
    requests: ActivityCounter,
    stop_token: Option<StopToken>,
}

impl RequestShared {
    pub(crate) fn new(lifecycle: &Lifecycle, states: StateWatch, insert_stop_token: bool) -> Self {
        Self {
            states,
            requests: lifecycle.requests().clone(),
            stop_token: insert_stop_token.then(|| StopToken::new(lifecycle)),
        }
    }
}

/// The hyper service of one connection: the application's tower service `S`, cloned for
/// each request as `TowerToHyperService` does, and `C`, the connection's data that
/// [`Server::connect_info`](crate::Server::connect_info) puts into each request.
pub(crate) struct ConnectionService<S, C> {
    service: S,
    shared: Arc<RequestShared>,
    connection: Arc<ConnectionState>,
    info: Option<C>,
}

impl<S, C> ConnectionService<S, C> {
    pub(crate) fn new(
        service: S,
        shared: Arc<RequestShared>,
        connection: Arc<ConnectionState>,
        info: Option<C>,
    ) -> Self {
        Self {
            service,
            shared,
            connection,
            info,
        }
    }
}

impl<S, C: Clone + Send + Sync + 'static> ConnectionService<S, C> {
    /// `call` for a server that puts data into every request. Out of line, and the whole
    /// of it: with the map's inserts inlined, `call` is too large for hyper's dispatcher to
    /// inline it (about 45 instructions per request); and a request whose address is
    /// taken, or that comes from either of two branches, is copied once more on every
    /// request, whether the inserts run or not (a memcpy of the whole request, about 50
    /// instructions).
    #[inline(never)]
    fn serve_with_extensions<ReqBody>(
        &self,
        mut request: Request<ReqBody>,
    ) -> ServeRequest<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        if let Some(info) = &self.info {
            request.extensions_mut().insert(info.clone());
        }
        if let Some(token) = &self.shared.stop_token {
            request.extensions_mut().insert(token.clone());
        }
        self.serve(request)
    }
}

impl<S, C, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for ConnectionService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    C: Clone + Send + Sync + 'static,
{
    type Response = Response<ServedBody<ResBody>>;
    // Boxed here rather than in hyper, so that a service's error that is not `Send` need
    // not be kept in the future that HTTP/2 sends to another task.
    type Error = BoxError;
    type Future = ServeRequest<S, ReqBody>;

    #[inline]
    fn call(&self, request: Request<ReqBody>) -> Self::Future {
        if self.info.is_some() || self.shared.stop_token.is_some() {
            return self.serve_with_extensions(request);
        }
        self.serve(request)
    }
}

impl<S: Clone, C> ConnectionService<S, C> {
    /// The request's future. Inlined into each of `call`'s two ways, so that each moves
    /// the request once, straight into the future it returns.
    #[inline(always)]
    fn serve<ReqBody>(&self, request: Request<ReqBody>) -> ServeRequest<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        let request_is_http1 = request.version() <= Version::HTTP_11;
        // Clones first, so that the request is moved once, straight into the future.
        let service = self.service.clone();
        let shared = Arc::clone(&self.shared);
        let connection = Arc::clone(&self.connection);
        ServeRequest {
            stage: Stage::Waiting {
                service,
                request: Some(request),
            },
            guard: None,
            shared,
            connection: Some(connection),
            http1: request_is_http1,
            awaiting_service: false,
        }
    }
}

/// Counted before the service sees the request, so that Stopping cannot miss it. The
/// connection counts HTTP/1 requests only, for its header-read timeout (HTTP/2 has none,
/// and its streams run on other tasks than the connection's).
///
/// The request's own reference to the connection moves into the guard (it needs it no
/// more): one reference count less per request.
#[inline]
fn enter(
    shared: &RequestShared,
    connection: &mut Option<Arc<ConnectionState>>,
    http1: bool,
) -> RequestGuard {
    let connection = if http1 { connection.take() } else { None };
    if let Some(connection) = &connection {
        connection.request_dispatched();
    }
    RequestGuard::with_connection(shared.requests.enter(), connection)
}

/// Calls the service (it is ready) if it has not been yet, and polls its future; `None`
/// when there is nothing to poll (the call panicked).
fn call_and_poll<S, ReqBody, ResBody>(
    mut stage: Pin<&mut Stage<S, ReqBody>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Response<ResBody>, BoxError>>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    if let StageProj::Waiting { service, request } = stage.as_mut().project() {
        let Some(request) = request.take() else {
            return Poll::Ready(None);
        };
        let future = service.call(request);
        stage.set(Stage::Called { future });
    }
    match stage.project() {
        StageProj::Called { future } => future
            .poll(cx)
            .map(|result| Some(result.map_err(Into::into))),
        StageProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        StageProj::Waiting { .. } | StageProj::Done => Poll::Ready(None),
    }
}

pin_project! {
    /// The future of one request: waits for the service to be ready if it was not,
    /// runs the handler's future, and makes its response.
    pub(crate) struct ServeRequest<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        stage: Stage<S, ReqBody>,
        guard: Option<RequestGuard>,
        shared: Arc<RequestShared>,
        // Until the request is counted: then, for HTTP/1, its guard's.
        connection: Option<Arc<ConnectionState>>,
        http1: bool,
        // The connection was told that this request waits for the service to be ready.
        awaiting_service: bool,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Waiting { service: S, request: Option<Request<ReqBody>> },
        Called { #[pin] future: S::Future },
        Failed { error: Option<BoxError> },
        Done,
    }
}

impl<S, ReqBody, ResBody> Future for ServeRequest<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ServedBody<ResBody>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.as_mut().project();
        if let StageProj::Waiting { service, .. } = this.stage.as_mut().project() {
            let ready = service.poll_ready(cx);
            // A pending answer means the request waits in the service (a concurrency
            // limit, a buffer), not that the client is silent: the header-read timeout
            // must not close the connection meanwhile.
            if ready.is_pending() != *this.awaiting_service {
                *this.awaiting_service = ready.is_pending();
                if let Some(connection) = this.connection {
                    connection.set_awaiting_service(*this.awaiting_service);
                }
            }
            match ready {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => this.stage.set(Stage::Failed {
                    error: Some(error.into()),
                }),
                Poll::Ready(Ok(())) => {
                    // Not an assignment: that would call the drop glue of the `None` it
                    // replaces, out of line, on every request.
                    let guard = enter(this.shared, this.connection, *this.http1);
                    if let Some(previous) = this.guard.replace(guard) {
                        drop(previous);
                    }
                }
            }
        }
        // One `catch_unwind` for the service's `call` and its future's `poll`: each costs
        // a copy of what crosses it, and the request and the response are large.
        let stage = this.stage.as_mut();
        let polled = match catch_unwind(AssertUnwindSafe(|| call_and_poll(stage, cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(polled)) => polled,
            Err(payload) => {
                log_panic("handler", &payload);
                // A future that panicked must not be polled again: it is dropped here. One
                // that completed is dropped with this one, a moment later.
                this.stage.set(Stage::Done);
                None
            }
        };
        let guard = this.guard.take();
        // Decided when the response leaves, not when the request came: a request that
        // began while Ready and ends while Draining still closes.
        let close = *this.http1 && this.shared.states.is_draining();
        // The header goes in before the body is wrapped, so that the wrapped response is
        // made where it is returned rather than copied there.
        let mut response = match polled {
            Some(Ok(response)) => response,
            Some(Err(error)) => return Poll::Ready(Err(error)),
            None => {
                let mut response = internal_server_error(ServedBody::empty(guard));
                if close {
                    response.headers_mut().insert(CONNECTION, CLOSE);
                }
                return Poll::Ready(Ok(response));
            }
        };
        if close {
            response.headers_mut().insert(CONNECTION, CLOSE);
        }
        Poll::Ready(Ok(response.map(|body| ServedBody::tracked(body, guard))))
    }
}

pin_project! {
    /// The response body of a request served by [`ConnectionService`]: keeps the request
    /// counted until its last frame, and turns a panic while producing it into an error
    /// that ends the response (hyper then closes the connection; the client sees a
    /// truncated response, as with any body error).
    pub(crate) struct ServedBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    enum BodyKind<B> {
        Tracked {
            #[pin]
            inner: B,
            guard: Option<RequestGuard>,
        },
        // The `500` of a handler that panicked, and a body that panicked.
        Empty { guard: Option<RequestGuard> },
    }
}

impl<B> ServedBody<B> {
    fn tracked(inner: B, guard: Option<RequestGuard>) -> Self {
        Self {
            kind: BodyKind::Tracked { inner, guard },
        }
    }

    fn empty(guard: Option<RequestGuard>) -> Self {
        Self {
            kind: BodyKind::Empty { guard },
        }
    }
}

impl<B> std::fmt::Debug for ServedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedBody").finish_non_exhaustive()
    }
}

impl<B> Body for ServedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let payload = match self.as_mut().project().kind.project() {
            BodyKindProj::Tracked { mut inner, guard } => {
                // Converted inside the catch: what crosses it is copied, and converting
                // after it copies the frame once more (about 27 instructions).
                match catch_unwind(AssertUnwindSafe(|| {
                    inner.as_mut().poll_frame(cx).map(|frame| {
                        end_with_last_frame(&frame, &*inner, guard);
                        frame.map(|frame| frame.map_err(Into::into))
                    })
                })) {
                    Ok(polled) => return polled,
                    Err(payload) => payload,
                }
            }
            BodyKindProj::Empty { guard } => {
                guard.take();
                return Poll::Ready(None);
            }
        };
        let message = panic_message(&payload);
        tracing::error!(panic = %message, "response body panicked; aborting the response");
        // The request ends here: its guard goes with the panicked body.
        self.project().kind.set(BodyKind::Empty { guard: None });
        Poll::Ready(Some(Err(BodyPanicked::new(message).into())))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Tracked { inner, .. } => inner.is_end_stream(),
            BodyKind::Empty { .. } => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Tracked { inner, .. } => inner.size_hint(),
            BodyKind::Empty { .. } => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use hyper::service::Service as _;
    use lameduck::State;
    use std::convert::Infallible;
    use tokio_test::{assert_pending, assert_ready, task};

    use crate::test_support::lifecycle;

    /// A connection's service around `service`, for a lifecycle whose state the test sets
    /// through the `StateWatch`.
    struct Fixture<S> {
        lifecycle: Lifecycle,
        states: StateWatch,
        service: ConnectionService<S, ()>,
        connection: Arc<ConnectionState>,
    }

    fn fixture<S>(service: S) -> Fixture<S> {
        let lifecycle = lifecycle();
        let states = StateWatch::detached(State::Ready);
        let connection = ConnectionState::new();
        let shared = Arc::new(RequestShared::new(&lifecycle, states.clone(), false));
        let service = ConnectionService::new(service, shared, Arc::clone(&connection), None);
        Fixture {
            lifecycle,
            states,
            service,
            connection,
        }
    }

    type Handler = fn(Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    #[tokio::test]
    async fn a_panic_in_call_is_a_500_and_not_left_counted() {
        let handler: Handler = |_| panic!("in call");
        let f = fixture(tower::service_fn(handler));
        let response = f.service.call(Request::new(())).await.expect("a response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            f.lifecycle.requests().active(),
            1,
            "until hyper drops the body"
        );
        assert!(response.into_body().collect().await.is_ok());
        assert_eq!(f.lifecycle.requests().active(), 0);
    }

    #[tokio::test]
    async fn a_panic_in_the_future_is_a_500_and_the_connection_counts_it_ended() {
        let f = fixture(tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("in future");
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
        let response = f.service.call(Request::new(())).await.expect("a response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        drop(response);
        assert_eq!(f.lifecycle.requests().active(), 0);
        assert_eq!(
            f.connection.requests(),
            (1, false),
            "dispatched once, ended"
        );
    }

    #[tokio::test]
    async fn a_panic_in_the_body_is_a_body_error_that_ends_the_request() {
        struct Panicking;
        impl Body for Panicking {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                panic!("in body")
            }
        }
        let f = fixture(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Panicking))
        }));
        let response = f.service.call(Request::new(())).await.expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let error = body.frame().await.expect("a frame").expect_err("an error");
        assert!(error.to_string().contains("in body"), "{error}");
        assert_eq!(f.lifecycle.requests().active(), 0);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn responses_say_connection_close_from_draining_on_for_http1_only() {
        let f = fixture(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
        }));
        let ready = f.service.call(Request::new(())).await.expect("a response");
        assert!(!ready.headers().contains_key(CONNECTION));
        f.states.set(State::Draining);
        let draining = f.service.call(Request::new(())).await.expect("a response");
        assert_eq!(draining.headers()[CONNECTION], "close");
        let mut http2 = Request::new(());
        *http2.version_mut() = Version::HTTP_2;
        let http2 = f.service.call(http2).await.expect("a response");
        assert!(!http2.headers().contains_key(CONNECTION));
    }

    /// Ready only when told, as a concurrency limit is. (It keeps no waker: the test polls
    /// by hand.)
    #[derive(Clone)]
    struct Gate(Arc<std::sync::atomic::AtomicBool>);

    impl Service<Request<()>> for Gate {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.0.load(std::sync::atomic::Ordering::SeqCst) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(Full::new(Bytes::new()))))
        }
    }

    #[tokio::test]
    async fn a_request_waiting_for_the_service_is_not_counted_yet_and_the_connection_knows() {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fixture(Gate(Arc::clone(&open)));
        let mut request = task::spawn(f.service.call(Request::new(())));
        assert_pending!(request.poll());
        assert_eq!(f.lifecycle.requests().active(), 0);
        assert_eq!(f.connection.requests(), (0, true), "waiting in the service");
        open.store(true, std::sync::atomic::Ordering::SeqCst);
        let response = assert_ready!(request.poll()).expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(f.lifecycle.requests().active(), 1, "counted once called");
        drop(response);
        assert_eq!(f.connection.requests(), (1, false));
    }
}
