//! The event store's contract, run against both backends (real Postgres, real SQLite):
//! optimistic concurrency, stream and global reads, metadata, idempotent commands, the hash
//! chain, and gap safety under concurrent writers that commit out of order.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use lethe_domain::event::{HoldPlaced, Received, Reminded};
use lethe_domain::{DeadlineRule, Event, Jurisdiction, RequestId, Subject};
use lethe_engine::store::keys::KeyStore;
use lethe_engine::store::{
    verify_chain, Append, Appended, Checkpoint, EventMetadata, EventStore, NewKey, RecordedEvent,
    StoreError, GENESIS_HASH,
};
use support::TestStore;
use uuid::Uuid;

fn received(id: RequestId) -> Event {
    let at = Utc.with_ymd_and_hms(2025, 1, 31, 12, 0, 0).unwrap();
    Event::Received(Received {
        request_id: id,
        subject: Subject::parse(BTreeMap::from([("user_id".to_owned(), "42".to_owned())]))
            .unwrap()
            .into(),
        jurisdiction: Jurisdiction::parse("gdpr").unwrap(),
        source: Some("test".to_owned()),
        reason: None,
        external_id: None,
        tags: vec!["a".to_owned()],
        received_at: at,
        due_at: at + chrono::TimeDelta::days(30),
        reminders: vec![at + chrono::TimeDelta::days(23)],
        deadline_rule: DeadlineRule::GDPR,
        deadline: chrono::NaiveDate::from_ymd_opt(2025, 2, 28).unwrap(),
    })
}

fn reminded(index: u32) -> Event {
    Event::Reminded(Reminded {
        index,
        at: Utc.with_ymd_and_hms(2025, 2, 23, 12, 0, 0).unwrap(),
    })
}

fn hold() -> Event {
    Event::HoldPlaced(HoldPlaced {
        at: Utc.with_ymd_and_hms(2025, 2, 1, 9, 30, 0).unwrap(),
        reason: "litigation \"quoted\" ü".to_owned(),
    })
}

fn new_id() -> RequestId {
    RequestId::from_uuid(Uuid::now_v7())
}

fn written(appended: Appended) -> Vec<RecordedEvent> {
    match appended {
        Appended::Written(events) => events,
        Appended::Duplicate(record) => panic!("unexpected duplicate {record:?}"),
    }
}

/// The stream, expected version and actual version of a conflict; anything else fails the test.
fn conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> (RequestId, i64, i64) {
    match result {
        Err(StoreError::Conflict {
            stream_id,
            expected,
            actual,
        }) => (stream_id, expected, actual),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Reads the whole global log once it holds at least `expected` events. On Postgres the global
/// read stops below the oldest transaction still open anywhere in the cluster, so right after
/// an append (with other tests writing in parallel) the newest events may not be readable yet.
async fn read_settled(store: &dyn EventStore, expected: usize) -> Vec<RecordedEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = read_everything(store).await;
        if all.len() >= expected || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut checkpoint = Checkpoint::START;
    loop {
        let page = store.read_all(checkpoint, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        checkpoint = last.checkpoint();
        all.extend(page);
    }
    all
}

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

async fn global_read_pages_from_a_checkpoint(t: TestStore) {
    let store = t.store();
    let mut expected = Vec::new();
    for _ in 0..5 {
        let id = new_id();
        let meta = EventMetadata::new("test");
        expected.extend(written(
            store
                .append(id, 0, &[received(id), hold()], &meta)
                .await
                .unwrap(),
        ));
        expected.extend(written(
            store.append(id, 2, &[reminded(0)], &meta).await.unwrap(),
        ));
    }
    let all = read_settled(&*store, expected.len()).await;
    assert_eq!(
        all, expected,
        "sequential appends read back in append order"
    );

    // Resuming from any checkpoint yields exactly the rest.
    let middle = all[6].checkpoint();
    let rest = store.read_all(middle, 100).await.unwrap();
    assert_eq!(rest, all[7..]);
    assert!(store
        .read_all(all[14].checkpoint(), 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.read_all(Checkpoint::START, 3).await.unwrap(),
        all[..3]
    );
}

async fn hash_chain_links_each_stream_and_detects_tampering(t: TestStore) {
    let store = t.store();
    let id = new_id();
    let meta = EventMetadata::new("test");
    store
        .append(id, 0, &[received(id), hold()], &meta)
        .await
        .unwrap();
    store.append(id, 2, &[reminded(0)], &meta).await.unwrap();
    let other = new_id();
    store
        .append(other, 0, &[received(other)], &meta)
        .await
        .unwrap();

    let stream = store.read_stream(id, 0).await.unwrap();
    assert_eq!(stream[0].prev_hash, GENESIS_HASH);
    assert_eq!(stream[1].prev_hash, stream[0].hash);
    assert_eq!(stream[2].prev_hash, stream[1].hash);
    let head = store.stream_head(id).await.unwrap().unwrap();
    assert_eq!(
        (head.version, head.last_hash.as_str()),
        (3, stream[2].hash.as_str())
    );
    verify_chain(&stream, Some(&head)).unwrap();

    // Change one character of the reason stored in the second event.
    // Both stores keep the payload as JSON text (ADR 12).
    t.execute(&format!(
        "UPDATE events SET payload = replace(payload, 'ü', 'u') \
         WHERE stream_id = '{id}' AND version = 2"
    ))
    .await;
    let tampered = store.read_stream(id, 0).await.unwrap();
    assert_ne!(
        tampered[1].payload, stream[1].payload,
        "the tampering took effect"
    );
    let broken = verify_chain(&tampered, Some(&head)).unwrap_err();
    assert_eq!((broken.version, broken.position), (2, stream[1].position));
    // The other stream is untouched.
    verify_chain(
        &store.read_stream(other, 0).await.unwrap(),
        store.stream_head(other).await.unwrap().as_ref(),
    )
    .unwrap();

    // Removing the last event is caught by the stream head.
    t.execute(&format!(
        "DELETE FROM events WHERE stream_id = '{other}' AND version = 1"
    ))
    .await;
    let emptied = store.read_stream(other, 0).await.unwrap();
    assert!(verify_chain(&emptied, store.stream_head(other).await.unwrap().as_ref()).is_err());

    if !t.is_postgres() {
        // SQLite keeps payloads as text: one that is no longer JSON fails the read, named.
        t.execute(&format!(
            "UPDATE events SET payload = substr(payload, 1, 10) \
             WHERE stream_id = '{id}' AND version = 2"
        ))
        .await;
        let error = store.read_stream(id, 0).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(m) if m.contains(&id.to_string())),
            "{error}"
        );
        let error = store.read_all(Checkpoint::START, 100).await.unwrap_err();
        assert!(matches!(&error, StoreError::Corrupt(_)), "{error}");
    }
}

/// Many writers append concurrently (on Postgres each insert sleeps a random while inside its
/// transaction, so transactions commit out of position order) while a reader tails the global
/// log from its checkpoint. The reader must see every event exactly once, and each stream in
/// version order.
async fn tailing_reader_misses_nothing_under_concurrent_writers(t: TestStore) {
    const WRITERS: usize = 12;
    const STREAMS_PER_WRITER: usize = 4;
    const EVENTS_PER_STREAM: i64 = 5;
    if t.is_postgres() {
        t.execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(random() * 0.03); RETURN NEW; END $$; \
             CREATE TRIGGER slow_commit AFTER INSERT ON events \
             FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await;
    }
    let store = t.store();
    let writing = Arc::new(AtomicBool::new(true));

    let reader = {
        let store = store.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut checkpoint = Checkpoint::START;
            loop {
                let done = !writing.load(Ordering::SeqCst);
                let page = store.read_all(checkpoint, 16).await.unwrap();
                if let Some(last) = page.last() {
                    checkpoint = last.checkpoint();
                    seen.extend(page);
                } else if done {
                    break seen;
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                // `append_batch` of one append: a transaction of its own per append, so twelve
                // writers really commit side by side (the group-committed `append` would
                // gather them into the few batches its writers run).
                let write = |id: RequestId, version: i64, event: Event| {
                    let store = store.clone();
                    async move {
                        let mut results = store
                            .append_batch(vec![Append {
                                stream_id: id,
                                expected_version: version,
                                events: vec![event],
                                metadata: EventMetadata::new("writer"),
                                key: None,
                            }])
                            .await;
                        written(results.pop().unwrap().unwrap());
                    }
                };
                for _ in 0..STREAMS_PER_WRITER {
                    let id = new_id();
                    write(id, 0, received(id)).await;
                    for version in 1..EVENTS_PER_STREAM {
                        let index = u32::try_from(version).unwrap();
                        write(id, version, reminded(index)).await;
                    }
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let mut streams = Vec::new();
    for writer in writers {
        streams.extend(writer.await.unwrap());
    }
    writing.store(false, Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader drains the log within a minute")
        .unwrap();

    let total = WRITERS * STREAMS_PER_WRITER * usize::try_from(EVENTS_PER_STREAM).unwrap();
    let unique: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    assert_eq!(seen.len(), total, "the reader missed events");
    let mut versions: HashMap<RequestId, Vec<i64>> = HashMap::new();
    for event in &seen {
        versions
            .entry(event.stream_id)
            .or_default()
            .push(event.version);
    }
    for id in &streams {
        assert_eq!(
            versions[id],
            (1..=EVENTS_PER_STREAM).collect::<Vec<_>>(),
            "stream {id} out of order"
        );
    }
    if t.is_postgres() {
        // The run really had transactions commit out of position order: reading by position
        // alone would have been wrong here.
        let interleaved = seen.windows(2).any(|w| w[1].position < w[0].position);
        assert!(
            interleaved,
            "no out-of-order commit happened; the test proved nothing"
        );
    }
}

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

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::support::postgres().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::support::sqlite().await).await;
                }
            )*
        }
    };
}

conformance!(
    a_batch_of_new_streams_answers_each_alone,
    a_payload_that_is_not_json_is_an_error,
    append_and_read_back,
    wrong_expected_version_is_a_conflict,
    racing_appenders_one_wins,
    retried_command_returns_first_result,
    global_read_pages_from_a_checkpoint,
    hash_chain_links_each_stream_and_detects_tampering,
    tailing_reader_misses_nothing_under_concurrent_writers,
    batch_answers_each_append_alone,
    a_large_batch_answers_each_append_in_order,
    concurrent_appends_share_commits,
);
