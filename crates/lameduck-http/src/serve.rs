//! [`serve`] and [`Server`]: the accept loop, from the first connection to the drained
//! listener.

use std::any::Any;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use lameduck::{Lifecycle, Report};
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::BoxError;
use crate::connection::{ServerShared, serve_connection};
use crate::io::Protocols;
use crate::listener::{Listener, is_connection_error};
use crate::request::{ConnectionService, RequestShared};
use crate::state_watch::StateWatch;

/// Default time an HTTP/1 connection may wait for its client with no request in progress
/// (nothing sent yet, headers incomplete, idle between requests) before it is closed.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time a connection that has sent nothing yet when Stopping begins is given to
/// send its first request (see [`Server::first_request_grace`]).
pub const DEFAULT_FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// How long the accept loop pauses after an error of the listener itself (out of file
/// descriptors, say) before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serve `service` on `listener`, following `lifecycle`: a [`Server`], whose options
/// (timeouts, protocols, the client's address) chain on it. `.await` it to serve and
/// drive the lifecycle to the end, for the shutdown [`Report`]; or, for several
/// listeners, run each with [`Server::listen`] and the lifecycle once with
/// [`Lifecycle::run`]. See [`Server`] for what happens in each state.
///
/// ```no_run
/// use axum::{Router, routing::get};
///
/// #[tokio::main]
/// async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
///     let lifecycle = lameduck::Lifecycle::from_env()?;
///     let app = Router::new().route("/", get(|| async { "hello" }));
///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
///     Ok(lameduck_http::serve(listener, app, &lifecycle).await)
/// }
/// ```
pub fn serve<L, S>(listener: L, service: S, lifecycle: &Lifecycle) -> Server<L, S> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header-read timeout is the server's own (connection.rs): hyper's default
    // would arm a timer for every request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    Server {
        listener,
        service,
        lifecycle: lifecycle.clone(),
        builder,
        protocols: Protocols::Both,
        header_read_timeout: None,
        first_request_grace: DEFAULT_FIRST_REQUEST_GRACE,
        insert_stop_token: false,
        connect_info: None,
    }
    .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT)
}

/// An HTTP server (HTTP/1.1 and h2c, on hyper-util's auto connection) that follows a
/// [`Lifecycle`]:
///
/// - **Ready, Draining**: accepts and serves. From Draining on, HTTP/1 responses say
///   `Connection: close` and HTTP/2 connections get GOAWAY (their open streams complete;
///   one opened during the delay gets it at Stopping: its client then reconnects once,
///   when routing has caught up, rather than racing a GOAWAY on every call),
///   so clients move to other replicas while the platform's routing catches up.
/// - **Stopping**: accepts the connections the kernel has already queued, then closes the
///   listener (new connections are refused). Idle connections are closed at once; the
///   requests in flight finish, response bodies included, up to `drain_timeout`, and so
///   do connections upgraded to WebSocket. Requests and long-lived responses can watch
///   for this moment through the [`StopToken`](crate::StopToken) in their
///   extensions.
/// - **drain timeout**: what remains is cut (the lifecycle counts it in the report).
///
/// Every connection is reported to [`Lifecycle::connections`], every request (until its
/// response body ends) to [`Lifecycle::requests`], as [`InFlightLayer`](crate::InFlightLayer)
/// does for other servers, so that Stopping ends the moment the last one is done. (The listener itself counts as one
/// connection until it is closed, so that Stopping cannot end before the queued
/// connections have been accepted.) A handler that panics is answered `500`; its request
/// is not left counted.
///
/// `.await` a server to run it *and* the lifecycle ([`Lifecycle::run`]) and get the
/// report; call [`listen`](Self::listen) to run only the server, e.g. one of several
/// listeners of a service whose lifecycle is run elsewhere.
///
/// # The client's address
///
/// [`connect_info`](Self::connect_info) puts data made from each connection's peer
/// address into every request's extensions; with axum, pass
/// `axum::extract::ConnectInfo` and handlers can extract `ConnectInfo<SocketAddr>` (or
/// `ConnectInfo<tokio::net::unix::SocketAddr>` on a Unix socket), as with
/// `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`.
/// (`lameduck_axum::serve(..).connect_info()` does it for axum.)
///
/// # What is guaranteed at Stopping
///
/// A request is *answered* (not reset) if its first bytes reached the server's socket
/// before its connection was closed:
///
/// - connections established by the kernel before the listener closes are accepted and
///   served, even if the runtime had not noticed them yet ([`Listener::accept_backlog`]);
///   one that has sent nothing yet gets [`first_request_grace`](Self::first_request_grace)
///   to do so;
/// - an HTTP/1 connection is closed as idle only when no request has begun on it since
///   its last response *and* the kernel holds no unread byte for it, asked directly
///   ([`Listener::read_queued`]) rather than trusting the runtime's readiness;
/// - a request begun on an HTTP/1 connection is served and its response closes the
///   connection.
///
/// Not guaranteed, because no server can: a connection whose handshake completes in the
/// microseconds between the last accept and the listener's close is reset by the kernel;
/// a request written on an idle keep-alive connection after the server looked and closed
/// it meets a closed connection (HTTP/1.1 clients retry such requests when idempotent,
/// RFC 9112 §9.3.1). Both are why the lame-duck delay comes first: by Stopping, clients
/// have been told to go away, and the platform has stopped routing here.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let lifecycle = lameduck::Lifecycle::builder()
///     .shutdown_delay(std::time::Duration::ZERO)
///     .exit_process(false)
///     .no_termination_log()
///     .no_signals()
///     .build()
///     .unwrap();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let service = tower::service_fn(|_: Request<hyper::body::Incoming>| async {
///     Ok::<_, Infallible>(Response::new(String::from("hello")))
/// });
/// let server = lameduck_http::serve(listener, service, &lifecycle)
///     .header_read_timeout(std::time::Duration::from_secs(10));
///
/// lifecycle.shutdown(); // in a service: SIGTERM, or the preStop hook
/// let report = server.await;
/// assert!(report.clean);
/// # }
/// ```
///
/// `C` is the type of the per-connection data that [`connect_info`](Self::connect_info)
/// puts into each request's extensions; `()`, the default, when there is none.
#[must_use = "a server does nothing until it is awaited or `listen`ed"]
pub struct Server<L, S, C = ()> {
    listener: L,
    service: S,
    lifecycle: Lifecycle,
    builder: auto::Builder<TokioExecutor>,
    protocols: Protocols,
    header_read_timeout: Option<Duration>,
    first_request_grace: Duration,
    insert_stop_token: bool,
    connect_info: Option<ConnectInfoFn<C>>,
}

/// Makes a connection's data from its peer address, given as the `Option<L::Addr>` in a
/// `&mut dyn Any` (taken out), so that `Server` names no `L::Addr` and needs no bound on
/// `L`. Called once per connection.
type ConnectInfoFn<C> = Box<dyn Fn(&mut dyn Any) -> Option<C> + Send + Sync>;

impl<L, S, C> std::fmt::Debug for Server<L, S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("protocols", &self.protocols)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("first_request_grace", &self.first_request_grace)
            .field("insert_stop_token", &self.insert_stop_token)
            .field("connect_info", &self.connect_info.is_some())
            .finish_non_exhaustive()
    }
}

impl<L, S, C> Server<L, S, C> {
    /// How long an HTTP/1 connection may wait for its client with no request in progress:
    /// a new connection to send anything at all, a client to finish sending a request's
    /// headers, a keep-alive connection to send its next request. Past it the connection is
    /// closed (after at most a quarter of the timeout more: it is checked on a coarse
    /// timer, one per connection, rather than a timer per request). A connection is not
    /// waiting for its client while a request is handled, waits for the service to be
    /// ready, or while its response is still being written (a large body to a slow
    /// reader). `None` for no limit. Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    ///
    /// HTTP/2 connections are not covered: an idle HTTP/2 connection stays open until the
    /// client closes it or draining sends it GOAWAY (hyper's HTTP/2 keep-alive pings,
    /// through [`configure_hyper`](Self::configure_hyper), close one whose client is gone).
    ///
    /// # Panics
    ///
    /// If `timeout` is `Some(Duration::ZERO)`, which would close every connection before its
    /// first request could arrive. For no limit, pass `None` (zero means "no limit" in some
    /// other servers, not here).
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        let timeout = timeout.into();
        assert!(
            timeout != Some(Duration::ZERO),
            "header_read_timeout(Duration::ZERO) would close every connection at once; \
             pass None for no limit"
        );
        self.header_read_timeout = timeout;
        self
    }

    /// How long a connection that has sent nothing yet when Stopping begins may take to
    /// send its first request before it is closed. Such a connection was accepted before
    /// the listener closed (maybe from the backlog at the last moment), and its client is
    /// likely writing its request right now. Default [`DEFAULT_FIRST_REQUEST_GRACE`];
    /// it is capped by the header-read timeout.
    pub fn first_request_grace(mut self, grace: Duration) -> Self {
        self.first_request_grace = grace;
        self
    }

    /// Put a [`StopToken`](crate::StopToken) into every request's extensions
    /// (with axum: `Extension(signal): Extension<StopToken>`). Off by default: it is
    /// a map insertion on every request, which with axum also makes the extension map
    /// grow once — about 2 % of the instructions of a trivial request. To give the
    /// signal to a few routes only, layer it on them instead:
    ///
    /// ```
    /// use axum::{Extension, Router, routing::get};
    /// use lameduck_http::StopToken;
    ///
    /// # async fn events(Extension(_signal): Extension<StopToken>) {}
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hello" }))
    ///     .route(
    ///         "/events",
    ///         get(events).layer(Extension(StopToken::new(&lifecycle))),
    ///     );
    /// # drop(app);
    /// ```
    pub fn insert_stop_token(mut self) -> Self {
        self.insert_stop_token = true;
        self
    }

    /// Serve HTTP/1 only; an HTTP/2 client's connection is closed.
    pub fn http1_only(mut self) -> Self {
        self.protocols = Protocols::Http1Only;
        self
    }

    /// Serve HTTP/2 (h2c, prior knowledge) only; an HTTP/1 client's connection is closed.
    pub fn http2_only(mut self) -> Self {
        self.protocols = Protocols::Http2Only;
        self
    }

    /// Configure hyper further (HTTP/2 stream limits, keep-alive pings, buffer sizes...).
    /// The lifecycle behaviour stays as documented; leave the timers in place. Use
    /// [`header_read_timeout`](Self::header_read_timeout) rather than hyper's
    /// `http1().header_read_timeout(..)`, which would arm a timer for every request again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// # let service = tower::service_fn(|_: http::Request<hyper::body::Incoming>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// # });
    /// let server = lameduck_http::serve(listener, service, &lifecycle)
    ///     .configure_hyper(|builder| {
    ///         builder.http2().max_concurrent_streams(100);
    ///     });
    /// # drop(server);
    /// # }
    /// ```
    pub fn configure_hyper(mut self, f: impl FnOnce(&mut auto::Builder<TokioExecutor>)) -> Self {
        f(&mut self.builder);
        self
    }
}

impl<L: Listener, S, C> Server<L, S, C> {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<L::Addr> {
        self.listener.local_addr()
    }

    /// Put `info(peer address)`, made once per connection, into the extensions of every
    /// request on that connection. With axum, `connect_info(axum::extract::ConnectInfo)`
    /// lets handlers extract `ConnectInfo<SocketAddr>` (`ConnectInfo<L::Addr>`: the
    /// `tokio::net::unix::SocketAddr` of a Unix socket), as `axum::serve` does with
    /// `into_make_service_with_connect_info`; any other `Clone + Send + Sync` type works
    /// too (`Extension<T>` reads it). Replaces an earlier call.
    ///
    /// The cost is the same as `axum::serve`'s: on each request one clone of the data
    /// into the extensions (an allocation for the value, and the map's when it is still
    /// empty); no lock. Without it, nothing is inserted.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{Router, extract::ConnectInfo, routing::get};
    ///
    /// async fn whoami(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    ///     peer.to_string()
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// let app: Router = Router::new().route("/whoami", get(whoami));
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// let server = lameduck_http::serve(listener, app, &lifecycle).connect_info(ConnectInfo);
    /// # drop(server);
    /// # }
    /// ```
    pub fn connect_info<I>(
        self,
        info: impl Fn(L::Addr) -> I + Send + Sync + 'static,
    ) -> Server<L, S, I>
    where
        I: Clone + Send + Sync + 'static,
    {
        Server {
            listener: self.listener,
            service: self.service,
            lifecycle: self.lifecycle,
            builder: self.builder,
            protocols: self.protocols,
            header_read_timeout: self.header_read_timeout,
            first_request_grace: self.first_request_grace,
            insert_stop_token: self.insert_stop_token,
            connect_info: Some(Box::new(move |peer: &mut dyn Any| {
                peer.downcast_mut::<Option<L::Addr>>()
                    .and_then(Option::take)
                    .map(&info)
            })),
        }
    }
}

impl<L, S, B, C> Server<L, S, C>
where
    C: Clone + Send + Sync + 'static,
    L: Listener,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serve this listener without driving the lifecycle, until it is drained: the
    /// listener closed at Stopping, and every connection done or cut. For a service with
    /// several listeners: `tokio::spawn` each one's `listen()`, and
    /// [`run`](Lifecycle::run) the lifecycle once, in `main`. Awaiting the server itself
    /// does both for one listener.
    pub fn listen(self) -> impl Future<Output = ()> + Send + 'static {
        let states = StateWatch::new(&self.lifecycle);
        let requests = Arc::new(RequestShared::new(
            &self.lifecycle,
            states.clone(),
            self.insert_stop_token,
        ));
        let connect_info = self.connect_info;
        // One clone per connection, reporting to that connection's state, with the
        // connection's data if any.
        let for_connection = move |service: &S, peer: L::Addr| {
            let service = service.clone();
            let info = connect_info.as_ref().and_then(|info| info(&mut Some(peer)));
            let requests = Arc::clone(&requests);
            move |state| ConnectionService::new(service, requests, state, info)
        };
        let service = self.service;
        let shared = Arc::new(ServerShared {
            builder: self.builder,
            protocols: self.protocols,
            header_read_timeout: self.header_read_timeout,
            first_request_grace: match self.header_read_timeout {
                Some(timeout) => self.first_request_grace.min(timeout),
                None => self.first_request_grace,
            },
            states,
            connections: self.lifecycle.connections().clone(),
            lifecycle: self.lifecycle.clone(),
        });
        let lifecycle = self.lifecycle;
        let mut listener = self.listener;

        async move {
            // Inside the runtime now: make sure the state is followed and events relayed
            // even if no request ever reads the state.
            shared.states.follow();
            let connections = TaskTracker::new();
            // The listener is counted until it is closed, so that Stopping cannot end
            // between its start and the accepting of the queued connections.
            let listening = lifecycle.listeners().enter();
            let stop = lifecycle.stop_token();
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((io, addr)) => {
                            tracing::trace!(?addr, "connection accepted");
                            connections.spawn(serve_connection::<L, _, _>(
                                io, for_connection(&service, addr), Arc::clone(&shared),
                            ));
                        }
                        Err(error) if is_connection_error(&error) => {}
                        Err(error) => {
                            tracing::error!(%error, "accepting connections failed; retrying");
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                            }
                        }
                    },
                }
            }
            let queued = listener.accept_backlog();
            if !queued.is_empty() {
                tracing::debug!(
                    count = queued.len(),
                    "accepted the queued connections; listener closed"
                );
            }
            for (io, addr) in queued {
                tracing::trace!(?addr, "queued connection accepted");
                connections.spawn(serve_connection::<L, _, _>(
                    io,
                    for_connection(&service, addr),
                    Arc::clone(&shared),
                ));
            }
            drop(listening);
            connections.close();
            connections.wait().await;
        }
    }
}

/// The future of an awaited [`Server`]: resolves to the lifecycle's report.
#[must_use = "futures do nothing unless polled"]
pub struct ServeFuture(Pin<Box<dyn Future<Output = Report> + Send>>);

impl std::fmt::Debug for ServeFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeFuture").finish_non_exhaustive()
    }
}

impl Future for ServeFuture {
    type Output = Report;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Report> {
        self.0.as_mut().poll(cx)
    }
}

impl<L, S, B, C> IntoFuture for Server<L, S, C>
where
    C: Clone + Send + Sync + 'static,
    L: Listener,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = Report;
    type IntoFuture = ServeFuture;

    /// Run the server and the lifecycle together; the report once both are done.
    fn into_future(self) -> ServeFuture {
        let lifecycle = self.lifecycle.clone();
        let server = self.listen();
        ServeFuture(Box::pin(async move {
            let ((), report) = tokio::join!(server, lifecycle.run());
            report
        }))
    }
}
