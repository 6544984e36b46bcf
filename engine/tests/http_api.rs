//! The HTTP API through its router (`tower::ServiceExt::oneshot`, no socket), on both backends
//! (real Postgres, real SQLite): a submission answered 201 with its location and cancel token,
//! the same Idempotency-Key or external_id answered 200 with the first request and nothing
//! appended twice, the current state, the auditor's verified history, bad input answered 400
//! as `application/problem+json` naming the field (with nothing appended), the 64 KiB body
//! limit, unknown and malformed ids, and the health checks.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use lethe_domain::RequestId;
use lethe_engine::app::{Requests, MAX_REASON_LEN, MAX_TAGS};
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState, MAX_BODY_BYTES};
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{Checkpoint, GENESIS_HASH};
use serde_json::{json, Value};
use support::TestStore;
use tower::ServiceExt as _;

const KEY_BYTES: [u8; 32] = [0x5a; 32];
const SUBJECT_42: &str = r#"{"subject":{"user_id":"42"}}"#;
const PROBLEM_JSON: &str = "application/problem+json";

/// The router over a fresh store, and the store itself for looking around the API.
struct Api {
    app: Router,
    key: MasterKey,
    t: TestStore,
}

/// A response, fully read.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} {:?} is not JSON: {e}", self.status, self.text))
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
            .to_str()
            .unwrap()
    }

    /// Checks this is an RFC 9457 problem with `status`, and returns its body.
    fn problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header(header::CONTENT_TYPE), PROBLEM_JSON, "{self:?}");
        let body = self.json();
        assert_eq!(body["status"], status.as_u16(), "{self:?}");
        assert!(
            body["type"].as_str().is_some_and(|t| !t.is_empty()),
            "{self:?}"
        );
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{self:?}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|t| !t.is_empty()),
            "{self:?}"
        );
        body
    }

    /// Checks this is a 400 naming `field`.
    fn invalid(&self, field: &str) {
        let body = self.problem(StatusCode::BAD_REQUEST);
        assert_eq!(body["type"], "urn:lethe:problem:invalid-input", "{self:?}");
        assert_eq!(body["field"], field, "{self:?}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(field),
            "the detail names the field: {self:?}"
        );
    }
}

impl Api {
    fn new(t: TestStore) -> Self {
        let key = MasterKey::from_bytes(KEY_BYTES);
        let state = AppState {
            requests: Requests::new(t.store(), Arc::new(Config::default())),
            key: key.clone(),
        };
        Self {
            app: router(state),
            key,
            t,
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// `POST /v1/requests` with no content type, as `curl -d` sends it.
    async fn submit(&self, body: impl Into<Body>, idempotency_key: Option<&str>) -> Reply {
        let mut request = Request::builder().method(Method::POST).uri("/v1/requests");
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// Submits `body` and expects a new request; returns the answer's JSON.
    async fn submit_new(&self, body: &'static str, idempotency_key: Option<&str>) -> Value {
        let reply = self.submit(body, idempotency_key).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        reply.json()
    }

    /// How many events and streams the store holds, counted with SQL around the store (the
    /// global read on Postgres may lag behind commits, which would hide a duplicate).
    async fn counts(&self) -> (i64, i64) {
        let events = self.t.fetch_integers("SELECT COUNT(*) FROM events").await[0];
        let streams = self.t.fetch_integers("SELECT COUNT(*) FROM streams").await[0];
        (events, streams)
    }

    /// How many `Received` events the global read returns, once it has caught up with the
    /// `expected` count (or a deadline passed).
    async fn received_count(&self, expected: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self
                .t
                .store()
                .read_all(Checkpoint::START, 100)
                .await
                .unwrap();
            let received = events.iter().filter(|e| e.event_type == "Received").count();
            if received >= expected || tokio::time::Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Checks the store holds exactly `n` requests of one event each.
    async fn assert_requests(&self, n: usize) {
        let n_i64 = i64::try_from(n).unwrap();
        assert_eq!(self.counts().await, (n_i64, n_i64));
        assert_eq!(self.received_count(n).await, n);
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value} is no time: {e}"))
}

fn date(value: &Value) -> NaiveDate {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value} is no date: {e}"))
}

fn id_of(body: &Value) -> RequestId {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .parse()
        .unwrap()
}

async fn submit_answers_201_with_location_due_date_deadline_and_cancel_token(t: TestStore) {
    let api = Api::new(t);
    let reply = api.submit(SUBJECT_42, None).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert!(
        reply
            .header(header::CONTENT_TYPE)
            .starts_with("application/json"),
        "{reply:?}"
    );
    let body = reply.json();
    let id = id_of(&body);
    assert_eq!(reply.header(header::LOCATION), format!("/v1/requests/{id}"));
    assert_eq!(body["status"], "pending");

    let received_at = time(&body["received_at"]);
    assert!(
        (Utc::now() - received_at).abs() < TimeDelta::minutes(1),
        "{body}"
    );
    // The default grace period is 30 days.
    assert_eq!(
        time(&body["due_at"]) - received_at,
        TimeDelta::days(30),
        "{body}"
    );
    // GDPR: about one calendar month from the day of receipt.
    let deadline = date(&body["deadline"]);
    let received_on = received_at.date_naive();
    assert!(
        deadline > received_on + TimeDelta::days(26)
            && deadline <= received_on + TimeDelta::days(31),
        "{body}"
    );
    assert_eq!(body["cancel_token"], api.key.cancel_token(id));
    assert_ne!(
        body["cancel_token"],
        MasterKey::from_bytes([0; 32]).cancel_token(id),
        "the token depends on the key"
    );

    // The location leads to the request.
    let shown = api.get(reply.header(header::LOCATION)).await;
    assert_eq!(shown.status, StatusCode::OK, "{shown:?}");
    assert_eq!(id_of(&shown.json()), id);

    // Each submission is a new request with a token of its own.
    let other = api.submit_new(SUBJECT_42, None).await;
    assert_ne!(id_of(&other), id);
    assert_ne!(other["cancel_token"], body["cancel_token"]);
    api.assert_requests(2).await;
}

async fn show_answers_the_current_state(t: TestStore) {
    let api = Api::new(t);
    let submitted = api.submit_new(SUBJECT_42, None).await;
    let id = id_of(&submitted);

    let reply = api.get(&format!("/v1/requests/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let body = reply.json();
    assert_eq!(id_of(&body), id);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["jurisdiction"], "gdpr");
    assert_eq!(body["cleaners"], json!([]));
    assert_eq!(body["received_at"], submitted["received_at"]);
    assert_eq!(body["due_at"], submitted["due_at"]);
    assert_eq!(body["deadline"], submitted["deadline"]);
    assert_eq!(body["version"], 1);
    // The default policy reminds 7 days and 1 day before the end of the grace period.
    let due_at = time(&body["due_at"]);
    let reminders: Vec<_> = body["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (time(&r["at"]), r["sent"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        reminders,
        [
            (due_at - TimeDelta::days(7), false),
            (due_at - TimeDelta::days(1), false)
        ]
    );
    // The current state does not repeat the subject's identifiers.
    assert!(!reply.text.contains("user_id"), "{body}");
}

async fn history_lists_the_received_event_verified(t: TestStore) {
    let api = Api::new(t);
    let id = id_of(&api.submit_new(SUBJECT_42, None).await);

    let reply = api.get(&format!("/v1/requests/{id}/history")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["verified"], true, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    let event = &events[0];
    assert_eq!(event["type"], "Received");
    assert_eq!(event["version"], 1);
    assert!(event["position"].as_i64().unwrap() > 0, "{event}");
    assert!(
        event["actor"].as_str().is_some_and(|a| !a.is_empty()),
        "{event}"
    );
    assert!((Utc::now() - time(&event["recorded_at"])).abs() < TimeDelta::minutes(1));
    assert_eq!(event["data"]["subject"], json!({"user_id": "42"}));
    assert_eq!(event["prev_hash"], GENESIS_HASH);
    let hash = event["hash"].as_str().unwrap();
    assert!(
        hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );
    assert_ne!(hash, GENESIS_HASH);

    // What the API shows is what the store holds.
    let stored = api.t.store().read_stream(id, 0).await.unwrap();
    assert_eq!(event["hash"], stored[0].hash);
    assert_eq!(event["position"], stored[0].position);
    assert_eq!(event["actor"], stored[0].actor);
}

async fn history_reports_a_broken_chain(t: TestStore) {
    let api = Api::new(t);
    let body: &'static str = r#"{"subject":{"user_id":"42"},"source":"original"}"#;
    let id = id_of(&api.submit_new(body, None).await);
    // Both stores keep the payload as JSON text (ADR 12).
    api.t
        .execute(&format!(
            "UPDATE events SET payload = replace(payload, 'original', 'tamperex') \
             WHERE stream_id = '{id}'"
        ))
        .await;

    let reply = api.get(&format!("/v1/requests/{id}/history")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["verified"], false, "{body}");
    let position = api.t.store().read_stream(id, 0).await.unwrap()[0].position;
    assert_eq!(body["chain_error"]["position"], position, "{body}");
    assert_eq!(body["chain_error"]["version"], 1, "{body}");
}

async fn the_same_idempotency_key_answers_200_with_the_first_request(t: TestStore) {
    let api = Api::new(t);
    let first = api.submit(SUBJECT_42, Some("retry-me")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = api.submit(SUBJECT_42, Some("retry-me")).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    let (first_body, again_body) = (first.json(), again.json());
    assert_eq!(id_of(&again_body), id_of(&first_body));
    assert_eq!(again_body["due_at"], first_body["due_at"]);
    assert_eq!(again_body["cancel_token"], first_body["cancel_token"]);
    assert_eq!(
        again.header(header::LOCATION),
        first.header(header::LOCATION)
    );
    api.assert_requests(1).await;

    // Another key is another request.
    let other = api.submit_new(SUBJECT_42, Some("another")).await;
    assert_ne!(id_of(&other), id_of(&first_body));
    api.assert_requests(2).await;
}

async fn the_same_external_id_answers_200_with_the_first_request(t: TestStore) {
    let api = Api::new(t);
    let body: &'static str = r#"{"subject":{"user_id":"42"},"external_id":"crm-7"}"#;
    let first = api.submit_new(body, Some("key-a")).await;
    for key in [Some("key-b"), None] {
        let again = api.submit(body, key).await;
        assert_eq!(again.status, StatusCode::OK, "{key:?}: {again:?}");
        assert_eq!(id_of(&again.json()), id_of(&first), "{key:?}");
    }
    api.assert_requests(1).await;
    let shown = api.get(&format!("/v1/requests/{}", id_of(&first))).await;
    assert_eq!(shown.json()["external_id"], "crm-7");

    // Another external id is another request.
    let other = api
        .submit_new(
            r#"{"subject":{"user_id":"42"},"external_id":"crm-8"}"#,
            None,
        )
        .await;
    assert_ne!(id_of(&other), id_of(&first));
    api.assert_requests(2).await;
}

async fn bad_input_is_a_problem_naming_the_field_and_appends_nothing(t: TestStore) {
    let api = Api::new(t);
    let long_reason =
        json!({"subject": {"user_id": "42"}, "reason": "r".repeat(MAX_REASON_LEN + 1)});
    let many_tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    let many_tags = json!({"subject": {"user_id": "42"}, "tags": many_tags});
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "malformed JSON",
            r#"{"subject": {"user_id": "42""#.into(),
            None,
            "body",
        ),
        ("a string", r#""subject""#.into(), None, "body"),
        ("empty body", String::new(), None, "body"),
        ("whitespace body", " \n".into(), None, "body"),
        (
            "wrong type",
            r#"{"subject":{"user_id":42}}"#.into(),
            None,
            "subject.user_id",
        ),
        (
            "missing subject",
            r#"{"jurisdiction":"gdpr"}"#.into(),
            None,
            "subject",
        ),
        ("empty object", "{}".into(), None, "subject"),
        ("empty subject", r#"{"subject":{}}"#.into(), None, "subject"),
        (
            "empty value",
            r#"{"subject":{"user_id":""}}"#.into(),
            None,
            "subject.user_id",
        ),
        (
            "blank value",
            r#"{"subject":{"user_id":"  "}}"#.into(),
            None,
            "subject.user_id",
        ),
        (
            "unknown field",
            r#"{"subject":{"user_id":"42"},"colour":"red"}"#.into(),
            None,
            "colour",
        ),
        ("oversized reason", long_reason.to_string(), None, "reason"),
        ("too many tags", many_tags.to_string(), None, "tags"),
        (
            "unknown jurisdiction",
            r#"{"subject":{"user_id":"42"},"jurisdiction":"lgpd"}"#.into(),
            None,
            "jurisdiction",
        ),
        (
            "malformed jurisdiction",
            r#"{"subject":{"user_id":"42"},"jurisdiction":"GDPR!"}"#.into(),
            None,
            "jurisdiction",
        ),
        (
            "long Idempotency-Key",
            SUBJECT_42.into(),
            Some("k".repeat(300)),
            "Idempotency-Key",
        ),
        (
            "blank Idempotency-Key",
            SUBJECT_42.into(),
            Some("   ".into()),
            "Idempotency-Key",
        ),
    ];
    for (case, body, key, field) in cases {
        let reply = api.submit(body, key.as_deref()).await;
        println!("{case}: {reply:?}");
        reply.invalid(field);
    }
    assert_eq!(api.counts().await, (0, 0), "a rejected submission appended");

    // The longest key that is allowed works.
    let reply = api.submit(SUBJECT_42, Some(&"k".repeat(255))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
}

/// A submission is a JSON object (as /openapi.json says); serde's derive would also take a struct from a
/// JSON array of its fields in declaration order.
async fn a_json_array_is_not_a_submission(t: TestStore) {
    let api = Api::new(t);
    api.submit(r#"[{"user_id":"42"},null,null,null,null,[]]"#, None)
        .await
        .invalid("body");
    api.submit("[1, 2]", None).await.invalid("body");
    assert_eq!(
        api.counts().await,
        (0, 0),
        "an array was taken as a submission"
    );
}

async fn a_body_over_64_kib_is_refused_with_413(t: TestStore) {
    let api = Api::new(t);
    // A valid submission whose reason pads the body to exactly `len` bytes.
    let padded = |len: usize| {
        let (head, tail) = (r#"{"subject":{"user_id":"42"},"reason":""#, r#""}"#);
        let body = format!("{head}{}{tail}", "r".repeat(len - head.len() - tail.len()));
        assert_eq!(body.len(), len);
        body
    };
    let reply = api.submit(padded(MAX_BODY_BYTES + 1), None).await;
    reply.problem(StatusCode::PAYLOAD_TOO_LARGE);
    let reply = api.submit(padded(4 * MAX_BODY_BYTES), Some("big")).await;
    reply.problem(StatusCode::PAYLOAD_TOO_LARGE);
    // At the limit the body is read (and its reason is then too long).
    api.submit(padded(MAX_BODY_BYTES), None)
        .await
        .invalid("reason");
    assert_eq!(api.counts().await, (0, 0), "a refused body appended");
}

async fn unknown_and_malformed_ids(t: TestStore) {
    let api = Api::new(t);
    api.submit_new(SUBJECT_42, None).await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/v1/requests/{unknown}"),
        format!("/v1/requests/{unknown}/history"),
    ] {
        let reply = api.get(&path).await;
        let body = reply.problem(StatusCode::NOT_FOUND);
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&unknown.to_string()),
            "{body}"
        );
    }
    for path in ["/v1/requests/not-a-uuid", "/v1/requests/42/history"] {
        api.get(path).await.invalid("id");
    }
}

async fn health_and_readiness(t: TestStore) {
    let api = Api::new(t);
    for (path, text) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.text, text, "{path}");
    }
}

/// With its database gone the service is alive but not ready, and a submission is a 503 with
/// a generic message, not a 500 or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_database_the_service_is_not_ready() {
    let t = support::postgres().await;
    let TestStore::Postgres { store, .. } = &t else {
        unreachable!("support::postgres gives a Postgres store")
    };
    let pool = store.pool().clone();
    let api = Api::new(t);
    pool.close().await;

    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    api.get("/readyz")
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    let reply = api.submit(SUBJECT_42, None).await;
    let body = reply.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !reply.text.contains("PoolClosed"),
        "no internals leak: {body}"
    );
}

support::backends!(
    submit_answers_201_with_location_due_date_deadline_and_cancel_token,
    show_answers_the_current_state,
    history_lists_the_received_event_verified,
    history_reports_a_broken_chain,
    the_same_idempotency_key_answers_200_with_the_first_request,
    the_same_external_id_answers_200_with_the_first_request,
    bad_input_is_a_problem_naming_the_field_and_appends_nothing,
    a_body_over_64_kib_is_refused_with_413,
    a_json_array_is_not_a_submission,
    unknown_and_malformed_ids,
    health_and_readiness,
);
