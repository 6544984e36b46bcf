//! Prometheus metrics, served at `/metrics`. One process-wide recorder (the `metrics` crate's
//! facade with the Prometheus exporter's recorder, no listener of its own); the names:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `lethe_http_requests_total` | `route`, `method`, `status` | HTTP requests answered |
//! | `lethe_http_request_duration_seconds` | `route`, `method` | latency histogram |
//! | `lethe_events_appended_total` | `type` | events written to the log |
//! | `lethe_subscription_lag_events` | `subscription` | events between the checkpoint and the log's head |
//! | `lethe_subscription_lag_seconds` | `subscription` | age of the oldest event not yet processed |
//! | `lethe_cleaner_attempts_total` | `cleaner`, `kind`, `outcome` | attempts' results as recorded (`succeeded`, `failed_retryable`, `failed`), whichever way they came, and `accepted` for an HTTP 202 |
//! | `lethe_cleaner_call_duration_seconds` | `cleaner`, `kind` | handing an attempt over: an HTTP call, or a Kafka message until the broker's ack |
//! | `lethe_cleaner_batch_size` | `cleaner`, `kind` | requests in each batched call |
//! | `lethe_jobs_pending` | `kind` | timers and dispatches waiting |

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the recorder (once per process) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness): then ours stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The text exposition of every metric.
pub fn render() -> String {
    install().render()
}

/// Axum middleware: counts and times every request by its route template.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("lethe_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("lethe_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

pub fn events_appended(events: &[crate::store::RecordedEvent]) {
    for event in events {
        metrics::counter!("lethe_events_appended_total", "type" => event.event_type.clone())
            .increment(1);
    }
}

pub fn subscription_lag(subscription: &'static str, events: u64, seconds: f64) {
    #[allow(clippy::cast_precision_loss)] // a lag beyond 2^52 events is not a concern
    metrics::gauge!("lethe_subscription_lag_events", "subscription" => subscription)
        .set(events as f64);
    metrics::gauge!("lethe_subscription_lag_seconds", "subscription" => subscription).set(seconds);
}

/// Counts one attempt's outcome for a cleaner of `kind` (`http`, `kafka`, `manual`).
pub fn cleaner_attempt(cleaner: &str, kind: &'static str, outcome: &'static str) {
    metrics::counter!("lethe_cleaner_attempts_total", "cleaner" => cleaner.to_owned(), "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// Times how long handing one attempt to a cleaner took.
pub fn cleaner_call(cleaner: &str, kind: &'static str, seconds: f64) {
    metrics::histogram!("lethe_cleaner_call_duration_seconds", "cleaner" => cleaner.to_owned(), "kind" => kind)
        .record(seconds);
}

/// Records the size of one batched call to a cleaner (`batch` in lethe.toml).
pub fn cleaner_batch(cleaner: &str, kind: &'static str, requests: usize) {
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("lethe_cleaner_batch_size", "cleaner" => cleaner.to_owned(), "kind" => kind)
        .record(requests as f64);
}

/// Counts the attempts' results among events just written, however they were reported: one
/// place for every cleaner kind and every door (the dispatcher, the result endpoint, the Kafka
/// results, a missed `callback_timeout`, `lethe confirm`), and only results the log took.
pub fn cleaner_results(events: &[lethe_domain::Event], config: &crate::config::Config) {
    use lethe_domain::Event;
    for event in events {
        let (cleaner, outcome) = match event {
            Event::CleanerSucceeded(e) => (&e.cleaner, "succeeded"),
            Event::CleanerFailed(e) if e.retryable => (&e.cleaner, "failed_retryable"),
            Event::CleanerFailed(e) => (&e.cleaner, "failed"),
            _ => continue,
        };
        let kind = config
            .cleaner(cleaner)
            .map_or("unknown", |c| c.kind.as_str());
        cleaner_attempt(cleaner.as_str(), kind, outcome);
    }
}

pub fn jobs_pending(kind: &'static str, count: i64) {
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!("lethe_jobs_pending", "kind" => kind).set(count as f64);
}
