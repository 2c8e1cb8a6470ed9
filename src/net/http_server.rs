//! A small, bounded HTTP/1 server loop shared by the HTTP-01 responder and the metrics
//! endpoint: no keep-alive, a header read timeout, a cap on each connection's lifetime and on
//! the number of connections; request bodies are never read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Idle connections cost little (a few KiB each until a request arrives), while a limit that an
/// attacker can fill locks the CA out: the cap is high, the header timeout short. The daemon
/// raises its open-file limit to match.
pub const MAX_CONNECTIONS: usize = 16_384;
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Answers each request on `listener` with `respond` until `shutdown` completes.
pub async fn serve<F, R>(listener: TcpListener, respond: F, shutdown: impl Future<Output = ()>)
where
    F: Fn(Request<Incoming>) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            // hyper's header timeout starts with the first byte: a connection that sends
            // nothing at all is cut off here, after the same time. A peek, not `readable()`:
            // a fresh socket counts as readable before any byte came, and hyper would then
            // hold its 8 KiB buffer for every idle connection.
            let mut first = [0u8; 1];
            if matches!(
                tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                // Boxed: hyper's connection state is allocated once a request arrives, so an
                // idle connection costs only this small task.
                Box::pin(answer(stream, peer, respond)).await;
            }
            drop(permit);
        });
    }
}

/// Answers the one request on `stream` (no keep-alive), within the connection's time cap.
async fn answer<F, R>(stream: tokio::net::TcpStream, peer: std::net::SocketAddr, respond: F)
where
    F: Fn(Request<Incoming>) -> R + Send + Sync + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        let response = respond(request);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(8192)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
}

/// A listening socket on `addr`; `[::]` is bound dual-stack so IPv4 and IPv6 clients both
/// arrive.
pub fn bind_dual_stack(addr: std::net::SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}

/// The client's address, in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// A plain-text response.
pub fn text(
    status: hyper::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
