//! The admin listener: a small HTTP/1 server for the probes, up until the process exits,
//! hardened so that a slow or hostile client cannot stall them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use lameduck::Lifecycle;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::BoxError;

/// How long a client may take to send a request's headers (from connecting, or from the
/// end of its previous request on a kept-alive connection): 5 s. Probes send theirs at
/// once; a client that dribbles them is cut off and frees its connection slot.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an answer may wait for its client to take more of it: 5 s. Probes read at
/// once; a client that stops reading (or pipelines requests and never reads the answers)
/// would otherwise hold its connection, mid-response, for good: such a connection is never
/// the one given up at the connection limit, so enough of them would lock the probes out.
/// The time counts from when the write began waiting, so a slow reader that keeps reading
/// is not cut off.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many admin connections may be open at once: 512. Probes use one connection each
/// (kubelet opens a new one per probe), and a new connection always wins over an old one
/// that is doing nothing: at the limit, the connection that has waited longest for its
/// next request head (idle keep-alive, or a slowloris dribbling its headers, however
/// recently its last byte came) is closed to make room. One in the middle of a response
/// is never chosen (its client stalling it is what [`DEFAULT_WRITE_TIMEOUT`] ends); only
/// when every connection is, is the new one closed at once, rather than left waiting past
/// the probe's timeout.
pub const DEFAULT_MAX_ADMIN_CONNECTIONS: usize = 512;

/// The largest request head (request line and headers) accepted: 16 KiB; a larger one
/// gets `431 Request Header Fields Too Large`. Probes send a few hundred bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// hyper's HTTP/1 read buffer cannot be smaller than this.
const MIN_HEADER_BYTES: usize = 8 * 1024;

/// How long in-progress responses get once the lifecycle has finished.
const DEFAULT_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why the admin endpoints could not start: a bad `LAMEDUCK_ADMIN_ADDR` or
/// `LAMEDUCK_SHUTDOWN_TOKEN`, or a listener that could not be bound. The message names the
/// variable and, except for the token, quotes the value.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// `LAMEDUCK_ADMIN_ADDR` did not parse as `IP:PORT`.
    #[error("{var}={value:?} is not a socket address (expected e.g. 0.0.0.0:9090): {source}")]
    InvalidAddr {
        /// The variable's name.
        var: &'static str,
        /// The value as found.
        value: String,
        /// Why it did not parse.
        source: std::net::AddrParseError,
    },
    /// `LAMEDUCK_SHUTDOWN_TOKEN` cannot travel in an HTTP header. Its value is a secret
    /// and is not part of the error.
    #[error(
        "{var}: the shutdown token must be non-empty visible ASCII (it travels in an HTTP header)"
    )]
    InvalidToken {
        /// The variable's name.
        var: &'static str,
    },
    /// A variable was set to the empty string (or only white space).
    #[error("{var} is set but empty; unset it to use the default")]
    Empty {
        /// The variable's name.
        var: &'static str,
    },
    /// A variable's value is not valid UTF-8.
    #[error("{var}={value:?} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: &'static str,
        /// The value, lossily decoded (withheld for the token).
        value: String,
    },
    /// The admin address could not be bound (in use, not local, no permission).
    #[error(
        "cannot listen for the admin endpoints on {addr} (set LAMEDUCK_ADMIN_ADDR to change it): {source}"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The listener given to [`Endpoints::listener`](super::Endpoints::listener) has no local
    /// address.
    #[error("the admin listener has no local address: {0}")]
    LocalAddr(#[source] io::Error),
}

/// The message, as for `Display`: `main` returning `Result<_, AdminError>` prints
/// `Error: ` and this when `?` fails.
impl std::fmt::Debug for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The admin listener's limits; the defaults suit the kubelet and a load balancer or two.
///
/// ```
/// use std::time::Duration;
/// let limits = lameduck_http::admin::AdminLimits::default()
///     .header_read_timeout(Duration::from_secs(2))
///     .max_connections(128);
/// # let _ = limits;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AdminLimits {
    header_read_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    close_grace: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_ADMIN_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            close_grace: DEFAULT_CLOSE_GRACE,
        }
    }
}

impl AdminLimits {
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    ///
    /// # Panics
    ///
    /// If `timeout` is zero, which would close every connection (every probe) before its
    /// request could arrive.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "AdminLimits::header_read_timeout(Duration::ZERO) would close every connection \
             at once; the admin listener always has a limit"
        );
        self.header_read_timeout = timeout;
        self
    }

    /// See [`DEFAULT_WRITE_TIMEOUT`].
    ///
    /// # Panics
    ///
    /// If `timeout` is zero, which would close every connection whose answer does not fit
    /// the socket's buffer at once.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "AdminLimits::write_timeout(Duration::ZERO) would cut every answer that has to \
             wait for its client; the admin listener always has a limit"
        );
        self.write_timeout = timeout;
        self
    }

    /// See [`DEFAULT_MAX_ADMIN_CONNECTIONS`]; at least 1.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// See [`DEFAULT_MAX_HEADER_BYTES`]; at least 8 KiB (hyper's smallest buffer).
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max.max(MIN_HEADER_BYTES);
        self
    }

    /// How long responses still in progress get once the server ends (default 1 s).
    pub fn close_grace(mut self, grace: Duration) -> Self {
        self.close_grace = grace;
        self
    }
}

/// A running admin listener, started by [`Endpoints::spawn`](super::Endpoints::spawn).
/// Dropping the handle leaves the server running; it ends by itself once the lifecycle has
/// finished.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop now instead of when the lifecycle finishes: stop accepting, let responses in
    /// progress finish within the close grace, then close every connection.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Resolves once the server has ended and its connections are closed.
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the admin server task failed");
        }
    }
}

/// Serve on `listener` as the admin listener of `lifecycle`, on a task of its own (what
/// [`Endpoints::spawn`](super::Endpoints::spawn) documents): each connection with the
/// service `make_service` makes for its client's address.
pub(super) fn spawn_server<M, S, B>(
    listener: TcpListener,
    make_service: M,
    lifecycle: &Lifecycle,
    limits: AdminLimits,
) -> Result<AdminServer, AdminError>
where
    M: Fn(SocketAddr) -> S + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let local_addr = listener.local_addr().map_err(AdminError::LocalAddr)?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        make_service,
        lifecycle.clone(),
        limits,
        stop.clone(),
    ));
    Ok(AdminServer {
        local_addr,
        stop,
        task,
    })
}

async fn serve<M, S, B>(
    listener: TcpListener,
    make_service: M,
    lifecycle: Lifecycle,
    limits: AdminLimits,
    stop: CancellationToken,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    let http = Arc::new(http);
    let mut open = OpenConnections::new(limits.max_connections);
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let grace = limits.close_grace;

    // `run()` does not start the lifecycle here: Stopped is only reached once it runs.
    let finished = async {
        lifecycle.stopped().await;
        lifecycle.run().await;
    };
    tokio::pin!(finished);
    let mut saturated = false;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = &mut finished => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin listener: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(slot) = open.admit() else {
            if !saturated {
                tracing::warn!(
                    limit = limits.max_connections,
                    "admin listener at its connection limit with every connection answering \
                     a request; closing new connections"
                );
                saturated = true;
            }
            drop(stream);
            continue;
        };
        saturated = false;
        // Small answers: send them at once.
        let _ = stream.set_nodelay(true);
        let service = Tracked {
            inner: make_service(peer),
            slot: Arc::clone(&slot),
        };
        let http = Arc::clone(&http);
        let closing = closing.clone();
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        connections.spawn(async move {
            let conn = http.serve_connection(TokioIo::new(Box::pin(stream)), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "admin connection ended with an error");
                    }
                }
                () = slot.evict.notified() => {
                    tracing::debug!(%peer, "admin connection closed to make room for a new one");
                    // Chosen while between requests; one that began since still gets its
                    // answer, within the close grace.
                    if slot.busy() {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(grace, conn).await;
                    }
                }
                _ = closing.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(grace, conn).await;
                }
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    // Each connection is cut at its own grace; this bound is only a safety net.
    let _ = tokio::time::timeout(grace * 2, connections.wait()).await;
    tracing::debug!("admin listener closed");
}

/// The open admin connections, as the accept loop sees them: owned by that loop alone, so
/// nothing here is locked. Each connection's task shares its [`Slot`]; a slot whose task
/// has ended is the loop's last reference. Below the limit, admitting a connection is a
/// push; at the limit (only then) it is one pass over the slots, without a syscall.
struct OpenConnections {
    slots: Vec<Arc<Slot>>,
    max: usize,
    epoch: Instant,
}

impl OpenConnections {
    fn new(max: usize) -> Self {
        Self {
            // Grown as needed: a large limit costs nothing until used.
            slots: Vec::new(),
            max: max.max(1),
            epoch: Instant::now(),
        }
    }

    /// A slot for a new connection, making room if the limit is reached: forget the slots
    /// of connections that have ended, then evict the connection that has waited longest
    /// for a request head and is not answering one. `None` if every connection is
    /// answering a request.
    fn admit(&mut self) -> Option<Arc<Slot>> {
        if self.slots.len() >= self.max {
            self.slots.retain(|slot| Arc::strong_count(slot) > 1);
        }
        if self.slots.len() >= self.max {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| !slot.busy())
                .min_by_key(|(_, slot)| slot.waiting_since())
                .map(|(index, _)| index)?;
            // Its task closes it at once; the slot is the new connection's from now.
            self.slots.swap_remove(victim).evict.notify_one();
        }
        let slot = Arc::new(Slot {
            epoch: self.epoch,
            in_flight: AtomicU32::new(0),
            since: AtomicU64::new(micros_since(self.epoch)),
            evict: Notify::new(),
        });
        self.slots.push(Arc::clone(&slot));
        Some(slot)
    }
}

/// What the accept loop knows of one connection. Written by the connection's own task
/// only (uncontended), read by the accept loop only at the limit.
#[derive(Debug)]
struct Slot {
    epoch: Instant,
    /// Requests being answered (0 or 1 on HTTP/1): a connection with one is not evicted.
    in_flight: AtomicU32,
    /// Microseconds from `epoch` to when the connection last began waiting for a request
    /// head: when it was accepted, or when its last response was done. Bytes of a head
    /// do not move it, so dribbling headers buys a slowloris nothing.
    since: AtomicU64,
    /// Told when the connection is evicted.
    evict: Notify,
}

impl Slot {
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn waiting_since(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Marks its connection as answering a request from the call until the response body is
/// done (dropped), then restarts the connection's wait.
struct InFlight(Arc<Slot>);

impl InFlight {
    fn new(slot: Arc<Slot>) -> Self {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let slot = &self.0;
        slot.since
            .store(micros_since(slot.epoch), Ordering::Relaxed);
        slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's service, keeping its connection's [`Slot`] up to date.
struct Tracked<S> {
    inner: S,
    slot: Arc<Slot>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for Tracked<S>
where
    S: hyper::service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, request: Request<ReqBody>) -> Self::Future {
        let in_flight = InFlight::new(Arc::clone(&self.slot));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that holds its connection's [`InFlight`] until hyper is done with it.
struct TrackedBody<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
