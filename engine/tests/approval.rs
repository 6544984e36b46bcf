//! Optional approval over real HTTP, on both backends: a request from a source whose policy
//! requires approval awaits it (no reminders, nothing timed), counts as at risk near its
//! legal deadline, and `POST /v1/requests/{id}/approve` (scope `requests:approve` or `admin`)
//! starts its grace period from the approval, the legal deadline unchanged; reject still
//! works while it waits; a request not awaiting approval cannot be approved.

mod support;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use lethe_engine::app::Requests;
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::root::Database;
use lethe_engine::store::master_key::MasterKey;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::config::TestConfig;
use support::TestStore;

const ADMIN: &str = "lethe_admin-token-4567";
const APPROVER: &str = "lethe_approver-token-89";
const READER: &str = "lethe_reader-token-0123";

struct Api {
    base: String,
    http: reqwest::Client,
    database: Database,
    server: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn serve(t: &TestStore) -> Self {
        let config = TestConfig::new()
            .grace("10d")
            .reminders(&["2d"])
            .at_risk_days(40)
            .source_approval("support-desk", "required")
            .token("admin", &token_hash(ADMIN), &["admin"])
            .token("approver", &token_hash(APPROVER), &["requests:approve"])
            .token(
                "reader",
                &token_hash(READER),
                &["requests:read", "requests:write", "audit:read"],
            )
            .build();
        let database = t.database();
        let requests = Requests::new(database.events.clone(), Arc::new(config))
            .with_projections(database.projections.clone());
        let app = router(AppState {
            requests,
            key: MasterKey::from_bytes([3; 32]),
        });
        let (base, server) = support::serve_router(app).await;
        Self {
            base,
            http: reqwest::Client::new(),
            database,
            server,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn submit(&self, source: Option<&str>) -> Value {
        let mut body = json!({"subject": {"user_id": "42"}});
        if let Some(source) = source {
            body["source"] = json!(source);
        }
        let (status, body) = self.call("POST", "/v1/requests", READER, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn show(&self, id: &str) -> Value {
        let (status, body) = self
            .call("GET", &format!("/v1/requests/{id}"), READER, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn catch_up(&self) {
        lethe_engine::projections::catch_up(&self.database.events, &self.database.projections)
            .await
            .unwrap();
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn a_source_that_requires_approval_waits_for_it(t: TestStore) {
    let api = Api::serve(&t).await;
    let waiting = api.submit(Some("support-desk")).await;
    let plain = api.submit(Some("web")).await;
    assert_eq!(waiting["status"], "awaiting_approval", "{waiting}");
    assert_eq!(plain["status"], "pending", "{plain}");
    let id = waiting["id"].as_str().unwrap().to_owned();
    let shown = api.show(&id).await;
    assert_eq!(shown["reminders"], json!([]), "{shown}");
    assert_eq!(
        api.show(plain["id"].as_str().unwrap()).await["reminders"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Near its legal deadline (at_risk_days = 40), the waiting request is at risk. The
    // projection is caught up until it holds both requests (a commit may land late).
    let stats = support::engine::eventually(
        std::time::Duration::from_secs(10),
        "the projection holds both requests",
        || async {
            api.catch_up().await;
            let (_, stats) = api.call("GET", "/v1/stats", READER, None).await;
            (stats["total"] == 2).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["by_status"]["awaiting_approval"], 1, "{stats}");
    assert_eq!(stats["at_risk"], 2, "{stats}");
    let (status, list) = api
        .call(
            "GET",
            "/v1/requests?at_risk=true&status=awaiting_approval",
            READER,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{list}");
    api.server.abort();
}

async fn approval_starts_the_grace_period_and_keeps_the_deadline(t: TestStore) {
    let api = Api::serve(&t).await;
    let waiting = api.submit(Some("support-desk")).await;
    let id = waiting["id"].as_str().unwrap();
    let path = format!("/v1/requests/{id}/approve");
    // A reader may not approve; an approver may.
    let (status, _) = api.call("POST", &path, READER, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let before = Utc::now();
    let (status, approved) = api.call("POST", &path, APPROVER, None).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "pending", "{approved}");
    let due_at = time(&approved["due_at"]);
    assert!(
        due_at >= before + TimeDelta::days(10) && due_at <= Utc::now() + TimeDelta::days(10),
        "the grace period counts from the approval: {approved}"
    );
    assert_eq!(approved["deadline"], waiting["deadline"]);
    assert_eq!(
        time(&approved["reminders"][0]["at"]),
        due_at - TimeDelta::days(2)
    );
    let (status, history) = api
        .call("GET", &format!("/v1/requests/{id}/history"), READER, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let last = history["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "Approved", "{last}");
    assert_eq!(last["actor"], "token:approver", "{last}");
    // Once approved, it no longer awaits approval: 409.
    let (status, problem) = api.call("POST", &path, ADMIN, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("does not await approval"));
    // Neither does a request under no approval rule.
    let plain = api.submit(None).await;
    let (status, _) = api
        .call(
            "POST",
            &format!("/v1/requests/{}/approve", plain["id"].as_str().unwrap()),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    api.server.abort();
}

async fn a_request_awaiting_approval_may_still_be_rejected(t: TestStore) {
    let api = Api::serve(&t).await;
    let waiting = api.submit(Some("support-desk")).await;
    let id = waiting["id"].as_str().unwrap();
    let (status, rejected) = api
        .call(
            "POST",
            &format!("/v1/requests/{id}/reject"),
            ADMIN,
            Some(json!({"reason": "not a customer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(rejected["status"], "rejected");
    let (status, _) = api
        .call("POST", &format!("/v1/requests/{id}/approve"), ADMIN, None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    api.server.abort();
}

/// Approve and expedite record in their events the reason they were given, as hold and reject
/// do; an empty body records none (the event keeps its old shape).
async fn approve_and_expedite_record_their_reasons(t: TestStore) {
    let api = Api::serve(&t).await;
    let history = |id: String| {
        let api = &api;
        async move {
            let (status, history) = api
                .call("GET", &format!("/v1/requests/{id}/history"), READER, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{history}");
            history["events"].as_array().unwrap().clone()
        }
    };
    let event = |events: &[Value], kind: &str| -> Value {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {events:?}"))["data"]
            .clone()
    };
    let id = api.submit(Some("support-desk")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, token, reason) in [
        ("approve", APPROVER, "identity checked by phone"),
        ("expedite", ADMIN, "the subject wrote again"),
    ] {
        let (status, body) = api
            .call(
                "POST",
                &format!("/v1/requests/{id}/{path}"),
                token,
                Some(json!({ "reason": reason })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let events = history(id).await;
    assert_eq!(
        event(&events, "Approved")["reason"],
        "identity checked by phone"
    );
    let due = event(&events, "Due");
    assert_eq!(
        (&due["reason"], &due["expedited"]),
        (&json!("the subject wrote again"), &json!(true))
    );

    let plain = api.submit(Some("support-desk")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = api
        .call(
            "POST",
            &format!("/v1/requests/{plain}/approve"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let approved = event(&history(plain.clone()).await, "Approved");
    assert!(approved.get("reason").is_none(), "{approved}");
    // A reason that is not text is refused, and nothing is recorded.
    let (status, body) = api
        .call(
            "POST",
            &format!("/v1/requests/{plain}/expedite"),
            ADMIN,
            Some(json!({ "reason": 7 })),
        )
        .await;
    assert!(status.is_client_error(), "{status}: {body}");
    assert!(history(plain).await.iter().all(|e| e["type"] != "Due"));
    api.server.abort();
}

support::backends!(
    approve_and_expedite_record_their_reasons,
    a_source_that_requires_approval_waits_for_it,
    approval_starts_the_grace_period_and_keeps_the_deadline,
    a_request_awaiting_approval_may_still_be_rejected,
);
