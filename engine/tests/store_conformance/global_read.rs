//! The global read: pages from a checkpoint, the hash chain, and a tailing reader under
//! concurrent writers that commit out of order.

use super::*;

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

    let reader = tokio::spawn(tail(store.clone(), writing.clone()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            tokio::spawn(write_streams(
                store.clone(),
                STREAMS_PER_WRITER,
                EVENTS_PER_STREAM,
            ))
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

/// Reads the global log from the start, page by page, until `writing` is over and a page
/// comes back empty: every event seen, in the order read.
async fn tail(store: Arc<dyn EventStore>, writing: Arc<AtomicBool>) -> Vec<RecordedEvent> {
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
}

/// Writes `streams` streams of `events` events each, one append per transaction: the ids.
async fn write_streams(store: Arc<dyn EventStore>, streams: usize, events: i64) -> Vec<RequestId> {
    let mut ids = Vec::new();
    // `append_batch` of one append: a transaction of its own per append, so twelve writers
    // really commit side by side (the group-committed `append` would gather them into the
    // few batches its writers run).
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
    for _ in 0..streams {
        let id = new_id();
        write(id, 0, received(id)).await;
        for version in 1..events {
            let index = u32::try_from(version).unwrap();
            write(id, version, reminded(index)).await;
        }
        ids.push(id);
    }
    ids
}

support::backends!(
    worker_threads = 4;
    global_read_pages_from_a_checkpoint,
    hash_chain_links_each_stream_and_detects_tampering,
    tailing_reader_misses_nothing_under_concurrent_writers,
);
