//! `greeter`: gRPC's helloworld.Greeter with lameduck. gRPC and the `grpc.health.v1`
//! health service on :50051 ($PORT), the admin HTTP endpoints (probes, /shutdown) on
//! :9090 ($LAMEDUCK_ADMIN_ADDR), a graceful shutdown on SIGTERM (health NOT_SERVING at
//! once, GOAWAY, RPCs in flight finished), and the report on exit.
//!
//! `GREETER_STREAM_REPLIES` (default 5) and `GREETER_STREAM_INTERVAL` (default `1s`)
//! shape the replies of `SayHelloStreamReply`.

use anyhow::Context;
use greeter::proto::GreeterServer;
use greeter::{MyGreeter, StreamSettings};

#[tokio::main]
async fn main() -> anyhow::Result<lameduck::Report> {
    example_logging::init()?;
    let lifecycle = lameduck::Lifecycle::from_env()?;

    let port = env_or("PORT", "50051")?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("PORT={port:?} is not a port"))?;
    let stream = stream_settings()?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on port {port}"))?;

    Ok(lameduck_tonic::serve(listener, &lifecycle)
        .add_service(GreeterServer::new(MyGreeter::new(stream)))
        .await?)
}

fn env_or(name: &str, default: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!("{name} is not valid UTF-8"),
    }
}

fn stream_settings() -> anyhow::Result<StreamSettings> {
    let defaults = StreamSettings::default();
    let replies = env_or("GREETER_STREAM_REPLIES", &defaults.replies.to_string())?;
    let replies = replies.parse().with_context(|| {
        format!("GREETER_STREAM_REPLIES={replies:?} is not a whole number of replies")
    })?;
    let default_interval = humantime::format_duration(defaults.interval).to_string();
    let interval = env_or("GREETER_STREAM_INTERVAL", &default_interval)?;
    let interval = humantime::parse_duration(&interval).with_context(|| {
        format!("GREETER_STREAM_INTERVAL={interval:?} is not a duration such as 500ms or 1s")
    })?;
    Ok(StreamSettings { replies, interval })
}
