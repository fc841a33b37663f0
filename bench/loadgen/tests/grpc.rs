//! `run_grpc` against tonic servers started here: every call answered, a closed port, a
//! server that answers every call with an error status, and a server that shuts down
//! (tonic's `serve_with_shutdown`) in the middle of the run.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use greeter::MyGreeter;
use greeter::proto::{Greeter, GreeterServer, HelloReply, HelloRequest};
use lameduck_loadgen::{GrpcLoadConfig, GrpcReport, run_grpc};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Serves `svc` on 127.0.0.1:0 until `shutdown` completes; returns its address.
fn serve<S>(svc: GreeterServer<S>, shutdown: tokio::sync::oneshot::Receiver<()>) -> SocketAddr
where
    S: Greeter,
{
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = shutdown.await;
            }),
    );
    addr
}

async fn load(addr: SocketAddr, for_: Duration) -> GrpcReport {
    let mut config = GrpcLoadConfig::new(format!("http://{addr}"));
    config.clients = 4;
    config.rate = 400;
    config.duration = Some(for_);
    config.request_timeout = Duration::from_secs(2);
    run_grpc(config, std::future::pending()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answered() {
    let (_stop, shutdown) = tokio::sync::oneshot::channel();
    let addr = serve(GreeterServer::new(MyGreeter::default()), shutdown);
    let report = load(addr, Duration::from_millis(500)).await;
    let c = &report.load.counts;
    assert_eq!(report.failures(), 0, "{:?}", report.load.errors);
    assert!(c.ok > 100, "{c:?}");
    assert!(report.load.latency_p50_us > 0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], c.ok);
    assert_eq!(json["refused_connect"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_refused() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let report = load(addr, Duration::from_millis(300)).await;
    let c = &report.load.counts;
    assert_eq!(c.ok, 0);
    assert!(c.refused > 0, "{c:?}");
    assert_eq!(c.refused, c.total(), "{c:?} {:?}", report.load.errors);
    assert_eq!(report.detail.refused_connect, c.refused);
}

struct Failing;

#[tonic::async_trait]
impl Greeter for Failing {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        Err(Status::unavailable("not today"))
    }

    type SayHelloStreamReplyStream =
        Pin<Box<dyn futures_core::Stream<Item = Result<HelloReply, Status>> + Send>>;

    async fn say_hello_stream_reply(
        &self,
        _: Request<HelloRequest>,
    ) -> Result<Response<Self::SayHelloStreamReplyStream>, Status> {
        Err(Status::unimplemented("no"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_status_is_counted_by_code() {
    let (_stop, shutdown) = tokio::sync::oneshot::channel();
    let addr = serve(GreeterServer::new(Failing), shutdown);
    let report = load(addr, Duration::from_millis(300)).await;
    let c = &report.load.counts;
    assert!(c.status_5xx > 0, "{c:?}");
    assert_eq!(c.status_5xx, c.total(), "{c:?} {:?}", report.load.errors);
    assert_eq!(
        report.detail.status_codes.get("Unavailable"),
        Some(&c.status_5xx)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_run_refuses_what_follows() {
    let (stop, shutdown) = tokio::sync::oneshot::channel();
    let addr = serve(GreeterServer::new(MyGreeter::default()), shutdown);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = stop.send(());
    });
    let report = load(addr, Duration::from_millis(1000)).await;
    let c = &report.load.counts;
    assert!(c.ok > 50, "{c:?}");
    assert!(c.refused > 50, "{c:?} {:?}", report.load.errors);
    assert_eq!(c.timeout, 0, "{c:?}");
}
