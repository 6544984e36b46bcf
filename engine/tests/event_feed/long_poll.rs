//! Long-poll: an answer as soon as an event arrives, or empty after the wait.

use super::*;

async fn long_poll_answers_as_soon_as_an_event_arrives(t: TestStore) {
    let feed = Feed::new(t);
    story(feed.store.as_ref()).await;
    let before = settled(feed.store.as_ref(), 3).await;
    let after = id(before.last().unwrap());

    let started = Instant::now();
    let app = feed.app.clone();
    let path = format!("/v1/events?after={after}&wait=5");
    let request = tokio::spawn(async move { send(&app, &path, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !request.is_finished(),
        "nothing is new: the long-poll is still waiting"
    );
    let appended = append_stream(feed.store.as_ref(), &[cancelled()]).await;
    let reply = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("the long-poll answers")
        .unwrap();
    let elapsed = started.elapsed();
    let page = reply.page();
    assert_eq!(page.events.len(), 1, "{page:?}");
    assert_presents(&page.events[0], &appended[0]);
    assert_eq!(page.next, id(&appended[0]));
    assert!(
        elapsed < Duration::from_secs(4),
        "answered {elapsed:?} after the request, well before wait=5 ran out"
    );

    // Filtered: an event of another type does not end the wait; the wanted one does, and next
    // is past both.
    let after = page.next;
    let started = Instant::now();
    let app = feed.app.clone();
    let path = format!("/v1/events?after={after}&wait=5&types=Completed");
    let request = tokio::spawn(async move { send(&app, &path, &[]).await });
    let skipped = append_stream(feed.store.as_ref(), &[reminded()]).await;
    settled(feed.store.as_ref(), 5).await;
    assert!(
        !request.is_finished(),
        "only a skipped event is new: the long-poll is still waiting"
    );
    let wanted = append_stream(feed.store.as_ref(), &[completed()]).await;
    let page = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("the long-poll answers")
        .unwrap()
        .page();
    let elapsed = started.elapsed();
    assert_eq!(page.ids(), [id(&wanted[0])]);
    assert!(skipped[0].checkpoint() < wanted[0].checkpoint());
    assert_eq!(page.next, id(&wanted[0]));
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
}

async fn long_poll_with_nothing_new_answers_empty_after_the_wait(t: TestStore) {
    let feed = Feed::new(t);
    story(feed.store.as_ref()).await;
    let events = settled(feed.store.as_ref(), 3).await;
    let after = id(events.last().unwrap());

    let started = Instant::now();
    let page = feed.page(&format!("/v1/events?after={after}&wait=1")).await;
    let elapsed = started.elapsed();
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, after);
    assert!(
        elapsed >= Duration::from_millis(950),
        "waited {elapsed:?}, not the second asked"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "waited {elapsed:?}, far beyond the second asked"
    );

    // Skipped events do not end the wait either, but next moves past them.
    let started = Instant::now();
    let page = feed.page("/v1/events?types=Cancelled&wait=1").await;
    let elapsed = started.elapsed();
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, after);
    assert!(elapsed >= Duration::from_millis(950), "waited {elapsed:?}");

    // Without wait, nothing new is an immediate empty page.
    let page = feed.page(&format!("/v1/events?after={after}&wait=0")).await;
    assert!(page.events.is_empty());
    assert_eq!(page.next, after);
}
support::backends!(
    long_poll_answers_as_soon_as_an_event_arrives,
    long_poll_with_nothing_new_answers_empty_after_the_wait,
);
