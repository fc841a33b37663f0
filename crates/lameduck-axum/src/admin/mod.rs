//! The admin endpoints: their settings, the router, its health and shutdown handlers, and
//! the listener that serves them.

mod config;
mod render;
mod server;
mod shutdown;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use lameduck::{CheckKind, Lifecycle};
use tokio::net::TcpListener;

use config::AdminEnv;
pub use config::{DEFAULT_ADMIN_ADDR, ENV_ADMIN_ADDR, ENV_SHUTDOWN_TOKEN};
pub use server::{
    AdminError, AdminLimits, AdminServer, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES,
};
pub use shutdown::{SHUTDOWN_HOLD, TOKEN_HEADER};

/// Every path the router may serve itself: a route of the application's at one of these
/// or under one ([`Admin::route`]) is refused.
const BUILTIN_PATHS: [&str; 6] = [
    "/healthz",
    "/livez",
    "/ready",
    "/readyz",
    "/startupz",
    "/shutdown",
];

/// The health endpoints: path, and the kind of check it runs. The path (without its `/`)
/// also names the endpoint in the text output (`readyz check passed`).
const HEALTH_PATHS: [(&str, CheckKind); 5] = [
    ("/healthz", CheckKind::Liveness),
    ("/livez", CheckKind::Liveness),
    ("/ready", CheckKind::Readiness),
    ("/readyz", CheckKind::Readiness),
    ("/startupz", CheckKind::Startup),
];

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
    lifecycle: Lifecycle,
    expose_details: bool,
    shutdown_endpoint: bool,
    shutdown_token: Option<String>,
    addr: std::net::SocketAddr,
    listener: Option<TcpListener>,
    limits: AdminLimits,
    /// The application's routes, none at a built-in path.
    routes: Router,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("expose_details", &self.expose_details)
            .field("shutdown_endpoint", &self.shutdown_endpoint)
            // A secret: only whether there is one.
            .field("shutdown_token", &self.shutdown_token.is_some())
            .field("addr", &self.addr)
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What every handler shares; read-only, so nothing a request does contends on it.
struct Endpoints {
    lifecycle: Lifecycle,
    expose_details: bool,
    shutdown_token: Option<String>,
}

type AdminState = State<Arc<Endpoints>>;

impl Admin {
    /// The endpoints of `lifecycle`, configured by `LAMEDUCK_ADMIN_ADDR` and
    /// `LAMEDUCK_SHUTDOWN_TOKEN`; a bad value is an error naming the variable (the token
    /// is never echoed). Failure details are withheld from responses, `/shutdown` is on,
    /// and the listener has the default [`AdminLimits`].
    pub fn from_env(lifecycle: &Lifecycle) -> Result<Self, AdminError> {
        Ok(Self::with_env(lifecycle, AdminEnv::from_env()?))
    }

    fn with_env(lifecycle: &Lifecycle, env: AdminEnv) -> Self {
        Self {
            lifecycle: lifecycle.clone(),
            expose_details: false,
            shutdown_endpoint: true,
            shutdown_token: env.shutdown_token,
            addr: env.addr,
            listener: None,
            limits: AdminLimits::default(),
            routes: Router::new(),
        }
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
        if let Some(builtin) = reserved_by(path) {
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
        self.expose_details = expose;
        self
    }

    /// Serve `/shutdown` (the default) or not, e.g. when merging the health endpoints into
    /// a traffic router where anyone could call it.
    pub fn shutdown_endpoint(mut self, serve: bool) -> Self {
        self.shutdown_endpoint = serve;
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
        let token = token.into();
        assert!(
            config::is_valid_token(&token),
            "Admin::shutdown_token: the token must be non-empty visible ASCII (it travels in \
             an HTTP header)"
        );
        self.shutdown_token = Some(token);
        self
    }

    /// The listener's limits (connection cap, header-read timeout, header size).
    pub fn limits(mut self, limits: AdminLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serve on this listener instead of binding `LAMEDUCK_ADMIN_ADDR` (tests bind
    /// `127.0.0.1:0`; a listener handed over by the platform).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
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
    pub async fn spawn(mut self) -> Result<AdminServer, AdminError> {
        let listener = match self.listener.take() {
            Some(listener) => listener,
            None => TcpListener::bind(self.addr)
                .await
                .map_err(|source| AdminError::Bind {
                    addr: self.addr,
                    source,
                })?,
        };
        let lifecycle = self.lifecycle.clone();
        let limits = self.limits.clone();
        server::spawn_server(listener, self.router(), &lifecycle, limits)
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
        let admin = Arc::new(Endpoints {
            lifecycle: self.lifecycle,
            expose_details: self.expose_details,
            shutdown_token: self.shutdown_token,
        });
        let mut router = Router::new();
        for (path, kind) in HEALTH_PATHS {
            let label = &path[1..];
            router = router
                .route(
                    path,
                    get(
                        move |state: AdminState, query: HealthQuery, headers: HeaderMap| {
                            health(state, query, headers, kind, label)
                        },
                    ),
                )
                .route(
                    &format!("{path}/{{name}}"),
                    get(
                        move |state: AdminState,
                              Path(name): Path<String>,
                              query: HealthQuery,
                              headers: HeaderMap| {
                            health_one(state, name, query, headers, kind, label)
                        },
                    ),
                );
        }
        if self.shutdown_endpoint {
            router = router.route(
                "/shutdown",
                get(shutdown::shutdown).post(shutdown::shutdown),
            );
        }
        let builtin = router
            .with_state(admin)
            .layer(axum::middleware::map_response(no_store));
        // No path of the application's is a built-in one (`route` refused them), so this
        // merge cannot conflict. Merged into the application's routes, not the other way
        // round: the fallback kept (404, `no-store`) is then the built-in router's.
        self.routes.merge(builtin)
    }
}

/// The built-in path that `path` is, or lies under (`/readyz/db`, `/livez/{name}`), if
/// any. A parameter that begins the segment right after the name (`/livez{x}`) counts as
/// under it too.
fn reserved_by(path: &str) -> Option<&'static str> {
    BUILTIN_PATHS.into_iter().find(|builtin| {
        path.strip_prefix(builtin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '{']))
    })
}

/// `Cache-Control: no-store` on every response (probe answers must never be reused by a
/// proxy or a client), and `nosniff`, since some bodies echo a name from the URL.
async fn no_store(mut response: Response) -> Response {
    no_store_headers(response.headers_mut());
    response
}

pub(crate) fn no_store_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// `?verbose` and `?exclude=NAME` (repeatable). A query that does not decode is a 400.
/// Excluding `lifecycle` does not make readiness pass once shutdown has begun.
type HealthQuery = Query<Vec<(String, String)>>;

struct Options {
    verbose: bool,
    exclude: Vec<String>,
    json: bool,
}

impl Options {
    fn new(Query(pairs): HealthQuery, headers: &HeaderMap) -> Self {
        let mut options = Self {
            verbose: false,
            exclude: Vec::new(),
            json: wants_json(headers),
        };
        for (key, value) in pairs {
            match key.as_str() {
                // `?verbose`, `?verbose=1`, `?verbose=true`; `?verbose=false` turns it off.
                "verbose" => options.verbose = !matches!(value.as_str(), "false" | "0"),
                "exclude" if !value.is_empty() => options.exclude.push(value),
                _ => {}
            }
        }
        options
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("application/json"))
}

async fn health(
    State(admin): AdminState,
    query: HealthQuery,
    headers: HeaderMap,
    kind: CheckKind,
    label: &'static str,
) -> Response {
    let options = Options::new(query, &headers);
    let report = admin
        .lifecycle
        .health()
        .check_excluding(kind, &options.exclude)
        .await;
    render::respond(
        label,
        report.ok,
        &report.checks,
        &report.unmatched_excludes,
        &options,
        admin.expose_details,
    )
}

async fn health_one(
    State(admin): AdminState,
    name: String,
    query: HealthQuery,
    headers: HeaderMap,
    kind: CheckKind,
    label: &'static str,
) -> Response {
    let options = Options::new(query, &headers);
    // Readiness of one check still fails once shutdown has begun (the report then lists
    // the failing `lifecycle` check first).
    match admin.lifecycle.health().check_named(kind, &name).await {
        Some(report) => render::respond(
            label,
            report.ok,
            &report.checks,
            &[],
            &options,
            admin.expose_details,
        ),
        None => render::unknown_check(kind, &name, &options),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn lifecycle() -> Lifecycle {
        Lifecycle::builder()
            .exit_process(false)
            .no_termination_log()
            .no_signals()
            .build()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_reports_an_address_in_use_naming_it_and_the_variable() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let lifecycle = lifecycle();
        let env = AdminEnv {
            addr,
            shutdown_token: None,
        };
        let error = Admin::with_env(&lifecycle, env)
            .spawn()
            .await
            .expect_err("the port is taken");
        assert!(matches!(error, AdminError::Bind { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains(ENV_ADMIN_ADDR), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_binds_the_address_from_the_environment() {
        // Port 0 through the same path as LAMEDUCK_ADMIN_ADDR=127.0.0.1:0.
        let env =
            AdminEnv::from_lookup(|name| (name == ENV_ADMIN_ADDR).then(|| "127.0.0.1:0".into()))
                .unwrap();
        let lifecycle = lifecycle();
        let server = Admin::with_env(&lifecycle, env).spawn().await.unwrap();
        assert!(server.local_addr().ip().is_loopback());
        assert_ne!(server.local_addr().port(), 0);
        let _probe = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        server.shutdown();
        server.wait().await;
    }

    #[test]
    fn debug_never_shows_the_token() {
        let lifecycle = lifecycle();
        let admin = Admin::with_env(&lifecycle, AdminEnv::from_lookup(|_| None).unwrap())
            .shutdown_token("s3cret-token");
        let debug = format!("{admin:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("shutdown_token: true"), "{debug}");
    }
}
