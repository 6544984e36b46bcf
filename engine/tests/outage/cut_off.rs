//! Databases cut off, terminated under load, not up yet at start, and cut off mid-batch.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_off_is_answered_503_fast_and_recovered_from_without_loss() {
    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    let proxy = ChaosProxy::start(postgres_target(url)).await;
    let config = config();
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .options([("search_path", schema.as_str())]);
    let store = Arc::new(
        PostgresStore::connect_with_timeout(options, config.database.acquire_timeout.0)
            .await
            .unwrap(),
    );
    let lethe = start(&t, &store, &config).await;
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let clients = clients(&lethe.app, &stop, &seen);
    wait_answered(&seen, 20).await;

    // The port closed and every connection reset: the server is gone.
    proxy.set(Mode::Refuse).await;
    proxy.reset_all();
    assert_fast_503(&lethe.app, "refused").await;
    // A partition: connections are accepted and never answered.
    proxy.set(Mode::Blackhole).await;
    assert_fast_503(&lethe.app, "swallowed").await;

    let before = seen.lock().unwrap().answered.len();
    proxy.set(Mode::Open).await;
    let deadline = Instant::now() + DEADLINE;
    while ready(&lethe.app).await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "/readyz never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The clients' subjects held up by the outage are answered, and new ones after them.
    wait_answered(&seen, before + 20).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "cut off: statuses {:?}, {} subjects, {} landed despite a 503",
        seen.statuses,
        seen.answered.len(),
        seen.landed_anyway
    );
    assert!(
        seen.wrong.is_empty(),
        "answers other than 2xx or 503: {:?}",
        seen.wrong
    );
    assert!(
        seen.statuses.get(&503).copied().unwrap_or(0) > 0,
        "the clients never met the outage"
    );
    assert_log_matches(&t, &seen).await;
    lethe.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_terminated_under_load_are_answered_2xx_or_503_never_500() {
    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    // Lethe's connections carry a name of their own: only they are terminated.
    let application = format!("lethe_outage_{}", uuid::Uuid::new_v4().simple());
    let config = config();
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .application_name(&application)
        .options([("search_path", schema.as_str())]);
    let store = Arc::new(
        PostgresStore::connect_with_timeout(options, config.database.acquire_timeout.0)
            .await
            .unwrap(),
    );
    let lethe = start(&t, &store, &config).await;
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let clients = clients(&lethe.app, &stop, &seen);
    // Readers too: the request just answered, and the readiness check.
    let reader = {
        let (app, stop, seen) = (lethe.app.clone(), stop.clone(), seen.clone());
        tokio::spawn(async move {
            let mut wrong = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let last = seen.lock().unwrap().answered.values().last().cloned();
                if let Some(id) = last {
                    let path = format!("/v1/requests/{id}");
                    let answer = send(&app, Request::get(path).body(Body::empty()).unwrap()).await;
                    if !(answer.status == StatusCode::OK
                        || answer.status == StatusCode::SERVICE_UNAVAILABLE)
                    {
                        wrong.push(answer);
                    }
                }
                let answer = ready(&app).await;
                if !(answer.status == StatusCode::OK
                    || answer.status == StatusCode::SERVICE_UNAVAILABLE)
                {
                    wrong.push(answer);
                }
            }
            wrong
        })
    };

    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let mut terminated = 0_i64;
    for round in 1..=10 {
        wait_answered(&seen, round * 10).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&application)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        terminated += n;
    }
    wait_answered(&seen, 120).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let reads_wrong = reader.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "terminated {terminated} backends: statuses {:?}, {} subjects, {} landed despite a 503",
        seen.statuses,
        seen.answered.len(),
        seen.landed_anyway
    );
    assert!(
        terminated >= 10,
        "only {terminated} backends were terminated"
    );
    assert!(
        seen.wrong.is_empty(),
        "submissions answered other than 2xx or 503: {:?}",
        seen.wrong
    );
    assert!(
        reads_wrong.is_empty(),
        "reads answered other than 200 or 503: {reads_wrong:?}"
    );
    assert_log_matches(&t, &seen).await;
    lethe.engine.stop().await;
}

#[tokio::test]
async fn starting_waits_for_a_database_that_is_not_up_yet() {
    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    let proxy = ChaosProxy::start(postgres_target(url)).await;
    proxy.set(Mode::Refuse).await;
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .options([("search_path", schema.as_str())]);
    let acquire_timeout = Duration::from_secs(1);
    let connecting = tokio::spawn(PostgresStore::connect_with_timeout(
        options,
        acquire_timeout,
    ));
    // The database stays away for twice the acquire time-out (the outage is the test's
    // doing; the sleep is its length, not a wait for something to happen).
    tokio::time::sleep(acquire_timeout * 2).await;
    assert!(
        !connecting.is_finished(),
        "connecting gave up after the acquire time-out: {:?}",
        connecting.await
    );
    proxy.set(Mode::Open).await;
    let store = tokio::time::timeout(DEADLINE, connecting)
        .await
        .expect("connecting never ended")
        .unwrap()
        .expect("connecting failed once the database was up");
    use lethe_engine::store::EventStore as _;
    store.ping().await.unwrap();
}

#[tokio::test]
async fn a_batch_cut_off_fails_at_once_not_append_by_append() {
    use lethe_domain::event::Reminded;
    use lethe_domain::{Event, RequestId};
    use lethe_engine::store::{Append, EventMetadata, EventStore as _};

    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    let proxy = ChaosProxy::start(postgres_target(url)).await;
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .options([("search_path", schema.as_str())]);
    let store = PostgresStore::connect_with_timeout(options, Duration::from_secs(1))
        .await
        .unwrap();
    proxy.set(Mode::Refuse).await;
    proxy.reset_all();
    // One batch of appends (as bulk intake writes them): written one by one after the
    // batch failed, each would wait out its own acquire time-out.
    let appends: Vec<Append> = (0..20)
        .map(|index| Append {
            stream_id: RequestId::from_uuid(uuid::Uuid::now_v7()),
            expected_version: 0,
            events: vec![Event::Reminded(Reminded {
                index,
                at: chrono::Utc::now(),
            })],
            metadata: EventMetadata::new("test"),
            key: None,
        })
        .collect();
    let started = Instant::now();
    let results = store.append_batch(appends).await;
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 20);
    for result in &results {
        assert!(
            matches!(result, Err(error) if error.is_unavailable()),
            "{result:?}"
        );
    }
    assert!(
        elapsed < FAST,
        "the batch's appends were answered after {elapsed:?}"
    );
    proxy.set(Mode::Open).await;
    assert_eq!(t.fetch_integers("SELECT count(*) FROM events").await, [0]);
}
