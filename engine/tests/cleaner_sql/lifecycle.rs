//! Requests through an engine: submitted over HTTP, made due at once, erased by the sql
//! cleaner while the database is at first out of reach (a proxy refusing connections; for
//! SQLite, its file moved away), then erased again without harm.

use std::net::ToSocketAddrs as _;
use std::time::Duration;

use lethe_domain::{RequestId, RequestStatus};

use crate::sql_cleaner;
use crate::support::chaos_proxy::{ChaosProxy, Mode};
use crate::support::config::TestConfig;
use crate::support::engine::{eventually, TestEngine};
use crate::target::{seeded_without, Kind, Target};

crate::on_every_backend!(a_request_erases_its_rows_once_the_database_answers);

/// What keeps the database out of reach until [`Outage::end`].
enum Outage {
    Proxy(ChaosProxy),
    MovedFile { path: String },
}

impl Outage {
    /// The URL to give the cleaner, and the outage, begun.
    async fn begin(target: &Target) -> (String, Self) {
        let mut url = url::Url::parse(&target.url).unwrap();
        if target.kind == Kind::Sqlite {
            let path = url.path().to_owned();
            std::fs::rename(&path, format!("{path}.away")).unwrap();
            return (target.url.clone(), Self::MovedFile { path });
        }
        let server = (url.host_str().unwrap(), url.port().unwrap())
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap();
        let proxy = ChaosProxy::start(server).await;
        proxy.set(Mode::Refuse).await;
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(proxy.addr().port())).unwrap();
        (url.to_string(), Self::Proxy(proxy))
    }

    async fn end(&self) {
        match self {
            Self::Proxy(proxy) => proxy.set(Mode::Open).await,
            Self::MovedFile { path } => std::fs::rename(format!("{path}.away"), path).unwrap(),
        }
    }
}

async fn a_request_erases_its_rows_once_the_database_answers(target: Target) {
    let (url, outage) = Outage::begin(&target).await;
    let store = crate::support::sqlite().await;
    let config = TestConfig::new()
        .no_reminders()
        .cleaner(sql_cleaner(&url, "timeout = \"3s\"").retry(50, "100ms", "300ms", 1.5));
    let engine = TestEngine::spawn(&store, config).await;
    let subject = [("user_id", "42"), ("email", "subject@example.com")];
    let id = engine.submit_due(&subject).await;
    eventually(Duration::from_secs(30), "a failed attempt", || async {
        failed_attempts(&engine, id).await.then_some(())
    })
    .await;
    assert_eq!(
        target.rows().await,
        seeded_without(&[]),
        "nothing erased yet"
    );

    outage.end().await;
    engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(target.rows().await, seeded_without(&["42"]));

    // The same subject again: nothing more to erase, and the request completes.
    let again = engine.submit_due(&subject).await;
    engine
        .wait_for(again, RequestStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(target.rows().await, seeded_without(&["42"]));
    engine.stop().await;
}

async fn failed_attempts(engine: &TestEngine, id: RequestId) -> bool {
    let loaded = engine.load(id).await;
    loaded
        .events
        .iter()
        .any(|e| e.event_type == "CleanerFailed")
}
