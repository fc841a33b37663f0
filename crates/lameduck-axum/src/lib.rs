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
//! [`Admin::expose_details`] says otherwise (the built-in `lifecycle` check's state
//! name, e.g. `draining`, is always shown).
//!
//! A service's `main` ends with [`serve`], which serves the application, starts the
//! admin endpoints on their own listener and drives the lifecycle to its report:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! #[tokio::main]
//! async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
//!     let lifecycle = lameduck::Lifecycle::from_env()?;
//!     lifecycle.health().readiness("db", || async {
//!         // db.ping().await
//!         Ok::<(), std::io::Error>(())
//!     });
//!     let app = Router::new().route("/", get(|| async { "hello" }));
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     // Probes on LAMEDUCK_ADMIN_ADDR (default 0.0.0.0:9090), up until the process exits.
//!     Ok(lameduck_axum::serve(listener, app, &lifecycle).await?)
//! }
//! ```
//!
//! [`Admin`] customises the endpoints: routes of your own (`/metrics`) on the admin
//! listener with [`Admin::route`], served under its limits until the process exits (a
//! route that would shadow a probe panics at construction). A service that keeps its
//! own server starts them with [`Admin::spawn`]; one that wants them on a router of its
//! own merges [`Admin::router`] into it (and thinks twice before exposing `/shutdown` on
//! a traffic port: [`Admin::shutdown_endpoint`]).
//!
//! Handlers on the admin listener can extract the client's address,
//! `axum::extract::ConnectInfo<SocketAddr>`; those on the traffic listener can once
//! [`Serve::connect_info`] asks for it, as `axum::serve` needs
//! `into_make_service_with_connect_info`.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod admin;
mod serve;

pub use admin::{
    Admin, AdminError, AdminLimits, AdminServer, DEFAULT_ADMIN_ADDR, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_WRITE_TIMEOUT, ENV_ADMIN_ADDR,
    ENV_SHUTDOWN_TOKEN, SHUTDOWN_HOLD, TOKEN_HEADER,
};
pub use serve::{Serve, serve};

/// The README's examples, compiled as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
