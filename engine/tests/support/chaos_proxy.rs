//! A TCP proxy on 127.0.0.1 that a test puts between Lethe and its database, to cut the
//! database off without touching the shared server: it can refuse new connections (its port
//! closed), swallow them (accepted, never answered: a network partition), and reset every
//! connection it carries (RST both ways, as a crashed server or a broken link does).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// What the proxy does with new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards them to the target.
    Open,
    /// Closes its port: a connection attempt is refused.
    Refuse,
    /// Accepts them and never sends or forwards a byte.
    Blackhole,
}

#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Every tunnel listens: a message resets them all.
    reset: broadcast::Sender<()>,
    /// Connections swallowed in [`Mode::Blackhole`], held open until the mode changes.
    held: Arc<Mutex<Vec<TcpStream>>>,
    task: JoinHandle<()>,
}

impl ChaosProxy {
    /// Starts forwarding a port of 127.0.0.1 to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, modes) = watch::channel(Mode::Open);
        let (reset, _) = broadcast::channel(16);
        let held = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            target,
            modes,
            reset.clone(),
            held.clone(),
        ));
        Self {
            addr,
            mode,
            reset,
            held,
            task,
        }
    }

    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what happens to new connections; connections already carried are kept (see
    /// [`Self::reset_all`]). Leaving [`Mode::Blackhole`] resets the connections it held.
    /// Returns once the change is in force.
    pub async fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode != Mode::Blackhole {
            for stream in self.held.lock().unwrap().drain(..) {
                reset_on_close(&stream);
            }
        }
        // The port is closed or open again once the accept loop saw the change; wait for it
        // so that the caller's next connection meets the new mode.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let refused = TcpStream::connect(self.addr).await.is_err();
            if refused == (mode == Mode::Refuse) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy did not switch to {mode:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Resets every connection the proxy carries now, in both directions.
    pub fn reset_all(&self) {
        let _ = self.reset.send(());
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

/// A listener that can take the same port again after it was closed.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    mut modes: watch::Receiver<Mode>,
    reset: broadcast::Sender<()>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    let mut listener = Some(listener);
    loop {
        let mode = *modes.borrow_and_update();
        match (mode, &listener) {
            (Mode::Refuse, Some(_)) => {
                listener = None;
                continue;
            }
            (Mode::Refuse, None) => {
                if modes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            (_, None) => {
                listener = Some(bind(addr).expect("the proxy's port was taken meanwhile"));
                continue;
            }
            (_, Some(open)) => {
                tokio::select! {
                    accepted = open.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        if *modes.borrow() == Mode::Blackhole {
                            held.lock().unwrap().push(client);
                        } else {
                            tokio::spawn(tunnel(client, target, reset.subscribe()));
                        }
                    }
                    changed = modes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Carries one connection until either side closes it or the proxy resets it.
async fn tunnel(mut client: TcpStream, target: SocketAddr, mut reset: broadcast::Receiver<()>) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        reset_on_close(&client);
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = reset.recv() => {
            // Linger zero: closing sends RST rather than FIN.
            reset_on_close(&client);
            reset_on_close(&server);
        }
    }
}

/// Makes closing `stream` send RST rather than FIN. (Tokio deprecates `set_linger` because a
/// positive linger blocks the thread on drop; a zero linger never does: it discards and resets.)
#[allow(deprecated)]
fn reset_on_close(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}
