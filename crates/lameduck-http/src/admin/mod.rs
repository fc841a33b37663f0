//! The admin endpoints the platform calls, without a web framework: the probes
//! (`/livez`, `/readyz`, `/startupz`, and the older `/healthz` and `/ready`), `/shutdown`
//! (the preStop hook's target), and the hardened HTTP/1 listener that serves them.
//!
//! `lameduck-axum`'s `Admin` is these endpoints as an axum router, with routes of your own
//! next to them; this module is for a service on hyper alone, and for programs that want
//! the endpoints without axum's code (the `lameduck run` supervisor).
//!
//! ```
//! use lameduck_http::admin::Endpoints;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build()?;
//! let admin = Endpoints::from_env(&lifecycle)?
//! #   .listener(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
//!     .spawn()
//!     .await?;
//! println!("probes on http://{}/readyz", admin.local_addr());
//! # admin.shutdown();
//! # admin.wait().await;
//! # Ok(()) }
//! ```

mod body;
mod config;
mod render;
mod server;
mod shutdown;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use hyper::body::Incoming;
use lameduck::{CheckKind, Lifecycle};
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;

use crate::BoxError;
pub use body::AdminBody;
use config::AdminEnv;
pub use config::{DEFAULT_ADMIN_ADDR, ENV_ADMIN_ADDR, ENV_SHUTDOWN_TOKEN};
pub use server::{
    AdminError, AdminLimits, AdminServer, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_WRITE_TIMEOUT,
};
pub use shutdown::{SHUTDOWN_HOLD, TOKEN_HEADER};

/// The health endpoints, each answering for one kind of check; `NAME` under each
/// (`/readyz/db`) runs one check.
pub const HEALTH_PATHS: &[&str] = &["/healthz", "/livez", "/ready", "/readyz", "/startupz"];

/// The preStop hook's target.
pub const SHUTDOWN_PATH: &str = "/shutdown";

const _: () = assert!(HEALTH_PATHS.len() == HEALTH_KINDS.len());

/// The kind of check each of [`HEALTH_PATHS`] runs.
const HEALTH_KINDS: [CheckKind; 5] = [
    CheckKind::Liveness,
    CheckKind::Liveness,
    CheckKind::Readiness,
    CheckKind::Readiness,
    CheckKind::Startup,
];

/// The built-in path that `path` is, or lies under (`/readyz/db`, `/livez/{name}`), if
/// any: a route of an application's there would shadow a probe. A parameter that begins
/// the segment right after the name (`/livez{x}`) counts as under it too.
///
/// ```
/// use lameduck_http::admin::reserved_by;
/// assert_eq!(reserved_by("/readyz/{check}"), Some("/readyz"));
/// assert_eq!(reserved_by("/metrics"), None);
/// assert_eq!(reserved_by("/readyzz"), None);
/// ```
pub fn reserved_by(path: &str) -> Option<&'static str> {
    HEALTH_PATHS
        .iter()
        .copied()
        .chain([SHUTDOWN_PATH])
        .find(|builtin| {
            path.strip_prefix(builtin)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '{']))
        })
}

/// The admin endpoints of a lifecycle and the settings of the listener that serves them.
///
/// `/livez` and `/healthz` (liveness), `/readyz` and `/ready` (readiness), `/startupz`
/// (startup) answer 200 or 503, and `NAME` under each (`/readyz/db`) runs one check (404
/// if there is none). `?verbose` lists every check, `?exclude=NAME` (repeatable) leaves
/// one out, `Accept: application/json` asks for JSON. Once shutdown has begun (Draining
/// or later) readiness is 503 whatever the query excludes, `lifecycle` included, and so is
/// `/readyz/NAME` for any check. `/shutdown` (GET or POST) triggers shutdown with reason
/// `prestop` and answers once Stopping has begun. Every answer carries
/// `Cache-Control: no-store`.
///
/// The settings come from the environment ([`from_env`](Self::from_env)): the listener's
/// address from `LAMEDUCK_ADMIN_ADDR` (default [`DEFAULT_ADMIN_ADDR`], `0.0.0.0:9090`),
/// and the token `/shutdown` requires from `LAMEDUCK_SHUTDOWN_TOKEN` (none by default).
#[must_use = "the admin endpoints are served only once spawned"]
pub struct Endpoints {
    lifecycle: Lifecycle,
    expose_details: bool,
    shutdown_endpoint: bool,
    shutdown_token: Option<String>,
    addr: SocketAddr,
    listener: Option<TcpListener>,
    limits: AdminLimits,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
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

impl Endpoints {
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
        }
    }

    /// Show why a check failed (its error text) in responses. Off by default, because an
    /// error can name hosts, users or worse, and probe endpoints are often reachable from
    /// more places than intended; the details always go to the log.
    pub fn expose_details(mut self, expose: bool) -> Self {
        self.expose_details = expose;
        self
    }

    /// Serve `/shutdown` (the default) or not.
    pub fn shutdown_endpoint(mut self, serve: bool) -> Self {
        self.shutdown_endpoint = serve;
        self
    }

    /// Whether `/shutdown` is served ([`shutdown_endpoint`](Self::shutdown_endpoint)).
    pub fn serves_shutdown(&self) -> bool {
        self.shutdown_endpoint
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
            "shutdown_token: the token must be non-empty visible ASCII (it travels in an HTTP \
             header)"
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

    /// The endpoints as a service, to answer the built-in paths inside a server of your
    /// own ([`AdminService::answer`]).
    pub fn service(&self) -> AdminService {
        AdminService {
            shared: Arc::new(Shared {
                lifecycle: self.lifecycle.clone(),
                expose_details: self.expose_details,
                shutdown_endpoint: self.shutdown_endpoint,
                shutdown_token: self.shutdown_token.clone(),
            }),
        }
    }

    /// Start serving, on a task of its own: on the [`listener`](Self::listener) given, else
    /// on `LAMEDUCK_ADMIN_ADDR` (default `0.0.0.0:9090`); any other path is a 404.
    ///
    /// Call it before [`Lifecycle::run`], so probes answer from the start. The server keeps
    /// answering through Draining and Stopping (it is not drained with the traffic
    /// listeners) and ends only once the lifecycle has finished, i.e. when `run()` returns:
    /// then it stops accepting, and what is still in progress gets the close grace (1 s).
    /// Admin connections are not counted in [`Lifecycle::connections`], so they never hold
    /// up the drain.
    ///
    /// It speaks HTTP/1.1 only, which is what probes and preStop hooks use. Each request's
    /// head must arrive within the header-read timeout and fit the header limit (else
    /// 431). At the connection limit, a new connection takes the place of the one that has
    /// waited longest for a request (see [`DEFAULT_MAX_ADMIN_CONNECTIONS`]), so idle or
    /// slow clients cannot lock the kubelet's probes out; only when every connection is in
    /// the middle of a response is the new one closed at once.
    pub async fn spawn(self) -> Result<AdminServer, AdminError> {
        let service = self.service();
        self.spawn_with(move |_| service.clone()).await
    }

    /// [`spawn`](Self::spawn), serving each connection with the service `make_service`
    /// makes for its client's address instead: a router that answers the built-in paths
    /// with [`service`](Self::service) and routes of your own, under the same limits.
    pub async fn spawn_with<M, S, B>(mut self, make_service: M) -> Result<AdminServer, AdminError>
    where
        M: Fn(SocketAddr) -> S + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = match self.listener.take() {
            Some(listener) => listener,
            None => TcpListener::bind(self.addr)
                .await
                .map_err(|source| AdminError::Bind {
                    addr: self.addr,
                    source,
                })?,
        };
        server::spawn_server(listener, make_service, &self.lifecycle, self.limits)
    }
}

/// The built-in endpoints as a service: [`answer`](Self::answer) the paths they own inside
/// a router of your own, or serve it as it is (a hyper service; any other path is a 404).
/// Cheap to clone; nothing a request does contends on what it shares.
#[derive(Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("expose_details", &self.shared.expose_details)
            .field("shutdown_endpoint", &self.shared.shutdown_endpoint)
            .finish_non_exhaustive()
    }
}

/// What every answer shares; read-only.
struct Shared {
    lifecycle: Lifecycle,
    expose_details: bool,
    shutdown_endpoint: bool,
    shutdown_token: Option<String>,
}

/// A built-in endpoint's answer, to come.
pub type Answer = Pin<Box<dyn Future<Output = Response<AdminBody>> + Send>>;

/// What a request asks of the built-in endpoints.
enum Endpoint<'a> {
    Health {
        kind: CheckKind,
        /// The path without its `/`: names the endpoint in the text output.
        label: &'static str,
        /// `NAME` in `/readyz/NAME`, as sent (percent-encoded).
        name: Option<&'a str>,
    },
    Shutdown,
}

/// The 400 for a check name that is not percent-encoded UTF-8, as axum words it (the
/// answer before the endpoints moved out of axum).
const UNDECODABLE_NAME: &str = "Invalid URL: Invalid UTF-8 in `name`";

impl AdminService {
    /// The answer to `request` if its path is a built-in one (`None` otherwise): 200/503
    /// for the health endpoints, 404 for an unknown check, 400 for a check name that does
    /// not decode, 405 for a method other than GET or HEAD (or POST, for `/shutdown`).
    /// Every answer carries `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.
    pub fn answer<B>(&self, request: &Request<B>) -> Option<Answer> {
        let endpoint = self.endpoint(request.uri().path())?;
        // The method first, then the name: a wrong method is a 405 whatever the name.
        let method = request.method();
        let allowed = method == Method::GET
            || method == Method::HEAD
            || (matches!(endpoint, Endpoint::Shutdown) && method == Method::POST);
        if !allowed {
            let allow = match endpoint {
                Endpoint::Shutdown => "GET,HEAD,POST",
                Endpoint::Health { .. } => "GET,HEAD",
            };
            let mut response = no_store(Response::new(AdminBody::empty()));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return Some(Box::pin(std::future::ready(response)));
        }
        let shared = Arc::clone(&self.shared);
        Some(match endpoint {
            Endpoint::Health { kind, label, name } => {
                let name = match name.map(|name| percent_decode_str(name).decode_utf8()) {
                    None => None,
                    Some(Ok(name)) => Some(name.into_owned()),
                    Some(Err(_)) => {
                        let response =
                            render::text_response(StatusCode::BAD_REQUEST, UNDECODABLE_NAME);
                        return Some(Box::pin(std::future::ready(no_store(response))));
                    }
                };
                let options = Options::new(request.uri().query(), request.headers());
                Box::pin(async move { no_store(shared.health(kind, label, name, options).await) })
            }
            Endpoint::Shutdown => {
                let given = request.headers().get(TOKEN_HEADER).cloned();
                Box::pin(async move {
                    let token = shared.shutdown_token.as_deref();
                    no_store(shutdown::shutdown(&shared.lifecycle, token, given).await)
                })
            }
        })
    }

    /// The built-in endpoint at `path`, if any.
    fn endpoint<'a>(&self, path: &'a str) -> Option<Endpoint<'a>> {
        if path == SHUTDOWN_PATH {
            return self.shared.shutdown_endpoint.then_some(Endpoint::Shutdown);
        }
        HEALTH_PATHS
            .iter()
            .zip(HEALTH_KINDS)
            .find_map(|(base, kind)| {
                let rest = path.strip_prefix(base)?;
                let label = &base[1..];
                if rest.is_empty() {
                    return Some(Endpoint::Health {
                        kind,
                        label,
                        name: None,
                    });
                }
                // One segment, not empty: `/readyz/` and `/readyz/a/b` are no endpoint.
                let name = rest.strip_prefix('/')?;
                (!name.is_empty() && !name.contains('/')).then_some(Endpoint::Health {
                    kind,
                    label,
                    name: Some(name),
                })
            })
    }
}

impl<B> hyper::service::Service<Request<B>> for AdminService {
    type Response = Response<AdminBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let answer = self.answer(&request);
        Box::pin(async move {
            Ok(match answer {
                Some(answer) => answer.await,
                None => not_found(),
            })
        })
    }
}

/// The 404 for a path no endpoint serves, `no-store` like every answer.
fn not_found() -> Response<AdminBody> {
    let mut response = no_store(Response::new(AdminBody::empty()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

impl Shared {
    async fn health(
        &self,
        kind: CheckKind,
        label: &'static str,
        name: Option<String>,
        options: Options,
    ) -> Response<AdminBody> {
        let health = self.lifecycle.health();
        let Some(name) = name else {
            let report = health.check_excluding(kind, &options.exclude).await;
            return render::respond(
                label,
                report.ok,
                &report.checks,
                &report.unmatched_excludes,
                &options,
                self.expose_details,
            );
        };
        // Readiness of one check still fails once shutdown has begun (the report then lists
        // the failing `lifecycle` check first).
        match health.check_named(kind, &name).await {
            Some(report) => render::respond(
                label,
                report.ok,
                &report.checks,
                &[],
                &options,
                self.expose_details,
            ),
            None => render::unknown_check(kind, &name, &options),
        }
    }
}

/// The headers every built-in answer carries: `Cache-Control: no-store` (probe answers
/// must never be reused by a proxy or a client), and `X-Content-Type-Options: nosniff`,
/// since some bodies echo a name from the URL. For a router that serves the endpoints'
/// paths, to add to its own 404s.
#[doc(hidden)]
pub fn no_store_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn no_store<B>(mut response: Response<B>) -> Response<B> {
    no_store_headers(response.headers_mut());
    response
}

/// `?verbose` and `?exclude=NAME` (repeatable), and whether JSON was asked for.
/// Excluding `lifecycle` does not make readiness pass once shutdown has begun.
struct Options {
    verbose: bool,
    exclude: Vec<String>,
    json: bool,
}

impl Options {
    fn new(query: Option<&str>, headers: &HeaderMap) -> Self {
        let mut options = Self {
            verbose: false,
            exclude: Vec::new(),
            json: wants_json(headers),
        };
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (key, value) in pairs {
            match &*key {
                // `?verbose`, `?verbose=1`, `?verbose=true`; `?verbose=false` turns it off.
                "verbose" => options.verbose = !matches!(&*value, "false" | "0"),
                "exclude" if !value.is_empty() => options.exclude.push(value.into_owned()),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    use crate::test_support::lifecycle;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_reports_an_address_in_use_naming_it_and_the_variable() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let lifecycle = lifecycle();
        let env = AdminEnv {
            addr,
            shutdown_token: None,
        };
        let error = Endpoints::with_env(&lifecycle, env)
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
        let server = Endpoints::with_env(&lifecycle, env).spawn().await.unwrap();
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
        let endpoints = Endpoints::with_env(&lifecycle, AdminEnv::from_lookup(|_| None).unwrap())
            .shutdown_token("s3cret-token");
        let debug = format!("{endpoints:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("shutdown_token: true"), "{debug}");
        let debug = format!("{:?}", endpoints.service());
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn reserved_paths_are_the_builtins_and_what_lies_under_them() {
        for path in [
            "/healthz",
            "/livez/{name}",
            "/ready",
            "/readyz/db",
            "/startupz{x}",
            "/shutdown",
            "/shutdown/now",
        ] {
            assert!(reserved_by(path).is_some(), "{path}");
        }
        for path in ["/", "/metrics", "/readyzz", "/live", "/shutdownx"] {
            assert_eq!(reserved_by(path), None, "{path}");
        }
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn only_built_in_paths_are_answered() {
        let lifecycle = lifecycle();
        let service = Endpoints::with_env(&lifecycle, AdminEnv::from_lookup(|_| None).unwrap())
            .shutdown_endpoint(false)
            .service();
        for path in [
            "/readyz",
            "/livez/db",
            "/ready",
            "/healthz",
            "/startupz/x%20y",
        ] {
            assert!(service.answer(&get(path)).is_some(), "{path}");
        }
        for path in [
            "/",
            "/readyz/",
            "/readyz/a/b",
            "/readyzz",
            "/metrics",
            "/shutdown",
        ] {
            assert!(service.answer(&get(path)).is_none(), "{path}");
        }
    }

    #[tokio::test]
    async fn wrong_methods_and_undecodable_names_are_refused_with_no_store() {
        let lifecycle = lifecycle();
        let service =
            Endpoints::with_env(&lifecycle, AdminEnv::from_lookup(|_| None).unwrap()).service();
        let post = Request::post("/readyz").body(()).unwrap();
        let response = service.answer(&post).unwrap().await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET,HEAD");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let delete = Request::delete("/shutdown").body(()).unwrap();
        let response = service.answer(&delete).unwrap().await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET,HEAD,POST");
        let response = service.answer(&get("/readyz/%FF")).unwrap().await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        // Nothing was triggered by any of that.
        assert_eq!(lifecycle.reason(), None);
    }
}
