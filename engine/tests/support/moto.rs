//! moto's S3-compatible server (`moto_server`) as a [`Child`] process (`support/child.rs`), for
//! the tests of the object_store cleaner: one server per test, on a free 127.0.0.1 port, in
//! memory.
//! [`Moto::stop`] kills it like an outage and [`Moto::restart`] starts it again on the same
//! port (empty: memory storage forgets every bucket). The child is killed when the value drops.
//!
//! The binary is `LETHE_TEST_MOTO_BIN`, else the virtualenv `scripts/services/s3.sh` installs
//! (`${LETHE_CACHE_DIR:-$HOME/.cache/lethe}/moto-venv/bin/moto_server`). With neither, the tests
//! say so loudly on stderr and pass without running (`scripts/test.sh` always provides it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::child::{cached_binary, Child};

/// How long a start may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The moto_server binary, or `None` (after saying so) when there is none.
pub fn binary() -> Option<PathBuf> {
    match cached_binary("LETHE_TEST_MOTO_BIN", "moto-venv/bin/moto_server") {
        Ok(bin) => Some(bin),
        Err(bin) => {
            eprintln!(
                "\n*** SKIPPED: this test needs moto's S3 server and neither LETHE_TEST_MOTO_BIN \
                 is set nor {} exists. Install it with scripts/services/s3.sh (scripts/test.sh \
                 does). ***\n",
                bin.display()
            );
            None
        }
    }
}

/// A running (or deliberately stopped) moto server.
#[derive(Debug)]
pub struct Moto {
    bin: PathBuf,
    child: Child,
}

impl Moto {
    /// Starts a server on a free port and waits until it answers; `None` when moto is not
    /// installed (the test then returns).
    pub async fn start() -> Option<Self> {
        let mut moto = Self {
            bin: binary()?,
            child: Child::new("moto"),
        };
        moto.launch().await;
        Some(moto)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.child.port())
    }

    /// Kills the server at once and waits until its port is closed.
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// The last lines the server wrote, for failure messages.
    pub fn logs(&self) -> String {
        self.child.logs()
    }

    async fn launch(&mut self) {
        let mut command = Command::new(&self.bin);
        command.args(["-H", "127.0.0.1", "-p", &self.child.port().to_string()]);
        let endpoint = self.endpoint();
        let client = reqwest::Client::new();
        self.child
            .launch(&command, START_DEADLINE, || {
                let answered = client.get(&endpoint).send();
                async move { answered.await.is_ok() }
            })
            .await;
    }
}
