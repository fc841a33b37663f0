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

use crate::admin::{Admin, AdminError};

/// Serve `app` on `listener` with draining ([`lameduck_http::Server`]), the admin
/// endpoints ([`Admin`]) on `LAMEDUCK_ADMIN_ADDR` (default `0.0.0.0:9090`), and drive
/// `lifecycle` to the end. `.await` it for the [`Report`], which `main` can return as it
/// is (the process then exits with its exit code). It fails only when the admin endpoints
/// cannot start (a bad `LAMEDUCK_ADMIN_ADDR` or `LAMEDUCK_SHUTDOWN_TOKEN`, an address that
/// cannot be bound), before anything is served.
///
/// The admin listener is up before the lifecycle starts, so the startup probe answers
/// from the first moment, and stays up until the report is written. Options:
/// [`admin`](Serve::admin) for customised admin endpoints (routes of your own, such as
/// `/metrics`, next to the probes: [`Admin::route`]; a listener of your own:
/// [`Admin::listener`]), [`server`](Serve::server) for the traffic server's settings.
///
/// Handlers on the admin listener can always extract the client's address,
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo); on the traffic listener, ask
/// for it with [`connect_info`](Serve::connect_info), as `axum::serve` needs
/// `app.into_make_service_with_connect_info::<SocketAddr>()`: it costs every request an
/// insertion into its extensions, which a service that never reads the address should
/// not pay.
///
/// ```no_run
/// use axum::{Router, routing::get};
///
/// #[tokio::main]
/// async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
///     let lifecycle = lameduck::Lifecycle::from_env()?;
///     let app = Router::new().route("/", get(|| async { "hello" }));
///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
///     Ok(lameduck_axum::serve(listener, app, &lifecycle).await?)
/// }
/// ```
///
/// With the client's address ([`connect_info`](Serve::connect_info)), and `/metrics` on
/// the admin port:
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use lameduck_axum::Admin;
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
/// async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
///     let lifecycle = lameduck::Lifecycle::from_env()?;
///     let app = Router::new().route("/", get(hello));
///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
///     let admin = Admin::from_env(&lifecycle)?.route("/metrics", get(metrics));
///     Ok(lameduck_axum::serve(listener, app, &lifecycle)
///         .connect_info()
///         .admin(admin)
///         .await?)
/// }
/// ```
pub fn serve(listener: TcpListener, app: Router, lifecycle: &Lifecycle) -> Serve {
    Serve {
        // Routes made ready once, as `axum::serve` does for each connection: a `Router<()>`
        // called as it is builds each handler's route again, on the heap, every request.
        traffic: lameduck_http::serve(listener, app.with_state(()), lifecycle),
        admin: None,
        connect_info: false,
        lifecycle: lifecycle.clone(),
    }
}

/// A service ready to run; see [`serve`].
#[must_use = "nothing is served until the `Serve` is awaited"]
pub struct Serve {
    traffic: Server<TcpListener, Router>,
    /// `None`: [`Admin::from_env`], when the service starts.
    admin: Option<Admin>,
    /// Whether the traffic router's requests carry `ConnectInfo<SocketAddr>`.
    connect_info: bool,
    lifecycle: Lifecycle,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

impl Serve {
    /// Use these admin endpoints instead of `Admin::from_env(&lifecycle)`: with routes of
    /// your own ([`Admin::route`], e.g. `/metrics`), which the admin listener serves with
    /// the probes and the same hardening, through Draining and Stopping; with a listener of
    /// your own ([`Admin::listener`]); or with [`Admin::expose_details`].
    pub fn admin(mut self, admin: Admin) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Give the traffic router's handlers the client's address: they can extract
    /// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), as under
    /// `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`,
    /// at the same cost (the address cloned into each request's extensions: about 6 % of
    /// the instructions of a trivial request, which is why it is not the default).
    /// Without it, such a handler answers `500` with axum's "Missing request extension"
    /// message. The admin listener's handlers always have it.
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use axum::{Router, extract::ConnectInfo, routing::get};
    ///
    /// async fn whoami(ConnectInfo(client): ConnectInfo<SocketAddr>) -> String {
    ///     client.to_string()
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
    ///     let lifecycle = lameduck::Lifecycle::from_env()?;
    ///     let app = Router::new().route("/whoami", get(whoami));
    ///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    ///     Ok(lameduck_axum::serve(listener, app, &lifecycle).connect_info().await?)
    /// }
    /// ```
    pub fn connect_info(mut self) -> Self {
        self.connect_info = true;
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

    async fn run(self) -> Result<Report, AdminError> {
        let admin = match self.admin {
            Some(admin) => admin,
            None => Admin::from_env(&self.lifecycle)?,
        };
        let admin = admin.spawn().await?;
        tracing::info!(admin = %admin.local_addr(), "admin endpoints listening");
        if let Ok(addr) = self.traffic.local_addr() {
            tracing::info!(%addr, "serving traffic");
        }
        // The admin server ends by itself once the report is written; it is not awaited,
        // so a probe connection in progress cannot hold up the exit.
        Ok(if self.connect_info {
            self.traffic.connect_info(ConnectInfo).await
        } else {
            self.traffic.await
        })
    }
}

impl IntoFuture for Serve {
    type Output = Result<Report, AdminError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
