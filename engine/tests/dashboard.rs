//! The dashboard page (`GET /dashboard`) against an engine seeded with a known workload: twelve
//! requests with back-dated histories (completed in different months, one needing attention,
//! one on hold, one cancelled, one rejected, one past its legal deadline, two close to it).
//!
//! - Through the router, on both backends: every `data-stat` figure on the page equals
//!   `GET /v1/stats` (and the numbers shown agree with it), the lists are right and most urgent
//!   first; auth by bearer header, by `?token=` moved into a cookie, and by that cookie; 401 and
//!   403 as HTML pages; 503 without read models; open when no tokens are configured.
//! - In a real browser: Debian's headless Chromium opens `/dashboard?token=...` on a live
//!   engine (following the redirect with the cookie), its DOM is checked against
//!   `GET /v1/stats`, and a screenshot is saved to `target/test-artifacts/dashboard.png`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use lethe_domain::command::Receive;
use lethe_domain::event::PlannedCleaner;
use lethe_domain::{
    Aggregate, CleanerName, Command, DeletionRequest, Jurisdiction, RequestId, RequestState,
    Subject,
};
use lethe_engine::app::{Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::root::Database;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{now_micros, EventMetadata};
use serde_json::Value;
use support::TestStore;
use tower::ServiceExt;

const READER: &str = "lethe_reader-token-0123";
const ADMIN: &str = "lethe_admin-token-4567";

fn config_with_tokens() -> Config {
    Config::parse(&format!(
        "[[tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"requests:read\"]\n\
         [[tokens]]\nname = \"admin\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
        token_hash(READER),
        token_hash(ADMIN)
    ))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The workload

/// The requests of the seeded workload whose place on the page is known.
#[derive(Debug)]
struct Seeded {
    overdue: RequestId,
    /// Most urgent first: a GDPR request received 27 days ago (1-4 days left), then a CCPA one
    /// received 40 days ago (5 days left).
    at_risk: [RequestId; 2],
}

fn meta() -> EventMetadata {
    EventMetadata::new("test")
}

fn plan(names: &[&str], max_attempts: u32) -> Vec<PlannedCleaner> {
    names
        .iter()
        .map(|n| PlannedCleaner {
            name: CleanerName::parse(*n).unwrap(),
            max_attempts,
        })
        .collect()
}

/// A request received at `received_at`: the aggregate decides `Receive` with the policy of the
/// jurisdiction (so the deadline is computed from that day), and the log records it.
async fn received(
    requests: &Requests,
    n: usize,
    jurisdiction: &str,
    received_at: DateTime<Utc>,
) -> RequestId {
    let jurisdiction = Jurisdiction::parse(jurisdiction).unwrap();
    let policy = requests.config().request_policy(&jurisdiction).unwrap();
    let id = RequestId::from_uuid(uuid::Uuid::now_v7());
    let receive = Receive {
        request_id: id,
        subject: Subject::parse(BTreeMap::from([(
            "user_id".to_owned(),
            format!("dash-{n}"),
        )]))
        .unwrap()
        .into(),
        jurisdiction,
        source: Some("app".into()),
        reason: None,
        external_id: None,
        tags: Vec::new(),
        received_at,
        policy,
    };
    let events =
        DeletionRequest::handle_command(&RequestState::NotReceived, Command::Receive(receive))
            .unwrap();
    requests
        .store()
        .append(id, 0, &events, &meta())
        .await
        .unwrap();
    id
}

async fn submitted(requests: &Requests, n: usize) -> RequestId {
    requests
        .submit(
            Submission {
                subject: BTreeMap::from([("user_id".to_owned(), format!("dash-{n}"))]),
                jurisdiction: Some("gdpr".into()),
                ..Submission::default()
            },
            None,
            "test",
        )
        .await
        .unwrap()
        .loaded
        .request
        .id
}

async fn run(requests: &Requests, id: RequestId, command: Command) {
    requests
        .execute(id, &meta(), move |_| command.clone())
        .await
        .unwrap();
}

fn due(at: DateTime<Utc>, names: &[&str], expedite: bool) -> Command {
    Command::MarkDue {
        at,
        cleaners: plan(names, 2),
        expedite,
    }
}

fn success(cleaner: &str, attempt: u32, at: DateTime<Utc>) -> Command {
    Command::RecordCleanerSuccess {
        cleaner: CleanerName::parse(cleaner).unwrap(),
        attempt,
        at,
        deleted: None,
        detail: None,
    }
}

fn failure(cleaner: &str, attempt: u32, at: DateTime<Utc>) -> Command {
    Command::RecordCleanerFailure {
        cleaner: CleanerName::parse(cleaner).unwrap(),
        attempt,
        at,
        error: "HTTP 503".into(),
        status_code: Some(503),
        retryable: true,
        retry_after_seconds: None,
    }
}

/// Twelve requests with histories spread over the last ten weeks.
async fn seed(requests: &Requests) -> Seeded {
    let now = now_micros();
    let ago = |days: i64| now - TimeDelta::days(days);
    let minutes = |m: i64| TimeDelta::minutes(m);

    // Completed 39 days ago, after the 30-day grace period; crm needed a second attempt.
    let id = received(requests, 1, "gdpr", ago(70)).await;
    run(requests, id, due(ago(40), &["billing", "crm"], false)).await;
    run(requests, id, success("billing", 1, ago(40) + minutes(2))).await;
    run(requests, id, failure("crm", 1, ago(40) + minutes(3))).await;
    run(requests, id, success("crm", 2, ago(39))).await;
    // Completed 15 days ago.
    let id = received(requests, 2, "gdpr", ago(45)).await;
    run(requests, id, due(ago(15), &["billing", "crm"], false)).await;
    run(requests, id, success("billing", 1, ago(15) + minutes(1))).await;
    run(requests, id, success("crm", 1, ago(15) + minutes(15))).await;
    // Expedited, completed in two days.
    let id = received(requests, 3, "ccpa", ago(20)).await;
    run(
        requests,
        id,
        due(ago(20) + minutes(60), &["billing", "crm"], true),
    )
    .await;
    run(requests, id, success("billing", 1, ago(20) + minutes(61))).await;
    run(requests, id, success("crm", 1, ago(18))).await;
    // Expedited, completed now.
    let id = submitted(requests, 4).await;
    run(requests, id, due(now_micros(), &["billing", "crm"], true)).await;
    run(requests, id, success("billing", 1, now_micros())).await;
    run(requests, id, success("crm", 1, now_micros())).await;
    // crm failed both attempts: needs attention.
    let id = received(requests, 5, "gdpr", ago(3)).await;
    run(
        requests,
        id,
        due(ago(3) + minutes(10), &["billing", "crm"], true),
    )
    .await;
    run(requests, id, success("billing", 1, ago(3) + minutes(11))).await;
    run(requests, id, failure("crm", 1, ago(3) + minutes(12))).await;
    run(requests, id, failure("crm", 2, ago(3) + minutes(20))).await;
    // On hold; cancelled; rejected.
    let id = submitted(requests, 6).await;
    run(
        requests,
        id,
        Command::PlaceHold {
            at: now_micros(),
            reason: "litigation".into(),
        },
    )
    .await;
    let id = submitted(requests, 7).await;
    run(
        requests,
        id,
        Command::Cancel {
            at: now_micros(),
            reason: None,
        },
    )
    .await;
    let id = received(requests, 8, "gdpr", ago(5)).await;
    run(
        requests,
        id,
        Command::Reject {
            at: ago(4),
            reason: "not a customer".into(),
        },
    )
    .await;
    // Received 40 days ago under GDPR (one month): its deadline passed 9-12 days ago while
    // billing kept failing.
    let overdue = received(requests, 9, "gdpr", ago(40)).await;
    run(requests, overdue, due(ago(10), &["billing"], false)).await;
    run(
        requests,
        overdue,
        failure("billing", 1, ago(10) + minutes(1)),
    )
    .await;
    // Close to their deadlines, still in the grace period.
    let gdpr = received(requests, 10, "gdpr", ago(27)).await;
    let ccpa = received(requests, 11, "ccpa", ago(40)).await;
    // Just received.
    submitted(requests, 12).await;
    Seeded {
        overdue,
        at_risk: [gdpr, ccpa],
    }
}

fn engine(database: &Database, config: Config) -> Requests {
    Requests::new(database.events.clone(), Arc::new(config))
        .with_read_models(database.read_models.clone())
}

async fn seeded(store: &TestStore, config: Config) -> (axum::Router, Seeded) {
    let database = store.database();
    let requests = engine(&database, config);
    let seeded = seed(&requests).await;
    lethe_engine::read_models::catch_up(&database.events, &database.read_models)
        .await
        .unwrap();
    let app = router(AppState {
        requests,
        key: MasterKey::from_bytes([7; 32]),
    });
    (app, seeded)
}

// ---------------------------------------------------------------------------------------------
// Reading the page

/// One figure on the page: its `data-stat` path, its `data-value` and the text shown.
#[derive(Debug)]
struct Figure {
    path: String,
    value: f64,
    text: String,
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].to_owned())
}

/// Every element marked `data-stat`, from served HTML or a browser's serialized DOM.
fn figures(html: &str) -> Vec<Figure> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(" data-stat=\"") {
        let open = rest[..at].rfind('<').unwrap();
        let close = at + rest[at..].find('>').unwrap();
        let tag = &rest[open..close];
        let text_end = close + 1 + rest[close + 1..].find('<').unwrap();
        let path = attribute(tag, "data-stat").unwrap();
        let value = attribute(tag, "data-value")
            .unwrap_or_else(|| panic!("{path} has no data-value"))
            .parse()
            .unwrap_or_else(|e| panic!("{path}: data-value is not a number: {e}"));
        found.push(Figure {
            path,
            value,
            text: rest[close + 1..text_end].trim().to_owned(),
        });
        rest = &rest[close..];
    }
    found
}

/// The numbers of `GET /v1/stats`, by path (`by_status.completed`, `cleaners.crm.attempts`),
/// and whether each is a count.
fn flatten(value: &Value, prefix: &str, out: &mut BTreeMap<String, (f64, bool)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(inner, &path, out);
            }
        }
        Value::Number(n) => {
            out.insert(prefix.to_owned(), (n.as_f64().unwrap(), n.is_u64()));
        }
        _ => {}
    }
}

/// Seconds from a shown duration such as `12.3 s`, `4.2 min`, `3.1 h` or `2.0 d`.
fn shown_seconds(text: &str) -> Option<f64> {
    let (number, unit) = text.split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Some(number * scale)
}

/// Every figure on the page equals `GET /v1/stats`, every figure there is on the page, and the
/// text shown agrees with the value.
fn assert_page_matches_stats(html: &str, stats: &Value) {
    let mut expected = BTreeMap::new();
    flatten(stats, "", &mut expected);
    let shown = figures(html);
    for figure in &shown {
        let path = &figure.path;
        let (want, is_count) = match expected.get(path) {
            Some(found) => *found,
            // A status no request has is absent from the JSON and shown as 0.
            None if path.starts_with("by_status.") => (0.0, true),
            None => panic!("the page shows {path}, which GET /v1/stats does not have"),
        };
        assert!(
            (figure.value - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{path}: page {} vs GET /v1/stats {want}",
            figure.value
        );
        let text = figure.text.as_str();
        if is_count {
            assert_eq!(text, format!("{want}"), "{path} is shown as {text:?}");
        } else if path.ends_with(".success_rate") {
            let pct: f64 = text.trim_end_matches('%').parse().unwrap();
            assert!(
                (pct - want * 100.0).abs() <= 0.05,
                "{path}: {text} vs {want}"
            );
        } else if path.ends_with("_days") {
            let days: f64 = text.parse().unwrap();
            assert!((days - want).abs() <= 0.05, "{path}: {text} vs {want}");
        } else if path.ends_with("_seconds") && text != "–" {
            let seconds = shown_seconds(text).unwrap_or_else(|| panic!("{path}: {text:?}"));
            assert!(
                (seconds - want).abs() <= want * 0.05 + 0.05,
                "{path}: {text} vs {want}"
            );
        }
    }
    for path in expected.keys() {
        assert!(
            shown.iter().any(|f| &f.path == path),
            "GET /v1/stats has {path}, the page does not show it"
        );
    }
}

/// The request ids listed in the section with this `id`, in order.
fn listed(html: &str, section: &str) -> Vec<String> {
    let start = html
        .find(&format!("id=\"{section}\""))
        .unwrap_or_else(|| panic!("no section {section}"));
    let end = start + html[start..].find("</section>").unwrap();
    let mut ids = Vec::new();
    let mut rest = &html[start..end];
    while let Some(at) = rest.find("data-request=\"") {
        let value = &rest[at + 14..];
        let stop = value.find('"').unwrap();
        ids.push(value[..stop].to_owned());
        rest = &value[stop..];
    }
    ids
}

/// The workload's figures, known independently of the code under test.
fn assert_known_workload(stats: &Value) {
    let expect = [
        ("total", 12),
        ("overdue", 1),
        ("at_risk", 2),
        ("at_risk_days", 7),
        ("by_status.completed", 4),
        ("by_status.pending", 3),
        ("by_status.due", 1),
        ("by_status.needs_attention", 1),
        ("by_status.on_hold", 1),
        ("by_status.cancelled", 1),
        ("by_status.rejected", 1),
        ("cleaners.billing.attempts", 6),
        ("cleaners.billing.succeeded", 5),
        ("cleaners.crm.attempts", 7),
        ("cleaners.crm.succeeded", 4),
        ("cleaners.crm.exhausted", 1),
    ];
    let mut flat = BTreeMap::new();
    flatten(stats, "", &mut flat);
    for (path, want) in expect {
        assert_eq!(flat.get(path).map(|v| v.0), Some(f64::from(want)), "{path}");
    }
    let completed: f64 = flat
        .iter()
        .filter(|(k, _)| k.starts_with("completion.") && k.ends_with(".completed"))
        .map(|(_, v)| v.0)
        .sum();
    assert!((completed - 4.0).abs() < f64::EPSILON);
}

// ---------------------------------------------------------------------------------------------
// Through the router

async fn send(
    app: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

fn with_cookie(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

async fn the_page_shows_the_stats(store: TestStore) {
    let (app, seeded) = seeded(&store, config_with_tokens()).await;
    let (status, _, body) = send(&app, get("/v1/stats", Some(READER))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_known_workload(&stats);

    let (status, headers, html) = send(&app, get("/dashboard", Some(READER))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"));
    assert!(!html.contains("<script"), "the page needs no script");
    assert_page_matches_stats(&html, &stats);
    assert!(
        figures(&html).len() >= 30,
        "every figure of the workload is shown"
    );

    assert_eq!(listed(&html, "overdue"), [seeded.overdue.to_string()]);
    assert_eq!(
        listed(&html, "at-risk"),
        seeded.at_risk.map(|id| id.to_string()),
        "most urgent first"
    );
    // The completion chart has a bar pair per month with completions in the last year.
    let months = stats["completion"].as_object().unwrap().len();
    assert!(months >= 2, "the workload completes in several months");
    assert_eq!(html.matches("<rect class=\"median\"").count(), months);
}

#[tokio::test]
async fn tokens_by_header_query_and_cookie() {
    let store = support::sqlite().await;
    let (app, _) = seeded(&store, config_with_tokens()).await;

    // No token, a bad token, a token without requests:read: HTML pages, not JSON.
    let (status, headers, body) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert!(
        body.contains("requests:read") && body.contains("?token="),
        "{body}"
    );
    assert!(!body.contains("data-stat"));
    let (status, _, _) = send(&app, get("/dashboard", Some("not-a-token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, body) = send(&app, get("/dashboard", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.contains("lacks the scope"), "{body}");

    // ?token= with a good token: 303 to /dashboard with the token in an HttpOnly cookie.
    let (status, headers, _) = send(&app, get(&format!("/dashboard?token={READER}"), None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard");
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set_cookie.starts_with(&format!("lethe_token={READER};")),
        "{set_cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP here");
    let cookie = set_cookie.split(';').next().unwrap();
    let (status, _, html) = send(&app, with_cookie("/dashboard", &format!("a=1; {cookie}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-stat=\"total\""));
    // Behind a TLS-terminating proxy the cookie is Secure.
    let request = Request::get(format!("/dashboard?token={READER}"))
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(&app, request).await;
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    // ?token= with a bad or under-scoped token: no cookie.
    for (token, expected) in [
        ("nope", StatusCode::UNAUTHORIZED),
        ("a%3Bb", StatusCode::UNAUTHORIZED),
        (ADMIN, StatusCode::FORBIDDEN),
    ] {
        let (status, headers, _) =
            send(&app, get(&format!("/dashboard?token={token}"), None)).await;
        assert_eq!(status, expected, "?token={token}");
        assert!(!headers.contains_key(header::SET_COOKIE));
    }
    // A stale cookie is refused and cleared; an under-scoped one is refused.
    let (status, headers, _) = send(&app, with_cookie("/dashboard", "lethe_token=revoked")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _, _) = send(
        &app,
        with_cookie("/dashboard", &format!("lethe_token={ADMIN}")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn without_tokens_the_page_is_open() {
    let store = support::sqlite().await;
    let (app, _) = seeded(&store, Config::default()).await;
    let (status, _, html) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = send(&app, get("/v1/stats", None)).await;
    assert_page_matches_stats(&html, &serde_json::from_str(&body).unwrap());
    // A token in the address is dropped from it; there is nothing to keep.
    let (status, headers, _) = send(&app, get("/dashboard?token=whatever", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!headers.contains_key(header::SET_COOKIE));
}

#[tokio::test]
async fn an_empty_engine_and_one_without_read_models() {
    let store = support::sqlite().await;
    let database = store.database();
    let app = router(AppState {
        requests: engine(&database, Config::default()),
        key: MasterKey::from_bytes([7; 32]),
    });
    let (status, _, html) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No request has completed yet."));
    assert!(html.contains("Nothing is overdue."));
    let (_, _, body) = send(&app, get("/v1/stats", None)).await;
    assert_page_matches_stats(&html, &serde_json::from_str(&body).unwrap());

    let app = router(AppState {
        requests: Requests::new(database.events.clone(), Arc::new(Config::default())),
        key: MasterKey::from_bytes([7; 32]),
    });
    let (status, headers, body) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.contains("no read models"), "{body}");
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_page_shows_the_stats() {
        super::the_page_shows_the_stats(super::support::postgres().await).await;
    }
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_page_shows_the_stats() {
        super::the_page_shows_the_stats(super::support::sqlite().await).await;
    }
}

// ---------------------------------------------------------------------------------------------
// In a browser

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's Chromium: `/usr/bin/chromium`, or `chromium` on the PATH.
fn chromium() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("chromium"));
    std::iter::once(PathBuf::from("/usr/bin/chromium"))
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is needed for the dashboard's browser test and is not installed: run \
                 scripts/test.sh (which installs Debian's chromium package), or \
                 `apt-get install -y chromium`"
            )
        })
}

/// Runs headless Chromium with `args` (a fresh profile, no network beyond the page), at most
/// [`CHROMIUM_TIMEOUT`]: on timeout the browser process is killed (`kill_on_drop`; its helper
/// processes end with it). Returns its stdout.
async fn run_chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    // Dropping the unfinished future drops the child, which kills it.
    let Ok(output) = tokio::time::timeout(CHROMIUM_TIMEOUT, child.wait_with_output()).await else {
        panic!("Chromium did not finish within {CHROMIUM_TIMEOUT:?}: {args:?}");
    };
    let output = output.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Chromium failed ({}): {args:?}\n{stderr}",
        output.status
    );
    assert!(
        !stderr.contains("Content Security Policy"),
        "the page broke its own CSP:\n{stderr}"
    );
    stdout
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("test-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_the_stats() {
    let browser = chromium();
    let store = support::sqlite().await;
    let (app, seeded) = seeded(&store, config_with_tokens()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The browser opens the address with the token, is redirected, and shows the page with
    // the cookie: the whole sign-in flow.
    let url = format!("{base}/dashboard?token={READER}");
    let dom = run_chromium(&[
        "--enable-logging=stderr".into(),
        "--dump-dom".into(),
        url.clone(),
    ])
    .await;
    assert!(
        dom.contains("data-stat=\"total\""),
        "Chromium did not get the dashboard ({}):\n{dom}",
        browser.display()
    );
    let stats: Value = reqwest::Client::new()
        .get(format!("{base}/v1/stats"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_known_workload(&stats);
    assert_page_matches_stats(&dom, &stats);
    assert_eq!(listed(&dom, "overdue"), [seeded.overdue.to_string()]);

    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(&[
        format!("--screenshot={}", png.display()),
        "--window-size=1280,1600".into(),
        url,
    ])
    .await;
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "not a plausible screenshot: {} bytes",
        bytes.len()
    );
    println!(
        "dashboard screenshot: {}",
        png.canonicalize().unwrap_or(png).display()
    );
    server.abort();
}
