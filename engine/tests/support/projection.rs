//! The `requests` projection driven by hand: a subscription runner on a test database, run
//! until it has caught up with the log.

use std::sync::Arc;

use lethe_domain::event::PlannedCleaner;
use lethe_domain::CleanerName;
use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::projections::{RequestFilter, RequestsProjector, REQUESTS};
use lethe_engine::root::Database;
use lethe_engine::subscriptions::SubscriptionRunner;
use lethe_projections::requests::RequestRow;

/// The application service over `database`, with its projections and the default config.
pub fn requests(database: &Database) -> Requests {
    Requests::new(database.events.clone(), Arc::new(Config::default()))
        .with_projections(database.projections.clone())
}

pub fn runner(database: &Database, owner: &str) -> SubscriptionRunner {
    SubscriptionRunner {
        events: database.events.clone(),
        subscriptions: database.projections.clone(),
        owner: owner.to_owned(),
        lease: std::time::Duration::from_secs(30),
        poll_interval: std::time::Duration::from_millis(10),
    }
}

/// Runs the projector until it has caught up with everything appended so far.
pub async fn catch_up(database: &Database, runner: &SubscriptionRunner) {
    let projector = RequestsProjector {
        store: database.projections.clone(),
    };
    let head = database.events.head_position().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = runner.round(&projector).await.unwrap();
        let at = database
            .workflow
            .subscription_checkpoint(REQUESTS)
            .await
            .unwrap()
            .unwrap_or_default();
        if n == 0 && at.position >= head {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projection did not catch up"
        );
        if n == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Every row of the `requests` projection, read `page` rows at a time.
pub async fn all_rows(database: &Database, page: u32) -> Vec<RequestRow> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let next = database
            .projections
            .list_requests(&RequestFilter::default(), after, page)
            .await
            .unwrap();
        let Some(last) = next.last() else { break };
        after = Some(last.id);
        rows.extend(next);
    }
    rows
}

/// The plan of the tests' due requests: `billing` and `crm`, two attempts each.
pub fn plan() -> Vec<PlannedCleaner> {
    ["billing", "crm"]
        .iter()
        .map(|n| PlannedCleaner {
            name: CleanerName::parse(*n).unwrap(),
            max_attempts: 2,
            stores: Vec::new(),
        })
        .collect()
}
