//! A TCP forwarder on 127.0.0.1 standing in for the load balancer in front of `lethe serve`:
//! clients and cleaners keep one address while the process behind it is killed and restarted
//! on another port. With no process behind it (or one that just died), a connection is
//! accepted and closed at once, as a balancer with no healthy backend does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Gateway {
    pub url: String,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    accept: JoinHandle<()>,
}

impl Gateway {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let backend: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let accept = tokio::spawn({
            let backend = backend.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = *backend.lock().unwrap();
                    tokio::spawn(async move {
                        let Some(target) = target else { return };
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        // Either side closing (the server killed) ends both.
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            }
        });
        Self {
            url,
            backend,
            accept,
        }
    }

    /// Sends new connections to `backend` (none: refuses them). Connections already forwarded
    /// stay with the process they reached, and end with it.
    pub fn route_to(&self, backend: Option<SocketAddr>) {
        *self.backend.lock().unwrap() = backend;
    }

    /// Where new connections go now.
    pub fn backend(&self) -> Option<SocketAddr> {
        *self.backend.lock().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
