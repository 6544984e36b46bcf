//! The `subscriptions` table on both backends: every write to a subscription's row (taking or
//! renewing the lease, each subscriber's fenced checkpoint commit, a projection's restart)
//! stamps `updated_at` with the time of the write, and a refused commit changes nothing.

mod support;

use std::time::Duration;

use chrono::Utc;
use lethe_engine::projections::REQUESTS;
use lethe_engine::store::Checkpoint;
use lethe_engine::workflow::saga::SAGA;
use support::TestStore;

/// Puts every subscription's `updated_at` far in the past.
async fn age(store: &TestStore) {
    let old = if store.is_postgres() {
        "'2000-01-01T00:00:00Z'"
    } else {
        "'2000-01-01T00:00:00.000Z'"
    };
    store
        .execute(&format!("UPDATE subscriptions SET updated_at = {old}"))
        .await;
}

/// The subscription's `updated_at`, in seconds since the epoch.
async fn updated_at(store: &TestStore, name: &str) -> i64 {
    let sql = if store.is_postgres() {
        format!(
            "SELECT extract(epoch FROM updated_at)::int8 FROM subscriptions WHERE name = '{name}'"
        )
    } else {
        // The text must be a time SQLite reads, as the column's default writes it.
        format!(
            "SELECT CAST(strftime('%s', updated_at) AS INTEGER) FROM subscriptions \
             WHERE name = '{name}'"
        )
    };
    let found = store.fetch_integers(&sql).await;
    assert_eq!(found.len(), 1, "one row for {name}");
    found[0]
}

/// Asserts that `write` stamps subscription `name` with the time it ran.
async fn stamps<F: std::future::Future<Output = ()>>(
    store: &TestStore,
    name: &str,
    what: &str,
    write: F,
) {
    age(store).await;
    let before = Utc::now().timestamp();
    write.await;
    let after = Utc::now().timestamp();
    let at = updated_at(store, name).await;
    assert!(
        (before - 1..=after + 1).contains(&at),
        "{what} on {name}: updated_at is {at}, not between {before} and {after}"
    );
}

async fn every_write_stamps_updated_at(store: TestStore) {
    let database = store.database();
    let lease = Duration::from_secs(60);
    let at = Checkpoint {
        transaction_id: 0,
        position: 0,
    };
    for name in [SAGA, REQUESTS] {
        let taken = database
            .workflow
            .acquire_subscription(name, "a", lease, Utc::now())
            .await
            .unwrap();
        assert_eq!(taken, Some(Checkpoint::START));
        stamps(&store, name, "renewing the lease", async {
            let renewed = database
                .workflow
                .acquire_subscription(name, "a", lease, Utc::now())
                .await
                .unwrap();
            assert!(renewed.is_some());
        })
        .await;
    }
    stamps(&store, SAGA, "the saga's commit", async {
        let committed = database
            .workflow
            .commit_subscription(SAGA, "a", at, &[])
            .await
            .unwrap();
        assert!(committed);
    })
    .await;
    stamps(&store, REQUESTS, "the projection's commit", async {
        let committed = database
            .projections
            .commit_requests("a", at, &[])
            .await
            .unwrap();
        assert!(committed);
    })
    .await;
    stamps(&store, REQUESTS, "the projection's restart", async {
        database.projections.reset(REQUESTS, "b").await.unwrap();
    })
    .await;

    // A deposed owner's commit is refused and leaves the row as it was.
    age(&store).await;
    let refused = database
        .workflow
        .commit_subscription(SAGA, "deposed", at, &[])
        .await
        .unwrap();
    assert!(!refused);
    let refused = database
        .projections
        .commit_requests("a", at, &[])
        .await
        .unwrap();
    assert!(!refused, "the restart gave the projection to b");
    for name in [SAGA, REQUESTS] {
        assert_eq!(updated_at(&store, name).await, 946_684_800, "{name}");
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_stamps_updated_at() {
        super::every_write_stamps_updated_at(super::support::postgres().await).await;
    }
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_stamps_updated_at() {
        super::every_write_stamps_updated_at(super::support::sqlite().await).await;
    }
}
