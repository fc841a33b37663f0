//! The admin endpoints: the router, its health and shutdown handlers, and
//! the listener that serves them.

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

pub use server::{
    AdminError, AdminLimits, AdminServer, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, serve_admin, serve_admin_with,
};
pub use shutdown::{SHUTDOWN_HOLD, TOKEN_HEADER};

/// Every path the router may serve itself: a route of the application's at one of these
/// or under one ([`AdminRouter::route`]) is refused.
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

/// Builds the admin endpoints as an [`axum::Router`]: serve it on its own listener with
/// [`serve_admin`] (what [`AdminServer::bind`] does), or merge it into a router of yours.
///
/// `/livez` and `/healthz` (liveness), `/readyz` and `/ready` (readiness), `/startupz`
/// (startup) answer 200 or 503, and `NAME` under each (`/readyz/db`) runs one check (404
/// if there is none). `?verbose` lists every check, `?exclude=NAME` (repeatable) leaves
/// one out, `Accept: application/json` asks for JSON. Once shutdown has begun (Draining
/// or later) readiness is 503 whatever the query excludes, `lifecycle` included, and so is
/// `/readyz/NAME` for any check: a probe written `/readyz?exclude=lifecycle` cannot keep
/// a draining pod in the load balancer; `?verbose` still lists the checks.
///
/// Routes of your own go next to them with [`route`](Self::route) (`/metrics` for the
/// scraper, say): served on the admin listener with the same hardening, and unable to
/// shadow a probe.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
/// let admin = lameduck_axum::AdminRouter::new(&lifecycle)
///     .expose_details(true) // show why a check failed, e.g. on a private network
///     .build();
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .merge(admin);
/// # let _ = app;
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "an AdminRouter does nothing until `build()` is called"]
pub struct AdminRouter {
    lifecycle: Lifecycle,
    expose_details: bool,
    shutdown_endpoint: bool,
    /// The application's routes, none at a built-in path.
    routes: Router,
}

/// What every handler shares; read-only, so nothing a request does contends on it.
#[derive(Debug)]
struct Admin {
    lifecycle: Lifecycle,
    expose_details: bool,
}

type AdminState = State<Arc<Admin>>;

impl AdminRouter {
    /// The endpoints of `lifecycle`, with failure details withheld and `/shutdown` on
    /// (requiring `LAMEDUCK_SHUTDOWN_TOKEN` in `X-Lameduck-Token` when that is set).
    pub fn new(lifecycle: &Lifecycle) -> Self {
        Self {
            lifecycle: lifecycle.clone(),
            expose_details: false,
            shutdown_endpoint: true,
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
    /// use lameduck_axum::AdminRouter;
    ///
    /// async fn metrics() -> &'static str {
    ///     "# TYPE up gauge\nup 1\n"
    /// }
    ///
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// let admin = AdminRouter::new(&lifecycle).route("/metrics", get(metrics));
    /// // With `lameduck_axum::serve(listener, app, &lifecycle).admin(admin)`, or:
    /// let router: axum::Router = admin.build();
    /// # drop(router);
    /// ```
    ///
    /// ```should_panic
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// // panics: "`/readyz/{check}` is reserved for the built-in `/readyz` endpoint ..."
    /// let admin = lameduck_axum::AdminRouter::new(&lifecycle)
    ///     .route("/readyz/{check}", axum::routing::get(|| async { "mine" }));
    /// # drop(admin);
    /// ```
    #[track_caller]
    pub fn route(mut self, path: &str, method_router: MethodRouter) -> Self {
        if let Some(builtin) = reserved_by(path) {
            panic!(
                "AdminRouter::route: `{path}` is reserved for the built-in `{builtin}` endpoint \
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

    /// The router. It has no fallback of its own, so it merges into any router; every
    /// response of the built-in endpoints (and the 404 for a path it does not serve)
    /// carries `Cache-Control: no-store`, while the responses of routes added with
    /// [`route`](Self::route) are left as their handlers make them.
    pub fn build(self) -> Router {
        let admin = Arc::new(Admin {
            lifecycle: self.lifecycle,
            expose_details: self.expose_details,
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

impl From<AdminRouter> for Router {
    fn from(admin: AdminRouter) -> Self {
        admin.build()
    }
}

/// Shorthand for `AdminRouter::new(lifecycle).build()`: the admin endpoints with the
/// defaults.
pub fn admin_router(lifecycle: &Lifecycle) -> Router {
    AdminRouter::new(lifecycle).build()
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
