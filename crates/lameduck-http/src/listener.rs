//! [`Listener`]: what [`Server`](crate::Server) accepts connections from.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};

/// A source of connections: implemented for [`tokio::net::TcpListener`] and (on Unix)
/// [`tokio::net::UnixListener`]; implement it for anything else that yields byte streams
/// (a TLS acceptor around a TCP listener, say).
///
/// Beyond accepting, a listener answers two questions that make a drain lossless, each
/// with a default that is correct for any listener and precise for the built-in ones:
/// [`accept_backlog`](Self::accept_backlog) and [`read_queued`](Self::read_queued).
pub trait Listener: Send + 'static {
    /// A connection's byte stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A peer's address.
    type Addr: std::fmt::Debug + Send + 'static;

    /// Wait for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send;

    /// The address this listener is bound to.
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// Accept, without waiting, every connection the kernel has already established and
    /// queued (the listen backlog), then close the listener. Called once, when Stopping
    /// begins: those clients have connected and may have sent a request, and closing the
    /// listener over them would reset them.
    ///
    /// The default polls [`accept`](Self::accept) until it is not immediately ready, which
    /// can miss connections the runtime has not yet been told about; the built-in
    /// listeners ask the kernel directly.
    fn accept_backlog(mut self) -> Vec<(Self::Io, Self::Addr)>
    where
        Self: Sized,
    {
        let mut accepted = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match pin!(self.accept()).poll(&mut cx) {
                Poll::Ready(Ok(connection)) => accepted.push(connection),
                Poll::Ready(Err(error)) if is_connection_error(&error) => continue,
                Poll::Ready(Err(_)) | Poll::Pending => return accepted,
            }
        }
    }

    /// Read into `buf`, without waiting, bytes the kernel has already received on `io`,
    /// bypassing the runtime's readiness cache; `WouldBlock` when there are none.
    ///
    /// When Stopping begins, an idle HTTP/1 keep-alive connection is closed — unless a
    /// request has already arrived on it, which the runtime may not have noticed yet:
    /// closing a socket with unread bytes makes the kernel answer with a reset. This is
    /// how the server looks. The default answers `WouldBlock` (such a request may then be
    /// lost to the race every HTTP/1 server has); override it only for a plain socket,
    /// never for a stream that transforms its bytes (TLS).
    fn read_queued(io: &Self::Io, buf: &mut [u8]) -> io::Result<usize> {
        let _ = (io, buf);
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Errors of one connection (the peer gave up before it was accepted), after which the
/// listener is still fine.
pub(crate) fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// A non-blocking read straight from the socket.
#[cfg(unix)]
fn read_socket<S: std::os::fd::AsFd>(socket: &S, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let socket = socket2::SockRef::from(socket);
    (&*socket).read(buf)
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send {
        tokio::net::TcpListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::TcpListener::local_addr(self)
    }

    fn accept_backlog(self) -> Vec<(Self::Io, Self::Addr)> {
        // Taken out of the runtime, the listener is asked directly: the runtime's
        // readiness may lag behind the kernel's queue.
        let listener = match self.into_std() {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "could not take the listener out of the runtime; closing it");
                return Vec::new();
            }
        };
        drain(
            || listener.accept(),
            |stream| {
                stream.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(stream)
            },
        )
    }

    #[cfg(unix)]
    fn read_queued(io: &Self::Io, buf: &mut [u8]) -> io::Result<usize> {
        read_socket(io, buf)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send {
        tokio::net::UnixListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::UnixListener::local_addr(self)
    }

    fn accept_backlog(self) -> Vec<(Self::Io, Self::Addr)> {
        let listener = match self.into_std() {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "could not take the listener out of the runtime; closing it");
                return Vec::new();
            }
        };
        drain(
            || {
                let (stream, addr) = listener.accept()?;
                Ok((stream, tokio::net::unix::SocketAddr::from(addr)))
            },
            |stream| {
                stream.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(stream)
            },
        )
    }

    fn read_queued(io: &Self::Io, buf: &mut [u8]) -> io::Result<usize> {
        read_socket(io, buf)
    }
}

/// Accept from a non-blocking std listener until the queue is empty.
fn drain<Std, Io, Addr>(
    mut accept: impl FnMut() -> io::Result<(Std, Addr)>,
    mut register: impl FnMut(Std) -> io::Result<Io>,
) -> Vec<(Io, Addr)> {
    let mut accepted = Vec::new();
    loop {
        match accept() {
            Ok((stream, addr)) => match register(stream) {
                Ok(io) => accepted.push((io, addr)),
                Err(error) => tracing::warn!(%error, "could not register a queued connection"),
            },
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::warn!(%error, "accepting queued connections failed");
                return accepted;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    // No `.await` between the kernel's event and the call: the runtime has not polled
    // its readiness, as when Stopping begins on a busy server.

    #[tokio::test]
    async fn accept_backlog_takes_connections_the_runtime_has_not_seen() {
        let (listener, addr) = listener().await;
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let accepted = Listener::accept_backlog(listener);
        assert_eq!(accepted.len(), clients.len());
        assert!(std::net::TcpStream::connect(addr).is_err(), "closed");
    }

    #[tokio::test]
    async fn read_queued_reads_what_the_kernel_holds_without_waiting() {
        let (listener, addr) = listener().await;
        let mut client = std::net::TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 16];
        let error = <tokio::net::TcpListener as Listener>::read_queued(&server, &mut buf)
            .expect_err("nothing yet");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);

        client.write_all(b"GET /").expect("write");
        let n = <tokio::net::TcpListener as Listener>::read_queued(&server, &mut buf)
            .expect("queued bytes");
        assert_eq!(&buf[..n], b"GET /");
    }

    #[test]
    fn the_default_read_queued_reports_nothing() {
        struct Opaque;
        impl Listener for Opaque {
            type Io = tokio::io::DuplexStream;
            type Addr = ();
            async fn accept(&mut self) -> io::Result<(Self::Io, ())> {
                std::future::pending().await
            }
            fn local_addr(&self) -> io::Result<()> {
                Ok(())
            }
        }
        let (io, _peer) = tokio::io::duplex(8);
        let error = Opaque::read_queued(&io, &mut [0u8; 8]).expect_err("unsupported");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(Opaque.accept_backlog().is_empty());
    }
}
