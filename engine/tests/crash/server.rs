//! A `lethe serve` process of the scenarios: started, watched and SIGKILLed.

use super::*;

/// A running `lethe serve`: SIGKILLed when dropped, whatever happened in the test.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) child: Child,
    /// Where it listens.
    pub(crate) address: SocketAddr,
    /// Everything the server wrote to stderr, for failure messages.
    pub(crate) log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `lethe serve` on the workload's config and database, waits until it says it
    /// serves, and sends the workload's gateway to it.
    pub(crate) async fn start(workload: &Workload, name: &str) -> Self {
        let url = workload.store.database_url();
        let config = workload.config_path.display().to_string();
        let mut child = lethe(workload.dir.path(), &workload.key_file)
            .args([
                "serve",
                "--config",
                &config,
                "--database-url",
                &url,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let serving = timeout(SERVE_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if line.contains("lethe is serving") {
                    if let Some(address) = listen_address(&line) {
                        return Some(address);
                    }
                }
            }
            None
        })
        .await;
        // On a panic the child is dropped, and so killed (`kill_on_drop`).
        let address = match serving {
            Ok(Some(address)) => address,
            Ok(None) => panic!("{name} exited before serving:\n{}", log.lock().unwrap()),
            Err(_) => panic!(
                "{name} did not serve within {SERVE_DEADLINE:?}:\n{}",
                log.lock().unwrap()
            ),
        };
        // Keep reading so the server never blocks on a full pipe.
        tokio::spawn({
            let log = log.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                }
            }
        });
        workload.gateway.route_to(Some(address));
        Self {
            name: name.to_owned(),
            child,
            address,
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The last lines of the log, for failure messages.
    pub(crate) fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!(
            "--- {} (last lines)\n{}\n",
            self.name,
            lines[start..].join("\n")
        )
    }

    /// Panics (with the log) if the server died on its own.
    pub(crate) fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited by itself with {status}:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// SIGKILL (no chance to release leases or finish calls), and wait until it is gone.
    pub(crate) async fn kill(mut self) {
        self.assert_alive();
        timeout(COMMAND_DEADLINE, self.child.kill())
            .await
            .unwrap_or_else(|_| panic!("{} did not die within {COMMAND_DEADLINE:?}", self.name))
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The address in `lethe is serving listen=127.0.0.1:40123 ...`.
pub(crate) fn listen_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listen=")?;
    rest.split_whitespace().next()?.parse().ok()
}
