//! The admin endpoints as an axum router: lameduck-http's built-in endpoints next to routes of
//! the application's, on the same hardened listener.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use lameduck::Lifecycle;
pub use lameduck_http::admin::{
    AdminError, AdminLimits, AdminServer, DEFAULT_ADMIN_ADDR, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_WRITE_TIMEOUT, ENV_ADMIN_ADDR,
    ENV_SHUTDOWN_TOKEN, SHUTDOWN_HOLD, TOKEN_HEADER,
};
use lameduck_http::admin::{Endpoints, HEALTH_PATHS, SHUTDOWN_PATH};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The admin endpoints the platform calls: the probes, `/shutdown` (the preStop hook's
/// target), routes of your own such as `/metrics`, and the hardened listener that serves
/// them. [`serve`](crate::serve) starts them for you (pass a customised one with
/// [`Serve::admin`](crate::Serve::admin)); [`spawn`](Self::spawn) starts them on their own,
/// next to any other server; [`router`](Self::router) merges them into a router of yours.
///
/// `/livez` and `/healthz` (liveness), `/readyz` and `/ready` (readiness), `/startupz`
/// (startup) answer 200 or 503, and `NAME` under each (`/readyz/db`) runs one check (404
/// if there is none). `?verbose` lists every check, `?exclude=NAME` (repeatable) leaves
/// one out, `Accept: application/json` asks for JSON. Once shutdown has begun (Draining
/// or later) readiness is 503 whatever the query excludes, `lifecycle` included, and so is
/// `/readyz/NAME` for any check: a probe written `/readyz?exclude=lifecycle` cannot keep
/// a draining pod in the load balancer; `?verbose` still lists the checks.
///
/// The settings come from the environment ([`from_env`](Self::from_env)): the listener's
/// address from `LAMEDUCK_ADMIN_ADDR` (default [`DEFAULT_ADMIN_ADDR`], `0.0.0.0:9090`),
/// and the token `/shutdown` requires from `LAMEDUCK_SHUTDOWN_TOKEN` (none by default).
///
/// ```
/// use axum::routing::get;
/// use lameduck_axum::Admin;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build()?;
/// let admin = Admin::from_env(&lifecycle)?
///     .route("/metrics", get(|| async { "# TYPE up gauge\nup 1\n" }))
///     .expose_details(true) // show why a check failed, e.g. on a private network
/// #   .listener(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
///     .spawn()
///     .await?;
/// println!("probes on http://{}/readyz", admin.local_addr());
/// # admin.shutdown();
/// # admin.wait().await;
/// # Ok(()) }
/// ```
#[must_use = "the admin endpoints are served only once passed to `serve`, spawned, or merged"]
pub struct Admin {
    /// The built-in endpoints and the listener's settings.
    endpoints: Endpoints,
    /// The application's routes, none at a built-in path.
    routes: Router,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The endpoints of `lifecycle`, configured by `LAMEDUCK_ADMIN_ADDR` and
    /// `LAMEDUCK_SHUTDOWN_TOKEN`; a bad value is an error naming the variable (the token
    /// is never echoed). Failure details are withheld from responses, `/shutdown` is on,
    /// and the listener has the default [`AdminLimits`].
    pub fn from_env(lifecycle: &Lifecycle) -> Result<Self, AdminError> {
        Ok(Self {
            endpoints: Endpoints::from_env(lifecycle)?,
            routes: Router::new(),
        })
    }

    /// Serve a route of your own next to the probes, e.g. `/metrics` for Prometheus: on
    /// the admin listener it is served under the same limits as the probes (connection
    /// cap with eviction, header-read timeout, header size) and, like them, through
    /// Draining and Stopping until the process exits. Your responses are left as they
    /// are (no `Cache-Control: no-store` added). As with [`axum::Router::route`], a
    /// handler that needs state gets it with `get(handler).with_state(state)`.
    ///
    /// # Panics
    ///
    /// If `path` is a built-in path (`/healthz`, `/livez`, `/ready`, `/readyz`,
    /// `/startupz`, `/shutdown`) or lies under one (`/readyz/db`, `/livez/{name}`): a
    /// route there would shadow a probe, or a check's `/NAME` form. They are reserved
    /// whether or not [`shutdown_endpoint`](Self::shutdown_endpoint) serves `/shutdown`.
    /// Like [`axum::Router::route`], also if `path` is invalid or already routed with the
    /// same method.
    ///
    /// ```
    /// use axum::routing::get;
    /// use lameduck_axum::Admin;
    ///
    /// async fn metrics() -> &'static str {
    ///     "# TYPE up gauge\nup 1\n"
    /// }
    ///
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// let admin = Admin::from_env(&lifecycle)?.route("/metrics", get(metrics));
    /// // With `lameduck_axum::serve(listener, app, &lifecycle).admin(admin)`, or:
    /// let router: axum::Router = admin.router();
    /// # drop(router);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```should_panic
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// // panics: "`/readyz/{check}` is reserved for the built-in `/readyz` endpoint ..."
    /// let admin = lameduck_axum::Admin::from_env(&lifecycle)
    ///     .unwrap()
    ///     .route("/readyz/{check}", axum::routing::get(|| async { "mine" }));
    /// # drop(admin);
    /// ```
    #[track_caller]
    pub fn route(mut self, path: &str, method_router: MethodRouter) -> Self {
        if let Some(builtin) = lameduck_http::admin::reserved_by(path) {
            panic!(
                "Admin::route: `{path}` is reserved for the built-in `{builtin}` endpoint \
                 (no route of the application's may be at or under /healthz, /livez, /ready, \
                 /readyz, /startupz or /shutdown, so that no probe can be shadowed)"
            );
        }
        self.routes = self.routes.route(path, method_router);
        self
    }

    /// Show why a check failed (its error text) in responses. Off by default, because an
    /// error can name hosts, users or worse, and probe endpoints are often reachable from
    /// more places than intended; the details always go to the log.
    pub fn expose_details(mut self, expose: bool) -> Self {
        self.endpoints = self.endpoints.expose_details(expose);
        self
    }

    /// Serve `/shutdown` (the default) or not, e.g. when merging the health endpoints into
    /// a traffic router where anyone could call it.
    pub fn shutdown_endpoint(mut self, serve: bool) -> Self {
        self.endpoints = self.endpoints.shutdown_endpoint(serve);
        self
    }

    /// Require `token` in the [`TOKEN_HEADER`] header of `/shutdown` requests, instead of
    /// the `LAMEDUCK_SHUTDOWN_TOKEN` the environment gave (if any).
    ///
    /// # Panics
    ///
    /// If `token` is empty or not visible ASCII (it travels in an HTTP header). The message
    /// does not contain the token.
    #[track_caller]
    pub fn shutdown_token(mut self, token: impl Into<String>) -> Self {
        self.endpoints = self.endpoints.shutdown_token(token);
        self
    }

    /// The listener's limits (connection cap, header-read timeout, header size).
    pub fn limits(mut self, limits: AdminLimits) -> Self {
        self.endpoints = self.endpoints.limits(limits);
        self
    }

    /// Serve on this listener instead of binding `LAMEDUCK_ADMIN_ADDR` (tests bind
    /// `127.0.0.1:0`; a listener handed over by the platform).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.endpoints = self.endpoints.listener(listener);
        self
    }

    /// Start serving, on a task of its own: on the [`listener`](Self::listener) given, else
    /// on `LAMEDUCK_ADMIN_ADDR` (default `0.0.0.0:9090`). For a service that keeps its own
    /// server (`axum::serve`, TLS); [`serve`](crate::serve) does this for you.
    ///
    /// Call it before [`Lifecycle::run`], so probes answer from the start. The server keeps
    /// answering through Draining and Stopping (it is not drained with the traffic
    /// listeners) and ends only once the lifecycle has finished, i.e. when `run()` returns:
    /// then it stops accepting, and what is still in progress gets the close grace (1 s).
    /// Admin connections are not counted in [`Lifecycle::connections`], so they never hold
    /// up the drain.
    ///
    /// It speaks HTTP/1.1 only, which is what probes and preStop hooks use. Handlers can
    /// extract the client's address, [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo).
    /// Every route — the probes and routes of your own ([`route`](Self::route)) alike — is
    /// served under the same limits: each request's head must arrive within the
    /// header-read timeout and fit the header limit (else 431). At the connection limit, a
    /// new connection takes the place of the one that has waited longest for a request
    /// (see [`DEFAULT_MAX_ADMIN_CONNECTIONS`]), so idle or slow clients cannot lock the
    /// kubelet's probes out; only when every connection is in the middle of a response is
    /// the new one closed at once.
    pub async fn spawn(self) -> Result<AdminServer, AdminError> {
        let Self { endpoints, routes } = self;
        // Routes made ready once, not on each request (as `axum::serve` does).
        let router: Router = with_builtins(routes, &endpoints).with_state(());
        endpoints
            .spawn_with(move |peer| WithPeer {
                router: router.clone(),
                peer,
            })
            .await
    }

    /// The endpoints as a router, to merge into one of yours (think twice before exposing
    /// `/shutdown` on a traffic port: [`shutdown_endpoint`](Self::shutdown_endpoint)); the
    /// listener settings do not apply to it. It has no fallback of its own, so it merges
    /// into any router; every response of the built-in endpoints (and the 404 for a path
    /// it does not serve) carries `Cache-Control: no-store`, while the responses of routes
    /// added with [`route`](Self::route) are left as their handlers make them.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build()?;
    /// let app: axum::Router = axum::Router::new()
    ///     .route("/", axum::routing::get(|| async { "hello" }))
    ///     .merge(lameduck_axum::Admin::from_env(&lifecycle)?.shutdown_endpoint(false).router());
    /// # drop(app);
    /// # Ok(()) }
    /// ```
    pub fn router(self) -> Router {
        with_builtins(self.routes, &self.endpoints)
    }
}

/// `routes` and the built-in endpoints of `endpoints`, as one router. The built-in paths
/// are routed here so that the router merges (or nests) like any other; what they answer
/// is lameduck-http's `AdminService::answer`, the same as without axum. Routed by method
/// (`get`, and `post` for `/shutdown`), not with `any`, so that merging a router with a
/// route of its own at a built-in path and method panics, as axum does for any overlap,
/// rather than shadowing a probe or the preStop trigger.
fn with_builtins(routes: Router, endpoints: &Endpoints) -> Router {
    let service = endpoints.service();
    let answer = move |request: Request| {
        let answer = service.answer(&request);
        async move {
            match answer {
                Some(answer) => answer.await.map(Body::new),
                // Only the built-in paths it answers are routed here.
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let mut router = Router::new();
    for path in HEALTH_PATHS {
        router = router
            .route(path, get(answer.clone()))
            .route(&format!("{path}/{{name}}"), get(answer.clone()));
    }
    if endpoints.serves_shutdown() {
        router = router.route(SHUTDOWN_PATH, get(answer.clone()).post(answer));
    }
    // `no-store` on the 404 of a path the router does not serve too.
    let builtin = router.layer(axum::middleware::map_response(no_store));
    // No path of the application's is a built-in one (`route` refused them), so this
    // merge cannot conflict. Merged into the application's routes, not the other way
    // round: the fallback kept (404, `no-store`) is then the built-in router's.
    routes.merge(builtin)
}

async fn no_store(mut response: Response) -> Response {
    lameduck_http::admin::no_store_headers(response.headers_mut());
    response
}

/// The admin router as one connection's hyper service: gives handlers the client's
/// address (`ConnectInfo<SocketAddr>`).
struct WithPeer {
    router: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for WithPeer {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(self.router.clone().oneshot(request))
    }
}
