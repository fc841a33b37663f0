//! [`TrackedIo`]: a connection's byte stream, as the server watches it.
//!
//! It counts the connection for the lifecycle for as long as the stream lives — which, for
//! a connection upgraded to WebSocket, is after hyper has let go of it — and it records
//! what the connection task needs to shut the connection down without losing a request:
//! which protocol the client speaks, whether a request has begun since the last response,
//! and whether the kernel holds unread bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use lameduck::ActivityGuard;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::listener::Listener;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4), by which hyper-util's auto
/// connection tells h2c from HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a client speaks, as far as the server has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Nothing, or only a prefix of the HTTP/2 preface, has been read.
    Unknown,
    Http1,
    Http2,
}

/// At most how many bytes one read past the runtime's readiness cache takes.
const QUEUED_READ_WINDOW: usize = 512;

/// Which protocols a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocols {
    Both,
    Http1Only,
    Http2Only,
}

impl Protocols {
    fn allows(self, protocol: Protocol) -> bool {
        !matches!(
            (self, protocol),
            (Self::Http1Only, Protocol::Http2) | (Self::Http2Only, Protocol::Http1)
        )
    }
}

const WRITES_NONE: u8 = 0;
const WRITES_PROGRESSED: u8 = 1;
const WRITES_PENDING: u8 = 2;

// What the reads and writes record of the client, in one byte so that each read or write
// updates it with a single store.
const READS_BEGUN: u8 = 1;
const READS_QUIET: u8 = 2;

/// What a connection's task and its stream share.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    protocol: AtomicU8,
    /// `READS_BEGUN`: bytes have been read since the last write, the client has begun a
    /// request that has not been answered. `READS_QUIET`: the last read found the kernel's
    /// buffer empty (asked directly, past the runtime's readiness cache), and nothing was
    /// read or written since.
    reads: AtomicU8,
    /// Stopping has begun: a read the runtime thinks would block asks the kernel.
    stopping: AtomicBool,
    /// The drain timeout cut this connection: reads and writes fail.
    cut: AtomicBool,
    /// Whoever waits on the stream, woken when it is cut.
    wakers: Mutex<[Option<Waker>; 2]>,
    /// Requests handed to the service, and requests whose response has ended (or was
    /// dropped): equal when no request is in progress. Counted by the in-flight layer.
    dispatched: AtomicU32,
    ended: AtomicU32,
    /// A request is waiting for the service to be ready (its `poll_ready` is pending): it
    /// has been read, so the connection is not waiting for its client.
    awaiting_service: AtomicBool,
    /// What the connection has written since the header-read timeout last looked: one of
    /// `WRITES_NONE`, `WRITES_PROGRESSED` (bytes went out) or `WRITES_PENDING` (a write
    /// waits for the client to read). A response still going out after its body ended is
    /// not a connection waiting for its client.
    writes: AtomicU8,
    /// Whether the stream (hence the connection) still exists.
    open: AtomicBool,
    closed: Notify,
    /// The lifecycle whose cut, the moment it fires, ends every read and write: nothing
    /// reaches a client after the cut, even before this connection's task hears of it.
    /// Not optional, not even in tests: every read and write looks at it, and an `Option`
    /// costs each of them a test and a branch more.
    lifecycle: lameduck::Lifecycle,
}

impl ConnectionState {
    #[cfg(test)]
    pub(crate) fn new() -> Arc<Self> {
        Self::of(&crate::test_support::lifecycle())
    }

    /// A connection of a server following `lifecycle`.
    pub(crate) fn of(lifecycle: &lameduck::Lifecycle) -> Arc<Self> {
        Arc::new(Self {
            protocol: AtomicU8::new(0),
            reads: AtomicU8::new(0),
            stopping: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            wakers: Mutex::new([None, None]),
            dispatched: AtomicU32::new(0),
            ended: AtomicU32::new(0),
            awaiting_service: AtomicBool::new(false),
            writes: AtomicU8::new(WRITES_NONE),
            open: AtomicBool::new(true),
            closed: Notify::new(),
            lifecycle: lifecycle.clone(),
        })
    }

    #[inline]
    pub(crate) fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Relaxed) {
            1 => Protocol::Http1,
            2 => Protocol::Http2,
            _ => Protocol::Unknown,
        }
    }

    pub(crate) fn set_protocol(&self, protocol: Protocol) {
        let value = match protocol {
            Protocol::Unknown => 0,
            Protocol::Http1 => 1,
            Protocol::Http2 => 2,
        };
        self.protocol.store(value, Ordering::Relaxed);
    }

    /// What the stream would record: a request begun, the kernel found empty.
    #[cfg(test)]
    pub(crate) fn simulate(&self, request_begun: bool, quiet: bool) {
        let begun = if request_begun { READS_BEGUN } else { 0 };
        let quiet = if quiet { READS_QUIET } else { 0 };
        self.reads.store(begun | quiet, Ordering::Relaxed);
    }

    pub(crate) fn request_begun(&self) -> bool {
        self.reads.load(Ordering::Relaxed) & READS_BEGUN != 0
    }

    pub(crate) fn quiet(&self) -> bool {
        self.reads.load(Ordering::Relaxed) & READS_QUIET != 0
    }

    /// From now on, a read that the runtime would leave pending asks the kernel instead.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// A request was handed to the service.
    #[inline]
    pub(crate) fn request_dispatched(&self) {
        self.dispatched.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's response ended (or was dropped unfinished).
    #[inline]
    pub(crate) fn request_ended(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests have been dispatched, and whether one is in progress (including
    /// one read but still waiting for the service to be ready).
    pub(crate) fn requests(&self) -> (u32, bool) {
        let ended = self.ended.load(Ordering::Relaxed);
        let dispatched = self.dispatched.load(Ordering::Relaxed);
        let awaiting_service = self.awaiting_service.load(Ordering::Relaxed);
        (dispatched, dispatched != ended || awaiting_service)
    }

    /// A request has been read and waits for the service to be ready, or no longer does.
    #[inline]
    pub(crate) fn set_awaiting_service(&self, awaiting: bool) {
        self.awaiting_service.store(awaiting, Ordering::Relaxed);
    }

    /// Whether bytes went out, or a write was waiting for the client, since the last call.
    /// No request in progress (every response's body has ended) and no write waiting for
    /// the socket: whatever hyper had to send has been handed to the kernel.
    pub(crate) fn nothing_to_write(&self) -> bool {
        !self.requests().1 && self.writes.load(Ordering::Relaxed) != WRITES_PENDING
    }

    pub(crate) fn take_write_activity(&self) -> bool {
        match self.writes.load(Ordering::Relaxed) {
            WRITES_NONE => false,
            WRITES_PROGRESSED => {
                self.writes.store(WRITES_NONE, Ordering::Relaxed);
                true
            }
            _ => true,
        }
    }

    /// What a write on the stream would record.
    #[cfg(test)]
    pub(crate) fn simulate_write(&self, pending: bool) {
        let value = if pending {
            WRITES_PENDING
        } else {
            WRITES_PROGRESSED
        };
        self.writes.store(value, Ordering::Relaxed);
    }

    /// Whether the stream still exists (after hyper is done with the connection: it was
    /// upgraded, and the application holds it).
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once the stream is dropped.
    pub(crate) async fn closed(&self) {
        self.closed.notified().await;
    }

    /// Make every further read and write fail, and wake whoever waits on one.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.lock_wakers());
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    #[inline]
    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst) || self.lifecycle.is_cut()
    }

    fn lock_wakers(&self) -> std::sync::MutexGuard<'_, [Option<Waker>; 2]> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remember who waits (slot 0 reads, 1 writes), so that [`cut`](Self::cut) can wake
    /// them; then look again, in case the cut came in between.
    fn wait(&self, slot: usize, waker: &Waker) -> bool {
        {
            let mut wakers = self.lock_wakers();
            match &mut wakers[slot] {
                Some(w) if w.will_wake(waker) => {}
                other => *other = Some(waker.clone()),
            }
        }
        self.is_cut()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut at the drain timeout",
    )
}

/// A connection's stream: the listener's, with the bookkeeping described above.
pub(crate) struct TrackedIo<L: Listener> {
    io: L::Io,
    state: Arc<ConnectionState>,
    /// How many bytes of the HTTP/2 preface have been matched; `None` once decided.
    sniffed: Option<usize>,
    protocols: Protocols,
    /// The wakers last handed to `state` (reads, writes): while the task stays the same,
    /// a pending read or write need not take the shared lock again.
    waiting: [Option<Waker>; 2],
    _counted: ActivityGuard,
}

impl<L: Listener> TrackedIo<L> {
    pub(crate) fn new(
        io: L::Io,
        state: Arc<ConnectionState>,
        protocols: Protocols,
        counted: ActivityGuard,
    ) -> Self {
        Self {
            io,
            state,
            sniffed: Some(0),
            protocols,
            waiting: [None, None],
            _counted: counted,
        }
    }

    /// Let [`ConnectionState::cut`] wake the task waiting in `slot` (0 reads, 1 writes);
    /// true if the cut has already come.
    fn wait(&mut self, slot: usize, waker: &Waker) -> bool {
        let known = &mut self.waiting[slot];
        if known.as_ref().is_some_and(|w| w.will_wake(waker)) {
            // The shared slot holds it already, so a cut from now on wakes it; one that
            // came before took and woke it, and every poll looks for the cut first. No
            // second look needed (about 10 instructions a request).
            return false;
        }
        *known = Some(waker.clone());
        self.state.wait(slot, waker)
    }

    /// Follow the first bytes as hyper-util's auto connection does: HTTP/2 if they are the
    /// preface, HTTP/1 from the first byte that is not.
    fn sniff(&mut self, new: &[u8]) -> io::Result<()> {
        let Some(matched) = self.sniffed else {
            return Ok(());
        };
        let expected = &H2_PREFACE[matched..];
        let n = new.len().min(expected.len());
        let protocol = if new[..n] != expected[..n] {
            Protocol::Http1
        } else if matched + n == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            self.sniffed = Some(matched + n);
            return Ok(());
        };
        self.sniffed = None;
        if !self.protocols.allows(protocol) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "protocol not enabled on this server",
            ));
        }
        self.state.set_protocol(protocol);
        Ok(())
    }

    /// Read what the kernel holds, past the runtime's readiness cache.
    fn read_queued(&mut self, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Into a window on the stack, then copied: a plain `read` needs initialised memory,
        // and at Stopping every idle connection comes through here once, almost always to
        // find nothing. Zeroing even part of hyper's buffer there would fault in a page
        // that it reserved and never touched, one per connection: with 10,000 idle
        // connections, 6 % of Stopping's CPU time went to those page faults.
        let mut window = [0u8; QUEUED_READ_WINDOW];
        let len = buf.remaining().min(QUEUED_READ_WINDOW);
        match L::read_queued(&self.io, &mut window[..len]) {
            Ok(n) => {
                buf.put_slice(&window[..n]);
                Poll::Ready(Ok(()))
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.state.reads.fetch_or(READS_QUIET, Ordering::Relaxed);
                Poll::Pending
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Poll::Pending,
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl<L: Listener> Drop for TrackedIo<L> {
    fn drop(&mut self) {
        self.state.open.store(false, Ordering::Release);
        self.state.closed.notify_one();
    }
}

impl<L: Listener> AsyncRead for TrackedIo<L> {
    // Run twice a request; inlined into hyper-util's `TokioIo`, it saves a call and its
    // register saves (about 35 instructions per request).
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let before = buf.filled().len();
        let mut polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if polled.is_pending() && this.state.stopping.load(Ordering::Relaxed) {
            polled = this.read_queued(buf);
        }
        match polled {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    // Begun, and no longer quiet.
                    this.state.reads.store(READS_BEGUN, Ordering::Relaxed);
                    if this.sniffed.is_some() {
                        this.sniff(&buf.filled()[before..])?;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.wait(0, cx.waker()) => Poll::Ready(Err(cut_error())),
            other => other,
        }
    }
}

impl<L: Listener> TrackedIo<L> {
    fn wrote(&mut self, polled: &Poll<io::Result<usize>>, cx: &Context<'_>) -> bool {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => {
                // Answered, and no longer quiet.
                self.state.reads.store(0, Ordering::Relaxed);
                self.state
                    .writes
                    .store(WRITES_PROGRESSED, Ordering::Relaxed);
                false
            }
            Poll::Pending => {
                self.state.writes.store(WRITES_PENDING, Ordering::Relaxed);
                self.wait(1, cx.waker())
            }
            _ => false,
        }
    }
}

impl<L: Listener> AsyncWrite for TrackedIo<L> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.state.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if this.wrote(&polled, cx) {
            return Poll::Ready(Err(cut_error()));
        }
        polled
    }

    // Run once a response; inlined into hyper's flush, it saves a call and its register
    // saves.
    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.state.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if this.wrote(&polled, cx) {
            return Poll::Ready(Err(cut_error()));
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lameduck::ActivityCounter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio_test::{assert_pending, task};

    /// A listener over in-memory streams (no kernel to ask).
    struct Memory;

    impl Listener for Memory {
        type Io = DuplexStream;
        type Addr = ();
        async fn accept(&mut self) -> io::Result<(DuplexStream, ())> {
            std::future::pending().await
        }
        fn local_addr(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn tracked(
        protocols: Protocols,
    ) -> (
        TrackedIo<Memory>,
        DuplexStream,
        Arc<ConnectionState>,
        ActivityCounter,
    ) {
        let (server, client) = duplex(1024);
        let state = ConnectionState::new();
        let counter = ActivityCounter::new();
        let io = TrackedIo::new(server, Arc::clone(&state), protocols, counter.enter());
        (io, client, state, counter)
    }

    #[tokio::test]
    async fn http1_is_recognised_by_its_first_byte() {
        let (mut io, mut client, state, _) = tracked(Protocols::Both);
        client.write_all(b"G").await.expect("write");
        let mut buf = [0u8; 24];
        assert_eq!(io.read(&mut buf).await.expect("read"), 1);
        assert_eq!(state.protocol(), Protocol::Http1);
    }

    #[tokio::test]
    async fn http2_is_recognised_by_its_whole_preface_even_in_pieces() {
        let (mut io, mut client, state, _) = tracked(Protocols::Both);
        let mut buf = [0u8; 24];
        for piece in H2_PREFACE.chunks(10) {
            assert_eq!(state.protocol(), Protocol::Unknown);
            client.write_all(piece).await.expect("write");
            assert_eq!(io.read(&mut buf).await.expect("read"), piece.len());
        }
        assert_eq!(state.protocol(), Protocol::Http2);
    }

    #[tokio::test]
    async fn a_protocol_not_enabled_is_refused() {
        let (mut io, mut client, state, _) = tracked(Protocols::Http2Only);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 24];
        let error = io.read(&mut buf).await.expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(state.protocol(), Protocol::Unknown);
    }

    #[tokio::test]
    async fn a_read_begins_a_request_and_a_write_answers_it() {
        let (mut io, mut client, state, _) = tracked(Protocols::Both);
        assert!(!state.request_begun());
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let _ = io.read(&mut buf).await.expect("read");
        assert!(state.request_begun());
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        assert!(!state.request_begun());
        assert!(!state.quiet(), "the kernel was never asked");
    }

    #[tokio::test]
    async fn a_cut_fails_reads_and_wakes_the_reader() {
        let (mut io, _client, state, _) = tracked(Protocols::Both);
        let mut buf = [0u8; 8];
        let mut read = task::spawn(io.read(&mut buf));
        assert_pending!(read.poll());
        state.cut();
        assert!(read.is_woken());
        let error = match read.poll() {
            Poll::Ready(result) => result.expect_err("cut"),
            Poll::Pending => panic!("still pending after the cut"),
        };
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        drop(read);
        assert!(io.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn the_stream_counts_the_connection_until_dropped() {
        let (io, _client, state, counter) = tracked(Protocols::Both);
        assert_eq!(counter.active(), 1);
        assert!(state.is_open());
        drop(io);
        assert_eq!(counter.active(), 0);
        assert!(!state.is_open());
        state.closed().await;
    }
}
