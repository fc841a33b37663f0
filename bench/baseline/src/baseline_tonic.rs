//! `baseline-tonic`: the gRPC comparison point for lameduck's benchmarks.
//!
//! The same `helloworld.Greeter` service as `examples/greeter`, served the way tonic's
//! documentation shows graceful shutdown:
//! `tonic::transport::Server::builder().add_service(..).serve_with_shutdown(addr, signal)`,
//! where the signal is Ctrl+C or SIGTERM, with tonic-health's `health_reporter()` set
//! SERVING for the greeter, as tonic's `health` example does.
//!
//! It is deliberately naive: no lame-duck delay, and the health status never turns
//! NOT_SERVING. On SIGTERM tonic stops accepting at once, sends GOAWAY on every connection,
//! lets RPCs in flight finish, and the process exits. Do not improve it: the benchmarks
//! measure what that costs.
//!
//! Listens on `0.0.0.0:$PORT` (default 50051) and prints `listening on ADDR` once bound.

use std::net::SocketAddr;

use greeter::MyGreeter;
use greeter::proto::GreeterServer;
use tokio::signal;
use tonic::transport::Server;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().expect("PORT must be a port number"),
        Err(_) => 50051,
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], port));

    // As in tonic's `examples/src/health/server.rs`.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<GreeterServer<MyGreeter>>()
        .await;

    println!("listening on {addr}");
    Server::builder()
        .add_service(health_service)
        .add_service(GreeterServer::new(MyGreeter::default()))
        .serve_with_shutdown(addr, shutdown_signal())
        .await?;
    Ok(())
}

// Ctrl+C or SIGTERM, as baseline-axum (and axum's `examples/graceful-shutdown`) waits.
async fn shutdown_signal() {
    let ctrl_c = async {
        signal::ctrl_c()
            .await
            .expect("failed to install Ctrl+C handler");
    };
    let terminate = async {
        signal::unix::signal(signal::unix::SignalKind::terminate())
            .expect("failed to install signal handler")
            .recv()
            .await;
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
