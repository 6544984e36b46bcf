//! Gap safety (Postgres: SQLite has a single writer, so position order is commit order).

use super::*;

/// An event committed while an older transaction is still open is not served until that
/// transaction ends (it might still append an event before it); the feed is held back, never
/// moved past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_open_older_transaction_holds_the_feed_back() {
    let t = support::postgres().await;
    let TestStore::Postgres { store: pg, .. } = &t else {
        unreachable!()
    };
    let pg = pg.clone();
    let feed = Feed::new(t);
    let mut open = pg.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    let appended = append_stream(feed.store.as_ref(), &[due()]).await;

    let page = feed.page("/v1/events?wait=1").await;
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, Checkpoint::START.to_string(), "not moved past");

    open.commit().await.unwrap();
    let page = feed.page("/v1/events?wait=10").await;
    assert_eq!(page.ids(), [id(&appended[0])]);
}
