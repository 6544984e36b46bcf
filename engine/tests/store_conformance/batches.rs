//! Batches: each append answered alone and in order, commits shared, and bad payloads.

use super::*;

fn append(
    id: RequestId,
    expected_version: i64,
    events: Vec<Event>,
    command: Option<&str>,
) -> Append {
    let mut metadata = EventMetadata::new("token:batch");
    metadata.command_id = command.map(str::to_owned);
    Append {
        stream_id: id,
        expected_version,
        events,
        metadata,
        key: None,
    }
}

/// A batch large enough to be written as several transactions side by side still answers
/// each append in order: here 300 new streams with a conflict and a repeated command among
/// them, and two appends to one stream.
async fn a_large_batch_answers_each_append_in_order(t: TestStore) {
    let store = t.store();
    let taken = existing_stream(&*store, Some("large-taken")).await;
    let ids: Vec<RequestId> = (0..300).map(|_| new_id()).collect();
    let mut appends: Vec<Append> = ids
        .iter()
        .map(|id| append(*id, 0, vec![received(*id)], None))
        .collect();
    // 100: a conflict (the stream does not exist yet); 200: a command id seen before;
    // the last: a second append to stream 0, after its first.
    appends[100].expected_version = 5;
    appends[200].metadata.command_id = Some("large-taken".to_owned());
    appends.push(append(ids[0], 1, vec![hold()], None));
    let results = store.append_batch(appends).await;
    assert_eq!(results.len(), 301);
    for (n, result) in results.into_iter().enumerate() {
        match n {
            100 => assert!(
                matches!(&result, Err(StoreError::Conflict { .. })),
                "append 100: {result:?}"
            ),
            200 => assert!(
                matches!(&result, Ok(Appended::Duplicate(record)) if record.stream_id == taken),
                "append 200: {result:?}"
            ),
            300 => {
                let events = written(result.unwrap());
                assert_eq!((events[0].stream_id, events[0].version), (ids[0], 2));
            }
            _ => {
                let events = written(result.unwrap());
                assert_eq!((events[0].stream_id, events[0].version), (ids[n], 1));
                let stream = store.read_stream(ids[n], 0).await.unwrap();
                assert_eq!(stream[..1], events[..]);
            }
        }
    }
    assert!(store.read_stream(ids[100], 0).await.unwrap().is_empty());
    assert!(store.read_stream(ids[200], 0).await.unwrap().is_empty());
}

/// The store's key store (the same object as its event store).
fn key_store(t: &TestStore) -> Arc<dyn KeyStore> {
    match t {
        TestStore::Postgres { store, .. } => store.clone(),
        TestStore::Sqlite { store, .. } => store.clone(),
    }
}

/// A stream with one event (`Received`), appended under `command_id` if given, for appends
/// to meet.
async fn existing_stream(store: &dyn EventStore, command_id: Option<&str>) -> RequestId {
    let id = new_id();
    let mut metadata = EventMetadata::new("setup");
    if let Some(command_id) = command_id {
        metadata = metadata.with_command_id(command_id);
    }
    written(
        store
            .append(id, 0, &[received(id)], &metadata)
            .await
            .unwrap(),
    );
    id
}

/// A batch is written together, yet each append gets its own answer: new streams, existing
/// streams, a conflict, a repeated command, two appends to one stream, and a data key.
async fn batch_answers_each_append_alone(t: TestStore) {
    let store = t.store();
    let keys = key_store(&t);
    let existing = existing_stream(&*store, None).await;
    let taken = existing_stream(&*store, Some("taken")).await;

    let fresh = new_id();
    let keyed = new_id();
    let repeat = new_id();
    let released = new_id();
    let mut with_key = append(keyed, 0, vec![received(keyed), hold()], None);
    with_key.key = Some(NewKey {
        wrapped_key: "wrapped".to_owned(),
        indexes: vec!["index-a".to_owned(), "index-b".to_owned()],
    });
    let results = store
        .append_batch(vec![
            append(fresh, 0, vec![received(fresh)], Some("fresh")),
            append(existing, 1, vec![reminded(1)], None),
            // Same stream and version again: decided after the one before, so a conflict.
            append(existing, 1, vec![reminded(2)], None),
            // The next version of the same stream: written after the first.
            append(existing, 2, vec![reminded(3)], None),
            with_key,
            // A repeated command id, even for another stream: the first result.
            append(repeat, 0, vec![received(repeat)], Some("taken")),
            // An existing stream at version 0: a conflict, whose command id is given back.
            append(taken, 0, vec![received(taken)], Some("released")),
            append(released, 5, vec![hold()], None),
            append(new_id(), 0, vec![], None),
        ])
        .await;
    each_append_has_its_answer(results, existing, fresh, taken);

    // What the batch wrote reads back, chained, in version order; nothing else was written.
    let stream = store.read_stream(existing, 0).await.unwrap();
    assert_eq!(
        stream
            .iter()
            .map(|e| e.event().unwrap())
            .collect::<Vec<_>>(),
        [received(existing), reminded(1), reminded(3)]
    );
    for id in [existing, fresh, keyed, taken] {
        let events = store.read_stream(id, 0).await.unwrap();
        assert_eq!(verify_chain(&events, None), Ok(()), "stream {id}");
        let head = store.stream_head(id).await.unwrap().unwrap();
        assert_eq!(head.version, events.last().unwrap().version);
        assert_eq!(head.last_hash, events.last().unwrap().hash);
    }
    assert!(store.read_stream(repeat, 0).await.unwrap().is_empty());
    assert!(store.read_stream(released, 0).await.unwrap().is_empty());
    assert_eq!(store.read_stream(taken, 0).await.unwrap().len(), 1);
    assert_eq!(
        keys.wrapped_key(keyed).await.unwrap().as_deref(),
        Some("wrapped")
    );
    assert_eq!(
        keys.find(&["index-b".to_owned(), "none".to_owned()])
            .await
            .unwrap(),
        [("index-b".to_owned(), keyed)]
    );
    assert_eq!(
        store
            .find_command("fresh")
            .await
            .unwrap()
            .unwrap()
            .stream_id,
        fresh
    );
    // The conflicting append's command id was not kept: it can be used again.
    assert!(store.find_command("released").await.unwrap().is_none());
    // 2 set up, then fresh 1, existing 2, keyed 2.
    let all = read_settled(&*store, 7).await;
    assert_eq!(all.len(), 7, "{all:?}");
    for pair in all.windows(2) {
        if pair[0].stream_id == pair[1].stream_id {
            assert!(pair[0].version < pair[1].version, "{pair:?}");
        }
    }
}

/// The answers of [`batch_answers_each_append_alone`]'s batch, in its order.
fn each_append_has_its_answer(
    results: Vec<Result<Appended, StoreError>>,
    existing: RequestId,
    fresh: RequestId,
    taken: RequestId,
) {
    assert_eq!(results.len(), 9, "{results:?}");
    let mut results = results.into_iter();
    let mut next = || results.next().unwrap();

    let first = written(next().unwrap());
    assert_eq!((first[0].stream_id, first[0].version), (fresh, 1));
    assert_eq!(written(next().unwrap())[0].version, 2);
    assert_eq!(
        conflict(next()),
        (existing, 1, 2),
        "a conflict at version 2"
    );
    assert_eq!(written(next().unwrap())[0].version, 3);
    let keyed_events = written(next().unwrap());
    assert_eq!(keyed_events.len(), 2);
    assert!(keyed_events[0].position < keyed_events[1].position);
    match next().unwrap() {
        Appended::Duplicate(record) => assert_eq!(record.stream_id, taken),
        other => panic!("expected the first result of `taken`, got {other:?}"),
    }
    assert!(matches!(
        next(),
        Err(StoreError::Conflict {
            expected: 0,
            actual: 1,
            ..
        })
    ));
    assert!(matches!(
        next(),
        Err(StoreError::Conflict {
            expected: 5,
            actual: 0,
            ..
        })
    ));
    assert_eq!(written(next().unwrap()), Vec::new());
}

/// Many tasks appending at once: every append lands once, streams stay chained, and (on
/// Postgres, where transaction ids are visible) appends from different tasks shared commits.
async fn concurrent_appends_share_commits(t: TestStore) {
    const TASKS: usize = 48;
    const PER_TASK: usize = 6;
    let store = t.store();
    let shared = new_id();
    written(
        store
            .append(shared, 0, &[received(shared)], &EventMetadata::new("setup"))
            .await
            .unwrap(),
    );
    let tasks = (0..TASKS).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..PER_TASK {
                let id = new_id();
                let meta = EventMetadata::new("load").with_command_id(format!("load-{task}-{n}"));
                written(
                    store
                        .append(id, 0, &[received(id), hold()], &meta)
                        .await
                        .unwrap(),
                );
                ids.push(id);
            }
            // Every task also appends to one shared stream, retrying on conflicts.
            loop {
                let version = store.stream_head(shared).await.unwrap().unwrap().version;
                match store
                    .append(shared, version, &[reminded(1)], &EventMetadata::new("load"))
                    .await
                {
                    Ok(appended) => {
                        written(appended);
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            ids
        })
    });
    let ids: Vec<RequestId> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert_eq!(ids.len(), TASKS * PER_TASK);
    for id in &ids {
        let events = store.read_stream(*id, 0).await.unwrap();
        assert_eq!(events.len(), 2, "stream {id}");
        assert_eq!(verify_chain(&events, None), Ok(()));
    }
    let shared_events = store.read_stream(shared, 0).await.unwrap();
    assert_eq!(shared_events.len(), 1 + TASKS);
    assert_eq!(verify_chain(&shared_events, None), Ok(()));
    let total = 1 + TASKS * PER_TASK * 2 + TASKS;
    let all = read_settled(&*store, total).await;
    assert_eq!(all.len(), total);
    if t.is_postgres() {
        let mut streams_per_transaction: HashMap<i64, HashSet<RequestId>> = HashMap::new();
        for event in &all {
            streams_per_transaction
                .entry(event.transaction_id)
                .or_default()
                .insert(event.stream_id);
        }
        let widest = streams_per_transaction.values().map(HashSet::len).max();
        assert!(
            widest > Some(1),
            "every append had its own transaction: no group commit happened"
        );
    }
}

/// A batch of appends that all start new streams without command ids (intake): on Postgres
/// it is written by one statement, yet each append still gets its own answer, an existing
/// stream is a conflict that writes nothing, and the keys and blind indexes of the streams
/// created are written with them, none of the conflicting one's.
async fn a_batch_of_new_streams_answers_each_alone(t: TestStore) {
    let store = t.store();
    let keys = key_store(&t);
    let existing = existing_stream(&*store, None).await;
    let keyed = |id: RequestId, events: Vec<Event>, index: &str| {
        let mut one = append(id, 0, events, None);
        one.key = Some(NewKey {
            wrapped_key: format!("wrapped-{id}"),
            indexes: vec![format!("{index}-1"), format!("{index}-2")],
        });
        one
    };
    let ids: Vec<RequestId> = (0..5).map(|_| new_id()).collect();
    let results = store
        .append_batch(vec![
            keyed(ids[0], vec![received(ids[0])], "a"),
            keyed(ids[1], vec![received(ids[1]), hold()], "b"),
            // The stream exists: a conflict; its key and indexes must not be written.
            keyed(existing, vec![received(existing)], "taken"),
            append(ids[2], 0, vec![], None),
            append(ids[3], 0, vec![received(ids[3])], None),
            keyed(ids[4], vec![received(ids[4])], "e"),
        ])
        .await;
    assert_eq!(results.len(), 6, "{results:?}");
    let mut results = results.into_iter();
    let mut next = || results.next().unwrap();
    let mut positions = Vec::new();
    for (id, len) in [(ids[0], 1), (ids[1], 2)] {
        let events = written(next().unwrap());
        assert_eq!(events.len(), len);
        assert_eq!(store.read_stream(id, 0).await.unwrap(), events);
        positions.extend(events.iter().map(|e| e.position));
    }
    assert_eq!(
        conflict(next()),
        (existing, 0, 1),
        "a conflict on the existing stream"
    );
    assert_eq!(written(next().unwrap()), Vec::new());
    for id in [ids[3], ids[4]] {
        let events = written(next().unwrap());
        assert_eq!(store.read_stream(id, 0).await.unwrap(), events);
        positions.extend(events.iter().map(|e| e.position));
    }
    // Positions follow the batch's order.
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    for id in [ids[0], ids[1], ids[3], ids[4]] {
        let events = store.read_stream(id, 0).await.unwrap();
        let head = store.stream_head(id).await.unwrap().unwrap();
        assert_eq!(verify_chain(&events, Some(&head)), Ok(()), "stream {id}");
    }
    assert!(store.read_stream(ids[2], 0).await.unwrap().is_empty());
    assert_eq!(store.read_stream(existing, 0).await.unwrap().len(), 1);
    assert_eq!(
        keys.wrapped_key(ids[1]).await.unwrap(),
        Some(format!("wrapped-{}", ids[1]))
    );
    assert_eq!(keys.wrapped_key(ids[3]).await.unwrap(), None);
    assert_eq!(keys.wrapped_key(existing).await.unwrap(), None);
    let mut found = keys
        .find(&["a-2".to_owned(), "e-1".to_owned(), "taken-1".to_owned()])
        .await
        .unwrap();
    found.sort();
    let mut expected = vec![("a-2".to_owned(), ids[0]), ("e-1".to_owned(), ids[4])];
    expected.sort();
    assert_eq!(found, expected);
}

/// A stored payload that is not JSON (written around Lethe) is reported, not passed on.
async fn a_payload_that_is_not_json_is_an_error(t: TestStore) {
    let store = t.store();
    let id = new_id();
    let meta = EventMetadata::new("test");
    store.append(id, 0, &[received(id)], &meta).await.unwrap();
    let position = store.read_stream(id, 0).await.unwrap()[0].position;
    t.execute(&format!(
        "UPDATE events SET payload = 'not json' WHERE stream_id = '{id}'"
    ))
    .await;
    let error = store.read_stream(id, 0).await.unwrap_err().to_string();
    if t.is_postgres() {
        assert!(
            error.contains(&format!(
                "the payload of the event at position {position} is not JSON"
            )),
            "{error}"
        );
    }
}

support::backends!(
    worker_threads = 4;
    a_batch_of_new_streams_answers_each_alone,
    a_payload_that_is_not_json_is_an_error,
    batch_answers_each_append_alone,
    a_large_batch_answers_each_append_in_order,
    concurrent_appends_share_commits,
);
