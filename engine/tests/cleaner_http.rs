//! The HTTP cleaner protocol against real HTTP servers on 127.0.0.1: what Lethe sends (body,
//! headers, signature) and how each kind of answer is classified.
//!
//! Every test starts its own axum server on port 0 that records what it received and answers
//! as told. Every wait is bounded by [`bounded`], so a hang fails the test instead of the run.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{any, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use lethe_domain::{CleanerName, RequestId};
use lethe_engine::cleaners::http::{self, CallOutcome, CleanerCall, HttpCleaner};
use lethe_engine::cleaners::signature::{self, SignatureError};
use uuid::Uuid;

const SECRET: &str = "whsec-billing-2025";
const EMAIL: &str = "ada@example.com";

/// The instant the tests pretend it is; it stamps signatures and dates `Retry-After`.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn request_id() -> RequestId {
    RequestId::from_uuid(Uuid::parse_str("0195512a-7c00-7000-8000-00000000002a").unwrap())
}

fn call(attempt: u32) -> CleanerCall {
    CleanerCall {
        request_id: request_id(),
        cleaner: CleanerName::parse("billing").unwrap(),
        attempt,
        subject: BTreeMap::from([
            ("user_id".to_owned(), "u-4711".to_owned()),
            ("email".to_owned(), EMAIL.to_owned()),
        ]),
        due_at: Utc.with_ymd_and_hms(2025, 3, 1, 9, 30, 0).unwrap(),
        deadline: NaiveDate::from_ymd_opt(2025, 3, 31).unwrap(),
        callback_url: format!(
            "http://127.0.0.1:8080/v1/requests/{}/cleaners/billing/result",
            request_id()
        ),
    }
}

/// Fails the test if `future` takes longer than a few seconds.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("the call should finish well within 10s")
}

/// What a test server received.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A cleaner at `/erase` that records each request and answers with `status`, `headers` and
/// `body`.
async fn cleaner_answering(
    status: u16,
    headers: &[(&'static str, String)],
    body: &'static str,
) -> (String, Log) {
    let log = Log::default();
    let headers = headers.to_vec();
    let recorder = log.clone();
    let router = Router::new().route(
        "/erase",
        post(move |request_headers: HeaderMap, request_body: Bytes| {
            let headers = headers.clone();
            let log = recorder.clone();
            async move {
                log.lock().unwrap().push(Received {
                    headers: request_headers,
                    body: request_body,
                });
                let mut response = Response::builder().status(status);
                for (name, value) in headers {
                    response = response.header(name, value);
                }
                response.body(Body::from(body)).unwrap()
            }
        }),
    );
    let addr = serve(router).await;
    (format!("http://{addr}/erase"), log)
}

fn cleaner(url: String) -> HttpCleaner {
    HttpCleaner::new(
        http::client(),
        url,
        SECRET.to_owned(),
        Duration::from_secs(5),
    )
}

async fn outcome_of(
    status: u16,
    headers: &[(&'static str, String)],
    body: &'static str,
) -> CallOutcome {
    let (url, _) = cleaner_answering(status, headers, body).await;
    bounded(cleaner(url).call(&call(1), now())).await
}

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

// --- What Lethe sends ---

#[tokio::test]
async fn the_body_is_exactly_the_documented_json() {
    let (url, log) = cleaner_answering(204, &[], "").await;
    bounded(cleaner(url).call(&call(3), now())).await;

    let received = log.lock().unwrap()[0].clone();
    assert_eq!(header(&received, "content-type"), "application/json");
    assert_eq!(
        header(&received, "user-agent"),
        concat!("lethe/", env!("CARGO_PKG_VERSION"))
    );
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "request_id": "0195512a-7c00-7000-8000-00000000002a",
            "cleaner": "billing",
            "attempt": 3,
            "subject": {"user_id": "u-4711", "email": EMAIL},
            "due_at": "2025-03-01T09:30:00Z",
            "deadline": "2025-03-31",
            "callback_url": "http://127.0.0.1:8080/v1/requests/0195512a-7c00-7000-8000-00000000002a/cleaners/billing/result",
        })
    );
    // And no field beyond these (the comparison above already implies it; this names them).
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
}

#[tokio::test]
async fn every_attempt_carries_the_same_idempotency_key() {
    let (url, log) = cleaner_answering(503, &[], "").await;
    let cleaner = cleaner(url);
    bounded(cleaner.call(&call(1), now())).await;
    bounded(cleaner.call(&call(2), now() + chrono::TimeDelta::minutes(5))).await;

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    let expected = format!("{}:billing", request_id());
    assert_eq!(header(&log[0], "idempotency-key"), expected);
    assert_eq!(header(&log[1], "idempotency-key"), expected);
    // The attempts differ in the body, and so in the signature.
    assert_ne!(log[0].body, log[1].body);
    assert_ne!(
        header(&log[0], "lethe-signature"),
        header(&log[1], "lethe-signature")
    );
}

#[tokio::test]
async fn the_signature_verifies_with_the_secret_and_nothing_else() {
    let (url, log) = cleaner_answering(204, &[], "").await;
    bounded(cleaner(url).call(&call(1), now())).await;

    let received = log.lock().unwrap()[0].clone();
    let header = header(&received, signature::HEADER);
    let t = now().timestamp();
    assert!(header.starts_with(&format!("t={t},v1=")), "{header}");
    let secret = SECRET.as_bytes();
    let tolerance = signature::DEFAULT_TOLERANCE_SECONDS;

    assert_eq!(
        signature::verify(secret, header, &received.body, t + 10, tolerance),
        Ok(())
    );
    assert_eq!(
        signature::verify(b"another-secret", header, &received.body, t, tolerance),
        Err(SignatureError::Mismatch)
    );
    let mut changed = received.body.to_vec();
    let at = changed.iter().position(|&b| b == b'3').unwrap_or(0);
    changed[at] = b'4';
    assert_eq!(
        signature::verify(secret, header, &changed, t, tolerance),
        Err(SignatureError::Mismatch)
    );
    assert!(matches!(
        signature::verify(secret, header, &received.body, t + tolerance + 1, tolerance),
        Err(SignatureError::Expired { .. })
    ));
}

// --- How answers are classified ---

#[tokio::test]
async fn a_200_with_counts_is_done_with_those_counts() {
    let outcome = outcome_of(
        200,
        &[("content-type", "application/json".to_owned())],
        r#"{"deleted":{"rows":3},"detail":"invoices kept for tax law"}"#,
    )
    .await;
    assert_eq!(
        outcome,
        CallOutcome::Done {
            deleted: Some(BTreeMap::from([("rows".to_owned(), 3)])),
            detail: Some("invoices kept for tax law".to_owned()),
        }
    );
}

#[tokio::test]
async fn a_204_is_done_without_counts() {
    assert_eq!(
        outcome_of(204, &[], "").await,
        CallOutcome::Done {
            deleted: None,
            detail: None
        }
    );
}

#[tokio::test]
async fn a_2xx_with_a_body_that_is_not_the_expected_json_is_still_done() {
    let CallOutcome::Done { deleted, detail } = outcome_of(200, &[], "<html>OK</html>").await
    else {
        panic!("a 2xx is done whatever its body");
    };
    assert_eq!(deleted, None);
    let detail = detail.expect("a note that the body was not understood");
    assert!(detail.contains("ignored"), "{detail}");
}

#[tokio::test]
async fn a_202_means_the_result_comes_by_callback() {
    assert_eq!(
        outcome_of(202, &[], r#"{"job":"17"}"#).await,
        CallOutcome::Accepted
    );
}

#[tokio::test]
async fn a_503_is_retryable() {
    let outcome = outcome_of(503, &[], "maintenance").await;
    let CallOutcome::Failed {
        error,
        status_code,
        retryable,
        retry_after,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(status_code, Some(503));
    assert!(retryable);
    assert_eq!(retry_after, None);
    assert!(
        error.contains("503") && error.contains("maintenance"),
        "{error}"
    );
}

#[tokio::test]
async fn a_429_honours_retry_after_seconds() {
    let outcome = outcome_of(429, &[("retry-after", "7".to_owned())], "").await;
    assert!(
        matches!(
            outcome,
            CallOutcome::Failed {
                status_code: Some(429),
                retryable: true,
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(7)
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_503_honours_retry_after_as_an_http_date() {
    let http_date = |at: DateTime<Utc>| at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let in_90s = http_date(now() + chrono::TimeDelta::seconds(90));
    let outcome = outcome_of(503, &[("retry-after", in_90s)], "").await;
    assert!(
        matches!(
            outcome,
            CallOutcome::Failed { retryable: true, retry_after: Some(d), .. }
                if d == Duration::from_secs(90)
        ),
        "{outcome:?}"
    );

    let an_hour_ago = http_date(now() - chrono::TimeDelta::hours(1));
    let outcome = outcome_of(503, &[("retry-after", an_hour_ago)], "").await;
    assert!(
        matches!(
            outcome,
            CallOutcome::Failed {
                retryable: true,
                retry_after: Some(Duration::ZERO),
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_400_is_final_and_quotes_a_bounded_excerpt_of_the_body() {
    let outcome = outcome_of(400, &[], "subject kind 'email' not supported").await;
    let CallOutcome::Failed {
        error,
        status_code,
        retryable,
        retry_after,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(status_code, Some(400));
    assert!(!retryable);
    assert_eq!(retry_after, None);
    assert!(error.contains("not supported"), "{error}");

    let long: &'static str = "x".repeat(5000).leak();
    let CallOutcome::Failed { error, .. } = outcome_of(400, &[], long).await else {
        panic!("a 400 fails");
    };
    assert_eq!(error.matches('x').count(), 512, "{error}");
}

#[tokio::test]
async fn a_4xx_never_retries_even_with_retry_after() {
    let outcome = outcome_of(404, &[("retry-after", "5".to_owned())], "").await;
    assert!(
        matches!(
            outcome,
            CallOutcome::Failed {
                status_code: Some(404),
                retryable: false,
                retry_after: None,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_answer_that_echoes_the_subject_has_it_redacted() {
    // A cleaner that quotes the request back in its error.
    let router = Router::new().route(
        "/erase",
        post(|body: Bytes| async move { (StatusCode::UNPROCESSABLE_ENTITY, body) }),
    );
    let addr = serve(router).await;
    let outcome = bounded(cleaner(format!("http://{addr}/erase")).call(&call(1), now())).await;
    let CallOutcome::Failed {
        error, retryable, ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert!(!retryable);
    assert!(error.contains("[redacted]"), "{error}");
    assert!(!error.contains(EMAIL), "{error}");
    assert!(!error.contains("u-4711"), "{error}");
}

#[tokio::test]
async fn a_redirect_is_final_and_not_followed() {
    let target_hits = Arc::new(AtomicUsize::new(0));
    let hits = target_hits.clone();
    let router = Router::new()
        .route(
            "/erase",
            post(|| async {
                Response::builder()
                    .status(301)
                    .header("location", "/moved")
                    .body(Body::empty())
                    .unwrap()
            }),
        )
        .route(
            "/moved",
            any(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::OK }
            }),
        );
    let addr = serve(router).await;
    let outcome = bounded(cleaner(format!("http://{addr}/erase")).call(&call(1), now())).await;

    let CallOutcome::Failed {
        error,
        status_code,
        retryable,
        ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(status_code, Some(301));
    assert!(!retryable);
    assert!(error.contains("/moved"), "{error}");
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn a_cleaner_that_never_answers_times_out_retryably() {
    let router = Router::new().route(
        "/erase",
        post(|| async {
            std::future::pending::<()>().await;
            StatusCode::OK
        }),
    );
    let addr = serve(router).await;
    let cleaner = HttpCleaner::new(
        http::client(),
        format!("http://{addr}/erase"),
        SECRET.to_owned(),
        Duration::from_millis(300),
    );

    let started = Instant::now();
    let outcome = bounded(cleaner.call(&call(1), now())).await;
    let elapsed = started.elapsed();

    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(
        outcome,
        CallOutcome::Failed {
            error: "timed out after 300ms".to_owned(),
            status_code: None,
            retryable: true,
            retry_after: None,
        }
    );
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_connection_error() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let outcome = bounded(cleaner(format!("http://{addr}/erase")).call(&call(1), now())).await;
    let CallOutcome::Failed {
        error,
        status_code,
        retryable,
        ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(status_code, None);
    assert!(retryable);
    assert_eq!(error, format!("connection refused by {addr}"));
}

// --- The reminder notifier ---

#[tokio::test]
async fn notify_posts_signed_json_and_accepts_2xx() {
    let (url, log) = cleaner_answering(200, &[], "").await;
    let body = serde_json::json!({"request_id": request_id(), "email": EMAIL});
    let sent = bounded(http::notify(
        &http::client(),
        &url,
        Some(SECRET),
        &body,
        "r1:reminder:0",
        Duration::from_secs(5),
        now(),
    ))
    .await;
    assert_eq!(sent, Ok(()));

    let received = log.lock().unwrap()[0].clone();
    assert_eq!(header(&received, "content-type"), "application/json");
    assert_eq!(header(&received, "idempotency-key"), "r1:reminder:0");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&received.body).unwrap(),
        body
    );
    assert_eq!(
        signature::verify(
            SECRET.as_bytes(),
            header(&received, signature::HEADER),
            &received.body,
            now().timestamp(),
            300
        ),
        Ok(())
    );
}

#[tokio::test]
async fn notify_without_a_secret_sends_no_signature() {
    let (url, log) = cleaner_answering(204, &[], "").await;
    let sent = bounded(http::notify(
        &http::client(),
        &url,
        None,
        &serde_json::json!({}),
        "r1:reminder:0",
        Duration::from_secs(5),
        now(),
    ))
    .await;
    assert_eq!(sent, Ok(()));
    assert!(log.lock().unwrap()[0]
        .headers
        .get(signature::HEADER)
        .is_none());
}

#[tokio::test]
async fn notify_reports_a_5xx_without_quoting_the_answer() {
    let (url, _) = cleaner_answering(500, &[], "could not mail ada@example.com").await;
    let error = bounded(http::notify(
        &http::client(),
        &url,
        None,
        &serde_json::json!({"email": EMAIL}),
        "r1:reminder:0",
        Duration::from_secs(5),
        now(),
    ))
    .await
    .unwrap_err();
    assert_eq!(error, "HTTP 500 Internal Server Error");
}
