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
use axum::routing::get;
use lameduck::{CheckKind, Lifecycle};

pub use server::{
    AdminError, AdminLimits, AdminServer, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, serve_admin, serve_admin_with,
};
pub use shutdown::{SHUTDOWN_HOLD, TOKEN_HEADER};

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
        }
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
    /// response it makes carries `Cache-Control: no-store`.
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
        router
            .with_state(admin)
            .layer(axum::middleware::map_response(no_store))
    }
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
