//! Serves the router over HTTP/1.1 with hyper, as `axum::serve` does, but with hyper's limits
//! set for Lethe (ADR 13): hyper's ceilings are raised above Lethe's own
//! ([`super::edge::MAX_HEADERS`], [`super::edge::MAX_HEADER_BYTES`]) so that a request over
//! Lethe's limit is still parsed and refused by Lethe with a problem, and a client that
//! never finishes its headers is dropped after [`HEADER_READ_TIMEOUT`].
//!
//! What hyper cannot parse at all (a bad request line, a header without a name, a space in
//! the path, headers beyond its ceiling) never becomes a request: hyper answers it itself
//! with a bare status line and closes the connection.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A connection that does not finish a request's headers within this is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's ceiling on header fields: twice Lethe's, so Lethe's limit is what clients meet.
const HYPER_MAX_HEADERS: usize = 2 * super::edge::MAX_HEADERS;
/// hyper's read buffer, which bounds the request line and headers it will parse: well above
/// Lethe's limits on both.
const HYPER_MAX_BUF: usize = 256 * 1024;

/// Accepts connections on `listener` and serves `app` on each until `shutdown` completes;
/// then stops accepting, lets the requests in progress finish, and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF);
    // Every connection task holds a receiver: the sender's `closed` is all of them finished.
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %remote, "connection ended with an error");
                    }
                    return;
                }
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    stop.closed().await;
    Ok(())
}
