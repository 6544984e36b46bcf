//! Appends and stream reads: optimistic concurrency, racing appenders and idempotent commands.

use super::*;

async fn append_and_read_back(t: TestStore) {
    let store = t.store();
    let id = new_id();
    let meta = EventMetadata {
        command_id: Some("cmd-1".to_owned()),
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        actor: "token:intake".to_owned(),
    };
    let first = written(
        store
            .append(id, 0, &[received(id), hold()], &meta)
            .await
            .unwrap(),
    );
    assert_eq!(first.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    assert!(first[0].position < first[1].position);

    let second = written(
        store
            .append(id, 2, &[reminded(0)], &EventMetadata::new("system:timers"))
            .await
            .unwrap(),
    );
    assert_eq!(second[0].version, 3);

    let stream = store.read_stream(id, 0).await.unwrap();
    assert_eq!(stream.len(), 3);
    // What was returned by append is exactly what is read back.
    assert_eq!(&stream[..2], &first[..]);
    assert_eq!(stream[2], second[0]);
    assert_eq!(stream[0].event().unwrap(), received(id));
    assert_eq!(stream[1].event().unwrap(), hold());
    assert_eq!(stream[1].actor, "token:intake");
    assert_eq!(stream[1].command_id.as_deref(), Some("cmd-1"));
    assert_eq!(stream[1].correlation_id, meta.correlation_id);
    assert_eq!(stream[1].causation_id, meta.causation_id);
    assert_eq!(stream[2].actor, "system:timers");
    assert_eq!(stream[2].command_id, None);
    assert_eq!(
        stream[0].schema_version,
        lethe_domain::event::SCHEMA_VERSION
    );
    for event in &stream {
        assert_eq!(event.event_id.get_version_num(), 7, "event ids are UUIDv7");
        assert!((Utc::now() - event.recorded_at).num_seconds().abs() < 60);
    }
    let ids: HashSet<_> = stream.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 3);

    assert_eq!(
        store.read_stream(id, 2).await.unwrap(),
        vec![second[0].clone()]
    );
    assert!(store.read_stream(new_id(), 0).await.unwrap().is_empty());

    // The audit read: the head, and the same events as read_stream.
    let (head, events) = store.read_stream_with_head(id).await.unwrap();
    let head = head.expect("the stream has a head");
    assert_eq!(events, stream);
    assert_eq!(head.version, 3);
    assert_eq!(head.last_hash, stream[2].hash);
    let (none, nothing) = store.read_stream_with_head(new_id()).await.unwrap();
    assert!(none.is_none() && nothing.is_empty());

    // Several streams at once: each stream's events in version order, a missing one absent.
    let other = new_id();
    store
        .append(other, 0, &[received(other)], &EventMetadata::new("t"))
        .await
        .unwrap();
    let both = store.read_streams(&[other, new_id(), id]).await.unwrap();
    let mut expected: Vec<RecordedEvent> = stream.clone();
    expected.extend(store.read_stream(other, 0).await.unwrap());
    expected.sort_by_key(|e| (e.stream_id.to_string(), e.version));
    let mut got = both.clone();
    got.sort_by_key(|e| (e.stream_id.to_string(), e.version));
    assert_eq!(got, expected);
    for stream_id in [id, other] {
        let versions: Vec<i64> = both
            .iter()
            .filter(|e| e.stream_id == stream_id)
            .map(|e| e.version)
            .collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }
    assert!(store.read_streams(&[]).await.unwrap().is_empty());
}

async fn wrong_expected_version_is_a_conflict(t: TestStore) {
    let store = t.store();
    let id = new_id();
    let meta = EventMetadata::new("test");
    store.append(id, 0, &[received(id)], &meta).await.unwrap();

    for expected in [0, 2, 7] {
        assert_eq!(
            conflict(store.append(id, expected, &[hold()], &meta).await),
            (id, expected, 1)
        );
    }
    assert_eq!(store.read_stream(id, 0).await.unwrap().len(), 1);
    // Appending to a stream that does not exist with a non-zero expectation also conflicts.
    let missing = new_id();
    assert!(matches!(
        store.append(missing, 3, &[hold()], &meta).await,
        Err(StoreError::Conflict { actual: 0, .. })
    ));
}

async fn racing_appenders_one_wins(t: TestStore) {
    let store = t.store();
    let id = new_id();
    store
        .append(id, 0, &[received(id)], &EventMetadata::new("test"))
        .await
        .unwrap();
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(id, 1, &[hold()], &EventMetadata::new("racer"))
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(StoreError::Conflict { .. }))))
        .count();
    assert_eq!((wins, conflicts), (1, 7), "{results:?}");
    let stream = store.read_stream(id, 0).await.unwrap();
    assert_eq!(stream.len(), 2);
    verify_chain(&stream, store.stream_head(id).await.unwrap().as_ref()).unwrap();
}

async fn retried_command_returns_first_result(t: TestStore) {
    let store = t.store();
    let id = new_id();
    let meta = EventMetadata::new("token:intake").with_command_id("submit:abc");
    let first = written(store.append(id, 0, &[received(id)], &meta).await.unwrap());

    // The retry carries a new request id (a fresh submission would), yet gets the first.
    let other = new_id();
    match store
        .append(other, 0, &[received(other)], &meta)
        .await
        .unwrap()
    {
        Appended::Duplicate(record) => {
            assert_eq!(record.stream_id, id);
            assert_eq!(record.command_id, "submit:abc");
            assert_eq!((record.first_version, record.last_version), (1, 1));
        }
        Appended::Written(events) => panic!("a retried command appended {events:?}"),
    }
    assert!(store.read_stream(other, 0).await.unwrap().is_empty());
    assert_eq!(read_settled(&*store, 1).await, first);
    assert_eq!(
        store
            .find_command("submit:abc")
            .await
            .unwrap()
            .unwrap()
            .stream_id,
        id
    );
    assert!(store.find_command("submit:other").await.unwrap().is_none());

    // Concurrent retries of one command: exactly one append.
    let key = EventMetadata::new("racer").with_command_id("submit:race");
    let racers = (0..6).map(|_| {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let id = new_id();
            store.append(id, 0, &[received(id)], &key).await.unwrap()
        })
    });
    let results = futures::future::join_all(racers).await;
    let writes = results
        .iter()
        .filter(|r| matches!(r, Ok(Appended::Written(_))))
        .count();
    assert_eq!(writes, 1, "{results:?}");
    assert_eq!(read_settled(&*store, 2).await.len(), 2);
}

support::backends!(
    worker_threads = 4;
    append_and_read_back,
    wrong_expected_version_is_a_conflict,
    racing_appenders_one_wins,
    retried_command_returns_first_result,
);
