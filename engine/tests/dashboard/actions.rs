//! Through the router: the request page's actions. Each one posted as the browser posts it
//! (the session cookie, the page's CSRF token, the confirmation), recorded with the token's
//! actor as the API records it, and its outcome shown once on the page it redirects to; the
//! refusals: CSRF (missing, another session's, another site), scope, no confirmation.

use super::requests::timeline;
use super::router::send;
use super::*;

const HOST: &str = "lethe.test:8080";

/// A request in each state the actions need, on an engine without workers.
pub(crate) struct Fixture {
    pub(crate) app: axum::Router,
    pub(crate) requests: Requests,
    pub(crate) database: Database,
}

pub(crate) async fn fixture(store: &TestStore) -> Fixture {
    let database = store.database();
    let config = tokens().source_approval("review", "required").build();
    let requests = engine(&database, config);
    let app = router(AppState {
        requests: requests.clone(),
        key: MasterKey::from_bytes([7; 32]),
    });
    Fixture {
        app,
        requests,
        database,
    }
}

pub(crate) async fn pending(requests: &Requests, n: usize) -> RequestId {
    submitted(requests, 100 + n).await
}

pub(crate) async fn awaiting_approval(requests: &Requests, n: usize) -> RequestId {
    let submission = Submission {
        subject: BTreeMap::from([("user_id".to_owned(), format!("review-{n}"))]),
        source: Some("review".into()),
        ..Submission::default()
    };
    let id = requests
        .submit(submission, None, "test")
        .await
        .unwrap()
        .loaded
        .request
        .id;
    assert_eq!(
        requests.show(id).await.unwrap().status.as_str(),
        "awaiting_approval"
    );
    id
}

/// Due, billing succeeded, crm failed both attempts: needs attention.
pub(crate) async fn needing_attention(requests: &Requests, n: usize) -> RequestId {
    let id = submitted(requests, 200 + n).await;
    let now = now_micros();
    run(requests, id, due(now, &["billing", "crm"], true)).await;
    run(requests, id, success("billing", 1, now)).await;
    run(requests, id, failure("crm", 1, now)).await;
    run(requests, id, failure("crm", 2, now)).await;
    id
}

/// The page's CSRF token for `token`'s session.
async fn csrf_of(app: &axum::Router, id: RequestId, token: &str) -> String {
    let (status, _, html) = send(
        app,
        with_session(Request::get(format!("/dashboard/requests/{id}")), token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let at = html.find("name=\"csrf\" value=\"").expect("a form") + 19;
    html[at..at + 64].to_owned()
}

fn with_session(builder: axum::http::request::Builder, token: &str) -> Request<Body> {
    builder
        .header(header::COOKIE, format!("lethe_token={token}"))
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap()
}

/// A form POST as a browser sends it from the page: the cookie, same-origin headers.
fn post(id: RequestId, token: &str, fields: &[(&str, &str)]) -> Request<Body> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    Request::post(format!("/dashboard/requests/{id}/actions"))
        .header(header::COOKIE, format!("lethe_token={token}"))
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap()
}

/// Posts `action` as `token` with a valid CSRF token and the confirmation; follows the
/// redirect with the outcome cookie and returns the outcome shown and the page.
pub(crate) async fn act(
    app: &axum::Router,
    id: RequestId,
    token: &str,
    fields: &[(&str, &str)],
) -> (String, String) {
    let csrf = csrf_of(app, id, token).await;
    act_with(app, id, token, fields, &csrf).await
}

/// [`act`] with the CSRF token of a page loaded earlier (a stale page's form).
pub(crate) async fn act_with(
    app: &axum::Router,
    id: RequestId,
    token: &str,
    fields: &[(&str, &str)],
    csrf: &str,
) -> (String, String) {
    let mut all = vec![("csrf", csrf), ("confirm", "yes")];
    all.extend_from_slice(fields);
    let (status, headers, body) = send(app, post(id, token, &all)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{fields:?}: {body}");
    let page = format!("/dashboard/requests/{id}");
    assert_eq!(headers[header::LOCATION], page.as_str());
    let outcome = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(outcome.contains(&format!("Path={page};")), "{outcome}");
    assert!(outcome.contains("HttpOnly") && outcome.contains("SameSite=Strict"));
    let outcome = outcome.split(';').next().unwrap();
    let request = Request::get(&page)
        .header(header::COOKIE, format!("lethe_token={token}; {outcome}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, html) = send(app, request).await;
    assert_eq!(status, StatusCode::OK);
    // Shown once: the page clears it.
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let at = html.find("data-outcome=\"").expect("an outcome") + 14;
    let kind = &html[at..at + html[at..].find('"').unwrap()];
    let text_at = at + html[at..].find('>').unwrap() + 1;
    let text = &html[text_at..text_at + html[text_at..].find("</p>").unwrap()];
    (format!("{kind}: {text}"), html)
}

/// The last event of `id`'s timeline as the page shows it.
fn last_event(html: &str) -> (String, String) {
    timeline(html).pop().unwrap()
}

/// The reason recorded in the request's last event of type `kind`.
async fn reason_in(requests: &Requests, id: RequestId, kind: &str) -> Value {
    let history = requests.history(id, false).await.unwrap();
    let event = history.events.iter().rev().find(|e| e.event_type == kind);
    event.map_or(Value::Null, |e| e.data["reason"].clone())
}

async fn version(requests: &Requests, id: RequestId) -> i64 {
    requests.show(id).await.unwrap().version
}

#[tokio::test]
async fn hold_release_extend_and_reject_are_recorded_with_the_operators_actor() {
    let store = support::sqlite().await;
    let Fixture { app, requests, .. } = fixture(&store).await;
    let operator = "token:operator".to_owned();

    let id = pending(&requests, 1).await;
    let (outcome, html) = act(
        &app,
        id,
        OPERATOR,
        &[("action", "hold"), ("reason", "audit")],
    )
    .await;
    assert_eq!(outcome, "done: Placed on hold.");
    assert_eq!(last_event(&html), ("HoldPlaced".into(), operator.clone()));
    assert!(html.contains("data-status=\"on_hold\""));
    assert!(html.contains("audit"));
    let (outcome, html) = act(
        &app,
        id,
        OPERATOR,
        &[("action", "release"), ("reason", "done")],
    )
    .await;
    assert_eq!(outcome, "done: The hold is released.");
    assert_eq!(last_event(&html), ("HoldReleased".into(), operator.clone()));
    let before = requests.show(id).await.unwrap().deadline;
    let (outcome, html) = act(
        &app,
        id,
        OPERATOR,
        &[("action", "extend"), ("days", "10"), ("reason", "complex")],
    )
    .await;
    assert_eq!(outcome, "done: The deadline is extended by 10 days.");
    assert_eq!(
        last_event(&html),
        ("DeadlineExtended".into(), operator.clone())
    );
    let after = requests.show(id).await.unwrap().deadline;
    assert_eq!(after - before, TimeDelta::days(10));
    let stale = csrf_of(&app, id, OPERATOR).await;
    let (outcome, html) = act(
        &app,
        id,
        OPERATOR,
        &[("action", "reject"), ("reason", "no account")],
    )
    .await;
    assert_eq!(outcome, "done: Rejected.");
    assert_eq!(last_event(&html), ("Rejected".into(), operator.clone()));
    // Closed now: no forms, and a stale form's post is the domain's refusal in words.
    assert!(!html.contains("data-action=\"hold\""));
    let (outcome, _) = act_with(
        &app,
        id,
        OPERATOR,
        &[("action", "hold"), ("reason", "x")],
        &stale,
    )
    .await;
    assert_eq!(
        outcome,
        "refused: cannot hold: the request is rejected and can no longer change"
    );
}

#[tokio::test]
async fn expedite_and_approve_are_recorded_with_the_operators_actor() {
    let store = support::sqlite().await;
    let Fixture { app, requests, .. } = fixture(&store).await;
    let operator = "token:operator".to_owned();
    let id = pending(&requests, 2).await;
    let (outcome, html) = act(
        &app,
        id,
        OPERATOR,
        &[("action", "expedite"), ("reason", "asked")],
    )
    .await;
    assert_eq!(outcome, "done: Expedited: the request is due now.");
    assert!(
        timeline(&html).contains(&("Due".into(), operator.clone())),
        "{html}"
    );
    assert_eq!(reason_in(&requests, id, "Due").await, "asked");

    let id = awaiting_approval(&requests, 1).await;
    let (outcome, html) = act(
        &app,
        id,
        OPERATOR,
        &[("action", "approve"), ("reason", "ok")],
    )
    .await;
    assert_eq!(outcome, "done: Approved: the grace period starts now.");
    assert_eq!(last_event(&html), ("Approved".into(), operator.clone()));
    assert_eq!(reason_in(&requests, id, "Approved").await, "ok");
}

#[tokio::test]
async fn a_cleaner_is_retried_and_skipped_with_the_operators_actor() {
    let store = support::sqlite().await;
    let Fixture { app, requests, .. } = fixture(&store).await;
    let operator = "token:operator".to_owned();
    let id = needing_attention(&requests, 1).await;
    let (_, _, html) = send(
        &app,
        with_session(Request::get(format!("/dashboard/requests/{id}")), OPERATOR),
    )
    .await;
    assert!(html.contains("data-action=\"retry\" data-cleaner=\"crm\""));
    assert!(!html.contains("data-action=\"retry\" data-cleaner=\"billing\""));
    let fields = [("action", "retry"), ("cleaner", "crm"), ("reason", "fixed")];
    let (outcome, html) = act(&app, id, OPERATOR, &fields).await;
    assert_eq!(outcome, "done: Cleaner crm gets another round of attempts.");
    assert_eq!(
        last_event(&html),
        ("CleanerRetried".into(), operator.clone())
    );
    assert_eq!(reason_in(&requests, id, "CleanerRetried").await, "fixed");
    // Retried: no longer exhausted, so a second retry is refused by the domain.
    let (outcome, _) = act(&app, id, OPERATOR, &fields).await;
    assert!(
        outcome.starts_with("refused: cannot retry cleaner crm: "),
        "{outcome}"
    );
    let fields = [("action", "skip"), ("cleaner", "crm"), ("reason", "gone")];
    let (outcome, html) = act(&app, id, OPERATOR, &fields).await;
    assert_eq!(outcome, "done: Cleaner crm is skipped.");
    let events = timeline(&html);
    assert!(events.contains(&("CleanerSkipped".into(), operator.clone())));
    assert_eq!(events.last().unwrap().0, "Completed");
}

#[tokio::test]
async fn refusals_change_nothing() {
    let store = support::sqlite().await;
    let Fixture { app, requests, .. } = fixture(&store).await;
    let id = pending(&requests, 3).await;
    let good = csrf_of(&app, id, OPERATOR).await;
    let good = good.as_str();
    let others = csrf_of(&app, id, APPROVER).await;
    let others = others.as_str();

    for (name, request, status, says) in refusal_cases(id, good, others) {
        let (got, headers, html) = send(&app, request).await;
        assert_eq!(got, status, "{name}: {html}");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{name}"
        );
        assert!(html.contains(says), "{name}: {html}");
        assert_eq!(
            version(&requests, id).await,
            1,
            "{name} changed the request"
        );
    }
    // The same form with everything right is accepted: the refusals above were the checks.
    let (status, _, _) = send(&app, post(id, OPERATOR, &hold(good))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(version(&requests, id).await, 2);
}

#[tokio::test]
async fn forms_follow_the_scopes() {
    let store = support::sqlite().await;
    let Fixture { app, requests, .. } = fixture(&store).await;
    let id = awaiting_approval(&requests, 2).await;
    let page = |token: &'static str| {
        let app = app.clone();
        async move {
            send(
                &app,
                with_session(Request::get(format!("/dashboard/requests/{id}")), token),
            )
            .await
            .2
        }
    };
    let forms = |html: &str| -> Vec<String> {
        html.split("data-action=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_owned())
            .collect()
    };
    assert!(forms(&page(READER).await).is_empty());
    assert_eq!(forms(&page(APPROVER).await), ["approve"]);
    assert_eq!(
        forms(&page(OPERATOR).await),
        ["hold", "release", "extend", "expedite", "approve", "reject"]
    );
    let (outcome, html) = act(
        &app,
        id,
        APPROVER,
        &[("action", "approve"), ("reason", "fine")],
    )
    .await;
    assert_eq!(outcome, "done: Approved: the grace period starts now.");
    // The approver holds no audit:read: its page has no timeline; an operator's shows the event.
    assert!(html.contains("needs a token with the scope <code>audit:read</code>"));
    assert_eq!(
        last_event(&page(OPERATOR).await),
        ("Approved".into(), "token:approver".into())
    );
    // The same actor as the API records for the same token.
    let (status, _, _) = send(
        &app,
        Request::post(format!("/v1/requests/{id}/hold"))
            .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"reason":"api"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, html) = send(
        &app,
        with_session(Request::get(format!("/dashboard/requests/{id}")), OPERATOR),
    )
    .await;
    assert_eq!(
        last_event(&html),
        ("HoldPlaced".into(), "token:operator".into())
    );
}

/// A refused POST: what it is, the request, the status and what the page says.
type Refusal = (&'static str, Request<Body>, StatusCode, &'static str);

/// POSTs that must change nothing: `good` is the operator's CSRF token, `others` the
/// approver's.
fn refusal_cases(id: RequestId, good: &str, others: &str) -> Vec<Refusal> {
    let mut cases: Vec<Refusal> = vec![
        (
            "no CSRF token",
            post(id, OPERATOR, &hold("")),
            StatusCode::FORBIDDEN,
            "no CSRF token",
        ),
        (
            "another session's",
            post(id, OPERATOR, &hold(others)),
            StatusCode::FORBIDDEN,
            "is not this session",
        ),
        (
            "unconfirmed",
            post(
                id,
                OPERATOR,
                &[("action", "hold"), ("reason", "r"), ("csrf", good)],
            ),
            StatusCode::BAD_REQUEST,
            "tick &quot;I confirm&quot;",
        ),
        (
            "no reason",
            post(
                id,
                OPERATOR,
                &[("action", "hold"), ("confirm", "yes"), ("csrf", good)],
            ),
            StatusCode::BAD_REQUEST,
            "reason: is required",
        ),
        (
            "bad days",
            post(
                id,
                OPERATOR,
                &[
                    ("action", "extend"),
                    ("days", "0"),
                    ("reason", "r"),
                    ("confirm", "yes"),
                    ("csrf", good),
                ],
            ),
            StatusCode::BAD_REQUEST,
            "days: must be",
        ),
        (
            "unknown action",
            post(
                id,
                OPERATOR,
                &[("action", "erase"), ("confirm", "yes"), ("csrf", good)],
            ),
            StatusCode::BAD_REQUEST,
            "action: &quot;erase&quot; is not one of",
        ),
        // The approver may sign in and approve, not hold: 403 even with its own valid token.
        (
            "out of scope",
            post(id, APPROVER, &hold(others)),
            StatusCode::FORBIDDEN,
            "lacks the scope admin",
        ),
    ];
    cases.extend(header_refusals(id, good));
    cases
}

/// POSTs with the operator's good form refused for their headers: another site, not a form,
/// no session.
fn header_refusals(id: RequestId, good: &str) -> Vec<Refusal> {
    let mut cases = Vec::new();
    let mut cross_origin = post(id, OPERATOR, &hold(good));
    cross_origin
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    cross_origin.headers_mut().remove("sec-fetch-site");
    cases.push((
        "cross-site Origin",
        cross_origin,
        StatusCode::FORBIDDEN,
        "another origin",
    ));
    let mut cross_site = post(id, OPERATOR, &hold(good));
    cross_site
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    cases.push((
        "Sec-Fetch-Site",
        cross_site,
        StatusCode::FORBIDDEN,
        "another site",
    ));
    let mut not_a_form = post(id, OPERATOR, &hold(good));
    not_a_form
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    cases.push((
        "not a form",
        not_a_form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Nothing was done",
    ));
    let mut signed_out = post(id, OPERATOR, &hold(good));
    signed_out.headers_mut().remove(header::COOKIE);
    cases.push((
        "signed out",
        signed_out,
        StatusCode::UNAUTHORIZED,
        "Sign in",
    ));

    cases
}

fn hold(csrf: &str) -> [(&str, &str); 4] {
    [
        ("action", "hold"),
        ("reason", "r"),
        ("confirm", "yes"),
        ("csrf", csrf),
    ]
}
