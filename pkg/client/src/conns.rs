//! Every TCP connection a client opened, so all of them can be closed at once.
//!
//! # Why
//! When a node's address changes (DHCP) or the path to the server breaks silently, pooled
//! HTTP/1 connections and open watches keep a socket whose local address no longer exists:
//! requests on them hang until TCP gives up (minutes), and the connection pool hands the next
//! request another dead one. The kubelet solves this by closing all its connections on
//! repeated heartbeat failures (client-go's connrotation dialer); [`Connections::close_all`]
//! is the same tool. Closing means `shutdown(2)` on the socket: pending reads see EOF, the
//! pool drops the connection, watches end and their watchers reconnect on a fresh one.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The live connections of one client; cheap to clone, shared with its connector.
#[derive(Clone, Default)]
pub struct Connections {
    live: Arc<Mutex<Vec<Weak<Entry>>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.open())
            .finish()
    }
}

/// A duplicate of a connection's socket, dropped (closed) together with the connection.
struct Entry {
    socket: std::net::TcpStream,
}

impl Connections {
    /// Shuts down every open connection; returns how many. Requests in flight fail, and the
    /// next request dials anew, from the machine's current address.
    pub fn close_all(&self) -> usize {
        let live: Vec<Arc<Entry>> = self.lock().drain(..).filter_map(|w| w.upgrade()).collect();
        for entry in &live {
            // NotConnected only means the peer closed it first.
            let _ = entry.socket.shutdown(Shutdown::Both);
        }
        live.len()
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.lock().iter().filter(|w| w.strong_count() > 0).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Entry>>> {
        // The list holds only weak pointers: a panic elsewhere cannot leave it inconsistent.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn track(&self, io: TokioIo<TcpStream>) -> Tracked {
        let entry = match io.inner().as_fd().try_clone_to_owned() {
            Ok(fd) => {
                let entry = Arc::new(Entry {
                    socket: std::net::TcpStream::from(fd),
                });
                let mut live = self.lock();
                live.retain(|w| w.strong_count() > 0);
                live.push(Arc::downgrade(&entry));
                Some(entry)
            }
            Err(e) => {
                // Out of descriptors: the connection works, it just cannot be closed early.
                tracing::debug!(error = %e, "not tracking a connection");
                None
            }
        };
        Tracked { io, _entry: entry }
    }
}

/// A connector that registers each connection it makes in a [`Connections`].
#[derive(Clone)]
pub struct Connector<C> {
    inner: C,
    connections: Connections,
}

impl<C> Connector<C> {
    /// Wraps `inner`, registering its connections in `connections`.
    pub fn new(inner: C, connections: Connections) -> Self {
        Self { inner, connections }
    }
}

impl<C> tower::Service<http::Uri> for Connector<C>
where
    C: tower::Service<http::Uri, Response = TokioIo<TcpStream>>,
    C::Future: Send + 'static,
{
    type Response = Tracked;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Tracked, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let connections = self.connections.clone();
        Box::pin(async move { Ok(connections.track(connecting.await?)) })
    }
}

/// A TCP connection registered in a [`Connections`]; unregistered when dropped.
pub struct Tracked {
    io: TokioIo<TcpStream>,
    _entry: Option<Arc<Entry>>,
}

impl Read for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::connect::HttpConnector;
    use tokio::io::AsyncReadExt;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn close_all_ends_open_connections_and_forgets_dropped_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: http::Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let connections = Connections::default();
        let mut connector = Connector::new(HttpConnector::new(), connections.clone());
        let first = connector
            .ready()
            .await
            .unwrap()
            .call(uri.clone())
            .await
            .unwrap();
        let (mut server_side, _) = listener.accept().await.unwrap();
        let second = connector.ready().await.unwrap().call(uri).await.unwrap();
        let _ = listener.accept().await.unwrap();
        assert_eq!(connections.open(), 2);
        drop(second);
        assert_eq!(connections.open(), 1);

        assert_eq!(connections.close_all(), 1);
        // The server sees the client's side shut down: EOF, not a hang.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            server_side.read(&mut buf),
        )
        .await
        .expect("EOF within 5 s")
        .unwrap();
        assert_eq!(n, 0);
        assert_eq!(connections.open(), 0);
        drop(first);
    }
}
