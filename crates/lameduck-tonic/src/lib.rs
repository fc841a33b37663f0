//! # lameduck-tonic
//!
//! gRPC for [`lameduck`]: tonic services served with lameduck's draining, and the
//! standard `grpc.health.v1.Health` service answered from the lifecycle, so Kubernetes'
//! native gRPC probes (`readinessProbe.grpc`) and health-checking clients see the lame
//! duck.
//!
//! - [`serve`] serves tonic services on lameduck-http's server: HTTP/2 GOAWAY from
//!   Draining on while every RPC that arrives is still served, RPCs in flight (unary and
//!   streaming) finished up to the drain timeout at Stopping, then cut and counted in the
//!   report; the health service on the same port; the admin HTTP endpoints
//!   (`/readyz`, `/shutdown`, ...) on `LAMEDUCK_ADMIN_ADDR`.
//! - [`HealthService`] answers `Check` and `Watch`: SERVING once Ready (startup hooks
//!   and readiness checks gate it as they gate `/readyz`), NOT_SERVING from the moment
//!   shutdown begins; `Watch` streams get the change and end at Stopping. The names
//!   [`LIVENESS_SERVICE`] and [`STARTUP_SERVICE`] answer as `/livez` and `/startupz`,
//!   for liveness and startup probes that must not fail while the service drains.
//!
//! ```no_run
//! # use std::convert::Infallible;
//! # #[derive(Clone)]
//! # struct GreeterServer;
//! # impl tonic::server::NamedService for GreeterServer { const NAME: &'static str = "helloworld.Greeter"; }
//! # impl tower_service::Service<http::Request<tonic::body::Body>> for GreeterServer {
//! #     type Response = http::Response<tonic::body::Body>;
//! #     type Error = Infallible;
//! #     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future { std::future::ready(Ok(tonic::Status::unimplemented("").into_http())) }
//! # }
//! # impl GreeterServer { fn new(_: MyGreeter) -> Self { Self } }
//! # #[derive(Default)] struct MyGreeter;
//! #[tokio::main]
//! async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
//!     let lifecycle = lameduck::Lifecycle::from_env()?;
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
//!     Ok(lameduck_tonic::serve(listener, &lifecycle)
//!         .add_service(GreeterServer::new(MyGreeter::default())) // from tonic's codegen
//!         .await?)
//! }
//! ```
//!
//! The probes in a Deployment (`examples/k8s/greeter.yaml` has the whole manifest):
//!
//! ```yaml
//! readinessProbe:
//!   grpc: { port: 50051 }            # service "": readiness
//! livenessProbe:
//!   grpc: { port: 50051, service: liveness }
//! startupProbe:
//!   grpc: { port: 50051, service: startup }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod health;
mod serve;

pub use health::{HealthService, LIVENESS_SERVICE, READINESS_SERVICE, STARTUP_SERVICE};
pub use serve::{Serve, serve};
