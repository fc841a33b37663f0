//! # lameduck-axum
//!
//! axum integration for [`lameduck`]: the admin endpoints the platform calls, as an
//! [`axum::Router`], and a hardened server for them on their own listener.
//!
//! | path | answers |
//! |---|---|
//! | `/livez`, `/healthz` | liveness: 200 unless a liveness check fails; stays 200 while draining |
//! | `/readyz`, `/ready` | readiness: 200 only when Ready and every readiness check passes |
//! | `/startupz` | startup: 200 once the lifecycle has left Starting and startup checks pass |
//! | `/readyz/NAME` (and `/livez/NAME`, `/healthz/NAME`, `/ready/NAME`, `/startupz/NAME`) | one check; 404 if unknown |
//! | `/shutdown` (GET, POST) | the preStop trigger: starts shutdown, answers when the lame-duck delay is over |
//!
//! Health endpoints take `?verbose` (one `[+]name ok` / `[-]name failed` line per check)
//! and `?exclude=NAME` (repeatable), answer JSON on `Accept: application/json`, `HEAD`
//! wherever `GET` works, 200 or 503, and `Cache-Control: no-store` always. Why a check
//! failed goes to the log; responses withhold it unless
//! [`AdminRouter::expose_details`] says otherwise (the built-in `lifecycle` check's state
//! name, e.g. `draining`, is always shown).
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let lifecycle = lameduck::Lifecycle::from_env()
//!         .unwrap_or_else(|e| lameduck::exit_on_config_error(e));
//!     lifecycle.health().readiness("db", || async {
//!         // db.ping().await
//!         Ok::<(), std::io::Error>(())
//!     });
//!
//!     // Probes on LAMEDUCK_ADMIN_ADDR (default 0.0.0.0:9090), up until the process exits.
//!     let admin = match lameduck_axum::AdminServer::bind(&lifecycle).await {
//!         Ok(admin) => admin,
//!         Err(error) => {
//!             eprintln!("{error}");
//!             return std::process::ExitCode::FAILURE;
//!         }
//!     };
//!     tracing::info!(addr = %admin.local_addr(), "admin endpoints listening");
//!
//!     // ... serve traffic ...
//!     lifecycle.run().await.exit_code()
//! }
//! ```
//!
//! To put the endpoints on a router of your own instead, merge
//! [`AdminRouter::build`]'s router into it (and think twice before exposing `/shutdown` on
//! a traffic port: [`AdminRouter::shutdown_endpoint`]). The other way round, routes of
//! your own (`/metrics`) go on the admin listener with [`AdminRouter::route`], served
//! under its limits until the process exits; a route that would shadow a probe panics at
//! construction.
//!
//! Handlers served by [`serve`] and by the admin listener can extract the client's
//! address, `axum::extract::ConnectInfo<SocketAddr>`, as under `axum::serve` with
//! `into_make_service_with_connect_info`.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod admin;
mod serve;

pub use admin::{
    AdminError, AdminLimits, AdminRouter, AdminServer, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, SHUTDOWN_HOLD, TOKEN_HEADER,
    admin_router, serve_admin, serve_admin_with,
};
pub use serve::{Serve, ServeError, serve};

/// The README's examples, compiled as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
