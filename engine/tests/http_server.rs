//! `lethe_engine::http::serve`, the accept loop of `lethe serve`: when its shutdown signal
//! comes it stops accepting, lets a request in progress finish, closes idle keep-alive
//! connections, and returns.

#[path = "hostile/raw.rs"]
mod raw;
mod support;

use std::sync::Arc;
use std::time::Duration;

use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_progress_then_returns() {
    let store = support::sqlite().await;
    let (events, _) = store.stores();
    let app = router(AppState {
        requests: Requests::new(events.clone(), Arc::new(Config::default())),
        key: MasterKey::from_bytes([5; 32]),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lethe_engine::http::serve(listener, app, async {
        let _ = stopped.await;
    }));
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    // A keep-alive connection that has been served once.
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = raw::read_reply(&mut socket, false).await.unwrap();
    assert_eq!(reply.status, 200);

    // A submission whose body has not arrived when the signal comes: `100 Continue` says the
    // handler is waiting for it.
    let body = b"{\"subject\":{\"user_id\":\"late\"}}";
    let head = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut continued = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !continued.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            socket.read_exact(&mut byte).await.unwrap();
            continued.push(byte[0]);
        }
    })
    .await
    .expect("100 Continue");
    assert!(continued.starts_with(b"HTTP/1.1 100"), "{continued:?}");
    stop.send(()).unwrap();
    // New connections are refused once serve has stopped accepting; the one in progress is
    // still served.
    socket.write_all(body).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), raw::read_reply(&mut socket, false))
        .await
        .expect("the request in progress is answered")
        .expect("an answer");
    assert_eq!(reply.status, 201, "finished, not cut off");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns once its connections are done")
        .unwrap()
        .unwrap();
    assert_eq!(events.list_streams(None, 10).await.unwrap().len(), 1);
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "no longer accepting"
    );
}
