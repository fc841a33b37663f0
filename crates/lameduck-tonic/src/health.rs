//! `grpc.health.v1.Health` answered from the lifecycle: the gRPC face of `/readyz`,
//! `/livez` and `/startupz`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use lameduck::{CheckKind, Lifecycle, State};
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The health service name whose status is the lifecycle's liveness (`/livez`): SERVING
/// while every liveness check passes, through Draining too, so a liveness probe never
/// restarts a container in its lame duck. At Stopping the gRPC listener closes and the
/// probe meets a refused connection; the kubelet no longer probes the liveness of a pod
/// being deleted, but a platform that does should probe `/livez` on the admin port,
/// which stays up until the process exits.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The health service name whose status is the lifecycle's readiness (`/readyz`), the
/// same as the whole server's (`""`).
pub const READINESS_SERVICE: &str = "readiness";

/// The health service name whose status is the lifecycle's startup (`/startupz`):
/// SERVING once the service has started, and from then on.
pub const STARTUP_SERVICE: &str = "startup";

/// How often a `Watch` stream re-runs the checks between state changes, so a readiness
/// or liveness check that begins to fail (or recovers) reaches the watchers. The checks
/// are single-flight and cached, so many watchers cost one run per check.
const WATCH_RECHECK: Duration = Duration::from_secs(1);

/// The `grpc.health.v1.Health` service, answered from a [`Lifecycle`] rather than from
/// statuses set by hand (tonic-health's `HealthReporter`), so it can never disagree with
/// the admin endpoints or lag behind a signal.
///
/// | service asked for | answers as | SERVING when |
/// |---|---|---|
/// | `""` (the whole server), `"readiness"` and every registered service | `/readyz` | the lifecycle is Ready and every readiness check passes; NOT_SERVING from the moment shutdown begins |
/// | `"liveness"` | `/livez` | every liveness check passes (also while draining) |
/// | `"startup"` | `/startupz` | the lifecycle has left Starting (startup hooks and checks done) |
/// | anything else | | `Check`: status `NOT_FOUND`; `Watch`: SERVICE_UNKNOWN, and the stream stays open |
///
/// `Watch` streams send the status at once, then every change, and end cleanly (status
/// OK) when the lifecycle reaches Stopping, so they never hold a drain open.
///
/// [`serve`](crate::serve) adds this service and registers every service it serves;
/// use it directly only when assembling the routes yourself:
///
/// ```
/// use lameduck_tonic::HealthService;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
/// let health = HealthService::new(&lifecycle).register("helloworld.Greeter");
/// let routes = tonic::service::Routes::new(health.into_server());
/// # let _ = routes;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HealthService {
    lifecycle: Lifecycle,
    /// The names that answer as readiness, besides `""` and [`READINESS_SERVICE`].
    registered: Arc<HashSet<String>>,
}

impl HealthService {
    /// The health service of `lifecycle`, with no service registered yet: `""` and the
    /// three kind names answer.
    pub fn new(lifecycle: &Lifecycle) -> Self {
        Self {
            lifecycle: lifecycle.clone(),
            registered: Arc::default(),
        }
    }

    /// Answer for the service `name` (its fully qualified name, `package.Service`, as a
    /// client asks for it) as for the whole server.
    pub fn register(mut self, name: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.registered).insert(name.into());
        self
    }

    /// Answer for the tonic service `S` (by its [`NamedService::NAME`]) as for the whole
    /// server.
    pub fn register_service<S: NamedService>(self) -> Self {
        self.register(S::NAME)
    }

    /// Whether `name` was registered.
    pub(crate) fn is_registered(&self, name: &str) -> bool {
        self.registered.contains(name)
    }

    /// The tonic server to add to the routes.
    pub fn into_server(self) -> HealthServer<Self> {
        HealthServer::new(self)
    }

    /// What `service` answers as; `None` for an unknown one.
    fn kind_of(&self, service: &str) -> Option<CheckKind> {
        match service {
            "" | READINESS_SERVICE => Some(CheckKind::Readiness),
            LIVENESS_SERVICE => Some(CheckKind::Liveness),
            STARTUP_SERVICE => Some(CheckKind::Startup),
            name if self.registered.contains(name) => Some(CheckKind::Readiness),
            _ => None,
        }
    }
}

async fn status_of(lifecycle: &Lifecycle, kind: CheckKind) -> ServingStatus {
    if lifecycle.health().check(kind).await.ok {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

type WatchItem = Result<HealthCheckResponse, Status>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.get_ref().service.as_str();
        let Some(kind) = self.kind_of(service) else {
            return Err(Status::not_found(format!(
                "unknown service {service:?}: no such service is registered with the health service"
            )));
        };
        Ok(Response::new(response(
            status_of(&self.lifecycle, kind).await,
        )))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = WatchItem> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let kind = self.kind_of(&request.get_ref().service);
        Ok(Response::new(Box::pin(watch_stream(
            self.lifecycle.clone(),
            kind,
        ))))
    }
}

/// Where a `Watch` stream is.
struct Watcher {
    lifecycle: Lifecycle,
    states: watch::Receiver<State>,
    /// `None`: an unknown service, SERVICE_UNKNOWN for as long as the stream lasts.
    kind: Option<CheckKind>,
    last_sent: Option<ServingStatus>,
    ended: bool,
}

/// The status now, then each change, until Stopping.
fn watch_stream(
    lifecycle: Lifecycle,
    kind: Option<CheckKind>,
) -> impl Stream<Item = WatchItem> + Send + 'static {
    let watcher = Watcher {
        states: lifecycle.subscribe(),
        lifecycle,
        kind,
        last_sent: None,
        ended: false,
    };
    futures_util::stream::unfold(watcher, |mut w| async move {
        loop {
            if w.ended {
                return None;
            }
            let state = *w.states.borrow_and_update();
            // The stream ends at Stopping: the server is going away and the connection
            // must be free to close. No check is run then (a slow one would hold the
            // stream, and the drain, for up to its timeout): readiness is NOT_SERVING
            // whatever the checks say, and any other kind ends on its last status.
            w.ended = state >= State::Stopping;
            let status = match (w.kind, w.ended) {
                (None, _) => ServingStatus::ServiceUnknown,
                (Some(CheckKind::Readiness), true) => ServingStatus::NotServing,
                (Some(_), true) => return None,
                (Some(kind), false) => status_of(&w.lifecycle, kind).await,
            };
            if w.last_sent != Some(status) {
                w.last_sent = Some(status);
                return Some((Ok(response(status)), w));
            }
            if w.ended {
                return None;
            }
            tokio::select! {
                changed = w.states.changed() => {
                    if changed.is_err() {
                        // The lifecycle is gone: nothing more will change.
                        w.ended = true;
                    }
                }
                () = tokio::time::sleep(WATCH_RECHECK), if w.kind.is_some() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use lameduck::Reason;

    fn lifecycle() -> Lifecycle {
        Lifecycle::builder()
            .shutdown_delay(Duration::from_secs(5))
            .exit_process(false)
            .no_signals()
            .no_termination_log()
            .build()
            .expect("a valid configuration")
    }

    async fn check(health: &HealthService, service: &str) -> Result<i32, tonic::Code> {
        health
            .check(Request::new(HealthCheckRequest {
                service: service.to_owned(),
            }))
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code())
    }

    const SERVING: Result<i32, tonic::Code> = Ok(ServingStatus::Serving as i32);
    const NOT_SERVING: Result<i32, tonic::Code> = Ok(ServingStatus::NotServing as i32);

    #[tokio::test(start_paused = true)]
    async fn statuses_follow_the_lifecycle() {
        let lifecycle = lifecycle();
        let health = HealthService::new(&lifecycle).register("helloworld.Greeter");

        // Starting: not ready, not started, alive.
        for service in ["", READINESS_SERVICE, "helloworld.Greeter", STARTUP_SERVICE] {
            assert_eq!(check(&health, service).await, NOT_SERVING, "{service:?}");
        }
        assert_eq!(check(&health, LIVENESS_SERVICE).await, SERVING);
        assert_eq!(
            check(&health, "other.Service").await,
            Err(tonic::Code::NotFound)
        );

        let driver = lifecycle.clone();
        let run = tokio::spawn(async move { driver.run().await });
        lifecycle.ready().await;
        for service in ["", READINESS_SERVICE, "helloworld.Greeter", STARTUP_SERVICE] {
            assert_eq!(check(&health, service).await, SERVING, "{service:?}");
        }

        lifecycle.trigger(Reason::PreStop);
        let mut states = lifecycle.subscribe();
        let _ = states.wait_for(|s| s.is_shutting_down()).await;
        for service in ["", READINESS_SERVICE, "helloworld.Greeter"] {
            assert_eq!(check(&health, service).await, NOT_SERVING, "{service:?}");
        }
        assert_eq!(check(&health, LIVENESS_SERVICE).await, SERVING);
        assert_eq!(check(&health, STARTUP_SERVICE).await, SERVING);
        assert!(run.await.expect("the lifecycle runs").clean);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_readiness_check_makes_every_readiness_name_not_serving() {
        let lifecycle = lifecycle();
        lifecycle
            .health()
            .readiness("db", || async { Err::<(), _>("down") });
        let health =
            HealthService::new(&lifecycle).register_service::<HealthServer<HealthService>>();
        let driver = lifecycle.clone();
        let run = tokio::spawn(async move { driver.run().await });
        lifecycle.ready().await;
        assert_eq!(check(&health, "").await, NOT_SERVING);
        assert_eq!(check(&health, "grpc.health.v1.Health").await, NOT_SERVING);
        assert_eq!(check(&health, LIVENESS_SERVICE).await, SERVING);
        lifecycle.shutdown();
        assert!(run.await.expect("the lifecycle runs").clean);
    }

    #[tokio::test(start_paused = true)]
    async fn watch_sends_each_change_and_ends_at_stopping() {
        let lifecycle = lifecycle();
        let health = HealthService::new(&lifecycle);
        let mut stream = health
            .watch(Request::new(HealthCheckRequest::default()))
            .await
            .expect("a stream")
            .into_inner();
        let status = |item: Option<WatchItem>| item.expect("an item").expect("ok").status;

        assert_eq!(
            status(stream.next().await),
            ServingStatus::NotServing as i32
        );
        let driver = lifecycle.clone();
        let run = tokio::spawn(async move { driver.run().await });
        assert_eq!(status(stream.next().await), ServingStatus::Serving as i32);
        lifecycle.shutdown();
        assert_eq!(
            status(stream.next().await),
            ServingStatus::NotServing as i32
        );
        // Ends at Stopping, after the 5 s delay: without sending the same status again.
        assert!(stream.next().await.is_none());
        assert!(lifecycle.state() >= State::Stopping);
        assert!(run.await.expect("the lifecycle runs").clean);
    }

    /// At Stopping no check is run: a slow one would hold the stream, and the
    /// connection, for up to its timeout.
    #[tokio::test(start_paused = true)]
    async fn watch_ends_at_stopping_without_running_a_slow_check() {
        let lifecycle = lifecycle();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        lifecycle.health().add(
            lameduck::Check::readiness("slow", move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600))
            })
            .timeout(Duration::from_secs(3600))
            .cache_for(Duration::ZERO),
        );
        let health = HealthService::new(&lifecycle);
        let mut stream = health
            .watch(Request::new(HealthCheckRequest::default()))
            .await
            .expect("a stream")
            .into_inner();
        let driver = lifecycle.clone();
        let run = tokio::spawn(async move { driver.run().await });
        lifecycle.shutdown();
        let mut states = lifecycle.subscribe();
        let _ = states.wait_for(|s| *s >= State::Stopping).await;
        let ran_before = runs.load(std::sync::atomic::Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item.expect("ok").status);
        }
        assert_eq!(last, Some(ServingStatus::NotServing as i32));
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "ended without the check"
        );
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), ran_before);
        drop(stream);
        assert!(run.await.expect("the lifecycle runs").clean);
    }

    #[tokio::test(start_paused = true)]
    async fn watch_of_an_unknown_service_says_so_and_stays_open_until_stopping() {
        let lifecycle = lifecycle();
        let health = HealthService::new(&lifecycle);
        let mut stream = health
            .watch(Request::new(HealthCheckRequest {
                service: "nope.Service".to_owned(),
            }))
            .await
            .expect("a stream, as the protocol asks")
            .into_inner();
        let first = stream.next().await.expect("an item").expect("ok");
        assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
        let driver = lifecycle.clone();
        let run = tokio::spawn(async move { driver.run().await });
        lifecycle.shutdown();
        assert!(stream.next().await.is_none());
        assert!(run.await.expect("the lifecycle runs").clean);
    }

    #[tokio::test(start_paused = true)]
    async fn watch_sees_a_check_that_begins_to_fail() {
        let lifecycle = lifecycle();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        lifecycle.health().add(
            lameduck::Check::liveness("loop", move || {
                let ok = flag.load(std::sync::atomic::Ordering::SeqCst);
                async move { if ok { Ok(()) } else { Err("stuck") } }
            })
            .cache_for(Duration::ZERO),
        );
        let health = HealthService::new(&lifecycle);
        let mut stream = health
            .watch(Request::new(HealthCheckRequest {
                service: LIVENESS_SERVICE.to_owned(),
            }))
            .await
            .expect("a stream")
            .into_inner();
        let status = |item: Option<WatchItem>| item.expect("an item").expect("ok").status;
        assert_eq!(status(stream.next().await), ServingStatus::Serving as i32);
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            status(stream.next().await),
            ServingStatus::NotServing as i32
        );
    }
}
