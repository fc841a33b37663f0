//! `serve`: the one call a service's `main` ends with — traffic on the given listener,
//! the admin endpoints on their own, and the lifecycle driven to its report.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;
use axum::extract::ConnectInfo;
use lameduck::{Lifecycle, Report};
use lameduck_http::Server;
use tokio::net::TcpListener;

use crate::admin::{AdminError, AdminRouter, serve_admin};

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The admin listener could not be started.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Serve `app` on `listener` with draining ([`lameduck_http::Server`]), the admin
/// endpoints on the lifecycle's admin address (`LAMEDUCK_ADMIN_ADDR`, default
/// `0.0.0.0:9090`), and drive `lifecycle` to the end. `.await` it for the [`Report`]; it
/// fails only when the admin listener cannot be bound, before anything is served.
///
/// The admin listener is up before the lifecycle starts, so the startup probe answers
/// from the first moment, and stays up until the report is written. Options:
/// [`admin`](Serve::admin) for a customised admin router (routes of your own, such as
/// `/metrics`, next to the probes: [`AdminRouter::route`]),
/// [`admin_listener`](Serve::admin_listener) for its address,
/// [`server`](Serve::server) for the traffic server's settings.
///
/// Handlers on both listeners can extract the client's address,
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), as under
/// `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`, at
/// the same cost (one clone of the address into each request's extensions).
///
/// ```no_run
/// use axum::{Router, routing::get};
///
/// #[tokio::main]
/// async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
///     let lifecycle = lameduck::Lifecycle::from_env()
///         .unwrap_or_else(|e| lameduck::exit_on_config_error(e));
///     let app = Router::new().route("/", get(|| async { "hello" }));
///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
///     let report = lameduck_axum::serve(listener, app, &lifecycle).await?;
///     Ok(report.exit_code())
/// }
/// ```
///
/// With the client's address, and `/metrics` on the admin port:
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use lameduck_axum::AdminRouter;
///
/// async fn hello(ConnectInfo(client): ConnectInfo<SocketAddr>) -> String {
///     format!("hello, {client}")
/// }
///
/// async fn metrics() -> &'static str {
///     "# TYPE requests_total counter\nrequests_total 7\n"
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
///     let lifecycle = lameduck::Lifecycle::from_env()
///         .unwrap_or_else(|e| lameduck::exit_on_config_error(e));
///     let app = Router::new().route("/", get(hello));
///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
///     let report = lameduck_axum::serve(listener, app, &lifecycle)
///         .admin(AdminRouter::new(&lifecycle).route("/metrics", get(metrics)))
///         .await?;
///     Ok(report.exit_code())
/// }
/// ```
pub fn serve(listener: TcpListener, app: Router, lifecycle: &Lifecycle) -> Serve {
    Serve {
        traffic: Server::new(listener, app, lifecycle),
        admin: AdminSettings {
            router: AdminRouter::new(lifecycle),
            listener: None,
        },
        lifecycle: lifecycle.clone(),
    }
}

/// A service ready to run; see [`serve`].
#[must_use = "nothing is served until the `Serve` is awaited"]
pub struct Serve {
    traffic: Server<TcpListener, Router>,
    admin: AdminSettings,
    lifecycle: Lifecycle,
}

struct AdminSettings {
    router: AdminRouter,
    listener: Option<TcpListener>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

impl Serve {
    /// Use this admin router instead of the default one: with routes of your own
    /// ([`AdminRouter::route`], e.g. `/metrics`), which the admin listener serves with the
    /// probes and the same hardening, through Draining and Stopping; or with
    /// [`AdminRouter::expose_details`].
    pub fn admin(mut self, router: AdminRouter) -> Self {
        self.admin.router = router;
        self
    }

    /// Serve the admin endpoints on this listener instead of binding the lifecycle's
    /// admin address (tests bind `127.0.0.1:0`).
    pub fn admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin.listener = Some(listener);
        self
    }

    /// Adjust the traffic server (header-read timeout, protocols, hyper settings).
    pub fn server(
        mut self,
        configure: impl FnOnce(Server<TcpListener, Router>) -> Server<TcpListener, Router>,
    ) -> Self {
        self.traffic = configure(self.traffic);
        self
    }

    /// The traffic listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.traffic.local_addr()
    }

    async fn run(self) -> Result<Report, ServeError> {
        let listener = match self.admin.listener {
            Some(listener) => listener,
            None => {
                let addr = self.lifecycle.config().admin_addr();
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| AdminError::Bind { addr, source })?
            }
        };
        let admin = serve_admin(listener, self.admin.router.build(), &self.lifecycle)?;
        tracing::info!(admin = %admin.local_addr(), "admin endpoints listening");
        if let Ok(addr) = self.traffic.local_addr() {
            tracing::info!(%addr, "serving traffic");
        }
        // The admin server ends by itself once the report is written; it is not awaited,
        // so a probe connection in progress cannot hold up the exit.
        Ok(self.traffic.connect_info(ConnectInfo).await)
    }
}

impl IntoFuture for Serve {
    type Output = Result<Report, ServeError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
