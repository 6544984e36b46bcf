//! What the scenarios start on 127.0.0.1: Lethe's HTTP API in-process, loopback cleaners, and
//! the HTTP client that drives them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use lethe_engine::app::Requests;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::load::{self, LoadResult};

/// The HMAC key the benchmark's cleaners share with Lethe (they do not check it).
pub const CLEANER_SECRET: &str = "bench-cleaner-secret";
/// The master key of in-process engines (cancel tokens only).
pub const MASTER_KEY: [u8; 32] = [7; 32];

/// An axum server on 127.0.0.1 that stops when asked (or when dropped).
pub struct Server {
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Server({})", self.base)
    }
}

impl Server {
    pub async fn start(app: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await;
        });
        Ok(Self {
            base,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// Stops accepting, lets open connections finish for a moment, then ends the server.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lethe's HTTP API, in this process.
pub async fn start_api(requests: Requests) -> anyhow::Result<Server> {
    Server::start(router(AppState {
        requests,
        key: MasterKey::from_bytes(MASTER_KEY),
    }))
    .await
}

/// Calls a loopback cleaner received, and how many it failed.
#[derive(Debug, Default)]
pub struct CleanerStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
}

#[derive(Debug)]
pub struct Cleaner {
    pub name: String,
    pub stats: Arc<CleanerStats>,
    pub server: Server,
}

#[derive(Debug, Clone)]
struct CleanerState {
    stats: Arc<CleanerStats>,
    failure_rate: f64,
}

async fn erase(State(state): State<CleanerState>, _body: axum::body::Bytes) -> StatusCode {
    state.stats.calls.fetch_add(1, Ordering::Relaxed);
    if state.failure_rate > 0.0 && rand::random::<f64>() < state.failure_rate {
        state.stats.failures.fetch_add(1, Ordering::Relaxed);
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

impl Cleaner {
    /// A cleaner on 127.0.0.1 answering 200, or 503 to `failure_rate` of the calls at random.
    pub async fn start(name: &str, failure_rate: f64) -> anyhow::Result<Self> {
        let stats = Arc::new(CleanerStats::default());
        let app = Router::new()
            .route("/erase", post(erase))
            .with_state(CleanerState {
                stats: stats.clone(),
                failure_rate,
            });
        Ok(Self {
            name: name.to_owned(),
            stats,
            server: Server::start(app).await?,
        })
    }

    pub fn url(&self) -> String {
        format!("{}/erase", self.server.base)
    }
}

/// The five cleaners of the lifecycle scenario; the last fails 10 % of its calls with 503.
pub async fn start_cleaners() -> anyhow::Result<Vec<Cleaner>> {
    let mut cleaners = Vec::new();
    for (name, failure_rate) in [
        ("billing", 0.0),
        ("crm", 0.0),
        ("analytics", 0.0),
        ("support", 0.0),
        ("flaky", 0.1),
    ] {
        cleaners.push(Cleaner::start(name, failure_rate).await?);
    }
    Ok(cleaners)
}

/// (calls, failures) over all cleaners.
pub fn cleaner_totals(cleaners: &[Cleaner]) -> (u64, u64) {
    cleaners.iter().fold((0, 0), |(calls, failures), c| {
        (
            calls + c.stats.calls.load(Ordering::Relaxed),
            failures + c.stats.failures.load(Ordering::Relaxed),
        )
    })
}

pub async fn stop_cleaners(cleaners: Vec<Cleaner>) {
    for cleaner in cleaners {
        cleaner.server.stop().await;
    }
}

/// The `lethe.toml` of the lifecycle and memory scenarios: a one-second grace period without
/// reminders, workers polling every 20 ms, and the cleaners retrying from 100 ms.
pub fn lifecycle_config(cleaners: &[Cleaner], dispatch_concurrency: u32) -> String {
    let mut text = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n\n\
         [engine]\npoll_interval = \"20ms\"\ndispatch_concurrency = {dispatch_concurrency}\n",
    );
    for cleaner in cleaners {
        text.push_str(&format!(
            "\n[[cleaners]]\nname = \"{}\"\nkind = \"http\"\nurl = \"{}\"\nsecret = \"{CLEANER_SECRET}\"\n\
             timeout = \"10s\"\n\
             retry = {{ max_attempts = 20, initial = \"100ms\", max = \"2s\", multiplier = 2.0 }}\n",
            cleaner.name,
            cleaner.url()
        ));
    }
    text
}

/// One HTTP client for a whole scenario, with room for `connections` idle keep-alive
/// connections to one host.
pub fn http_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// `POST /v1/requests` for a new subject; anything but 201 is an error.
pub async fn submit(client: &reqwest::Client, url: &str, user_id: &str) -> Result<(), String> {
    let response = client
        .post(url)
        .json(&serde_json::json!({"subject": {"user_id": user_id}}))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
    if status == StatusCode::CREATED {
        Ok(())
    } else {
        Err(format!(
            "POST {url}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))
    }
}

/// Submits `count` requests (subjects `{prefix}-0`, `{prefix}-1`, ...) to the API at `base`
/// from `concurrency` clients, within `time_limit`.
pub async fn submit_many(
    client: &reqwest::Client,
    base: &str,
    prefix: &str,
    count: u64,
    concurrency: usize,
    time_limit: Duration,
) -> LoadResult {
    let client = client.clone();
    let url: Arc<str> = Arc::from(format!("{base}/v1/requests"));
    let prefix: Arc<str> = Arc::from(prefix);
    load::run(concurrency, time_limit, count, move |i| {
        let client = client.clone();
        let url = url.clone();
        let prefix = prefix.clone();
        async move { submit(&client, &url, &format!("{prefix}-{i}")).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_lifecycle_config_parses() {
        let cleaners = start_cleaners().await.unwrap();
        let config = lethe_engine::config::Config::parse(&lifecycle_config(&cleaners, 16)).unwrap();
        assert_eq!(config.cleaners.len(), 5);
        assert_eq!(config.engine.poll_interval.0, Duration::from_millis(20));
        stop_cleaners(cleaners).await;
    }

    #[tokio::test]
    async fn the_flaky_cleaner_fails_some_calls() {
        let cleaner = Cleaner::start("flaky", 0.5).await.unwrap();
        let client = http_client(4).unwrap();
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let response = client.post(cleaner.url()).body("{}").send().await.unwrap();
            statuses.push(response.status().as_u16());
        }
        assert!(statuses.contains(&200) && statuses.contains(&503));
        assert_eq!(cleaner.stats.calls.load(Ordering::Relaxed), 40);
        cleaner.server.stop().await;
    }
}
