//! In a browser, by clicking: Debian's headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini) signs in with `?token=`, opens the request list and request
//! pages, and takes every action of the request page as a person would: types the reason
//! (and the days), ticks "I confirm", presses the button; then reads the outcome and the
//! timeline's new event with the operator's actor. Screenshots of the list and of a request
//! page with its actions go to `target/test-artifacts/`.

use std::net::TcpListener;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::actions::{awaiting_approval, fixture, needing_attention, pending, Fixture};
use super::browser::{artifacts_dir, chromium, installed};
use super::support::engine::eventually;
use super::*;

const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free port of 127.0.0.1, killed when dropped; ready once its `/status`
/// says so.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(installed("chromedriver", "chromium-driver"))
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let http = reqwest::Client::new();
        eventually(WAIT, "chromedriver answers /status ready", || {
            let request = http.get(&status).send();
            async move {
                let body: Value = request.await.ok()?.json().await.ok()?;
                (body["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        Self { _child: child, url }
    }

    async fn browser(&self, profile: &Path) -> Client {
        let options = serde_json::json!({
            "binary": chromium().display().to_string(),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

/// The timeline's rows as the browser shows them: (event type, actor).
async fn timeline(client: &Client) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for row in client
        .find_all(Locator::Css("#timeline tr[data-event]"))
        .await
        .unwrap()
    {
        rows.push((
            row.attr("data-event").await.unwrap().unwrap(),
            row.attr("data-actor").await.unwrap().unwrap(),
        ));
    }
    rows
}

/// Fills the action's form on the page shown, ticks "I confirm", presses its button and
/// waits for the page it leads to (its timeline longer than `before`); returns the outcome
/// shown there.
async fn click(client: &Client, selector: &str, fields: &[(&str, &str)], before: usize) -> String {
    let form = client.find(Locator::Css(selector)).await.unwrap();
    for (name, value) in fields {
        form.find(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    form.find(Locator::Css("input[name=confirm]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(
        WAIT,
        "the page after the action shows its outcome",
        || async {
            let rows = client
                .find_all(Locator::Css("#timeline tr[data-event]"))
                .await
                .ok()?;
            if rows.len() <= before {
                return None;
            }
            let outcome = client.find(Locator::Css("[data-outcome]")).await.ok()?;
            let kind = outcome.attr("data-outcome").await.ok()??;
            Some(format!("{kind}: {}", outcome.text().await.ok()?))
        },
    )
    .await
}

/// One click-through: the request, the form's `data-action` (and cleaner), the fields typed,
/// the outcome shown and the event recorded.
type Click = (
    RequestId,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

/// Every action, in an order each request's state allows.
fn clicks(
    held: RequestId,
    expedited: RequestId,
    approved: RequestId,
    failing: RequestId,
) -> [Click; 8] {
    [
        (
            held,
            "hold",
            &[("reason", "litigation hold")],
            "Placed on hold.",
            "HoldPlaced",
        ),
        (
            held,
            "release",
            &[("reason", "case closed")],
            "The hold is released.",
            "HoldReleased",
        ),
        (
            held,
            "extend",
            &[("days", "14"), ("reason", "complex request")],
            "The deadline is extended by 14 days.",
            "DeadlineExtended",
        ),
        (
            held,
            "reject",
            &[("reason", "not a customer")],
            "Rejected.",
            "Rejected",
        ),
        (
            expedited,
            "expedite",
            &[("reason", "the subject asked")],
            "Expedited: the request is due now.",
            "Due",
        ),
        (
            approved,
            "approve",
            &[("reason", "identity checked")],
            "Approved: the grace period starts now.",
            "Approved",
        ),
        (
            failing,
            "retry\"][data-cleaner=\"crm",
            &[("reason", "crm is back")],
            "Cleaner crm gets another round of attempts.",
            "CleanerRetried",
        ),
        (
            failing,
            "skip\"][data-cleaner=\"crm",
            &[("reason", "crm erased by hand")],
            "Cleaner crm is skipped.",
            "CleanerSkipped",
        ),
    ]
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_takes_every_action_by_clicking() {
    chromium();
    let store = support::sqlite().await;
    let Fixture {
        app,
        requests,
        database,
    } = fixture(&store).await;
    let held = pending(&requests, 1).await;
    let expedited = pending(&requests, 2).await;
    let approved = awaiting_approval(&requests, 1).await;
    let failing = needing_attention(&requests, 1).await;
    lethe_engine::projections::catch_up(&database.events, &database.projections)
        .await
        .unwrap();
    let (base, server) = support::serve_router(app).await;
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let client = driver.browser(profile.path()).await;
    let operator = "token:operator".to_owned();

    // Sign in: the token is moved into the cookie and the address is clean.
    client
        .goto(&format!("{base}/dashboard?token={OPERATOR}"))
        .await
        .unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/dashboard");
    client
        .goto(&format!("{base}/dashboard/requests"))
        .await
        .unwrap();
    let rows = client
        .find_all(Locator::Css("#requests tr[data-request]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    screenshot(&client, "dashboard-requests.png").await;

    // From the list to a request page, by its link.
    client
        .find(Locator::Css(&format!(
            "a[href='/dashboard/requests/{held}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for (id, action, fields, message, event) in clicks(held, expedited, approved, failing) {
        let page = format!("{base}/dashboard/requests/{id}");
        if client.current_url().await.unwrap().as_str() != page {
            client.goto(&page).await.unwrap();
        }
        let before = timeline(&client).await.len();
        let selector = format!("form[data-action=\"{action}\"]");
        let outcome = click(&client, &selector, fields, before).await;
        assert_eq!(outcome, format!("done: {message}"), "{action}");
        let after = timeline(&client).await;
        assert!(after.len() > before, "{action}: no new event");
        assert!(
            after[before..].contains(&(event.to_owned(), operator.clone())),
            "{action}: {after:?}"
        );
        if action.starts_with("retry") {
            // The request page with its outcome, cleaners, forms and timeline.
            screenshot(&client, "dashboard-request.png").await;
        }
    }
    // The log agrees with what the browser showed.
    let history = requests.history(failing, false).await.unwrap();
    let last = history.events.last().unwrap();
    assert_eq!(
        (last.event_type.as_str(), last.actor.as_str()),
        ("Completed", "token:operator")
    );
    assert_eq!(
        requests.show(held).await.unwrap().status.as_str(),
        "rejected"
    );
    client.close().await.unwrap();
    server.abort();
}
