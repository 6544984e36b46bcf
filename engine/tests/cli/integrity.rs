//! Tamper detection by `verify` and `history`, idempotent `migrate`, and an upgrade that keeps
//! the log.

use super::*;

/// Changes one byte of the second request's stored payload behind Lethe's back: `verify` names
/// that request and the event's position, the first request still verifies, and `history`
/// shows the break.
async fn verify_and_history_detect_tampering(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let submit = |user: &'static str| {
        let (dir, url) = (dir.path().to_owned(), url.clone());
        async move {
            let output = run(
                &dir,
                &[
                    "submit",
                    "--database-url",
                    &url,
                    "--subject",
                    user,
                    "--source",
                    "original",
                ],
            )
            .await
            .ok();
            submitted_id(&output)
        }
    };
    let first = submit("user_id=1").await;
    let second = submit("user_id=2").await;
    let (first_text, second_text) = (first.to_string(), second.to_string());
    let verify = run(dir.path(), &["verify", "--database-url", &url])
        .await
        .ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");

    // Both stores keep the payload as JSON text (ADR 12).
    t.execute(&format!(
        "UPDATE events SET payload = replace(payload, 'original', 'tamperex') \
         WHERE stream_id = '{second}'"
    ))
    .await;
    let stored = t.store().read_stream(second, 0).await.unwrap();
    assert_ne!(
        stored[0].payload["source"], "original",
        "the tampering took effect"
    );
    let position = stored[0].position;

    let verify = run(dir.path(), &["verify", "--database-url", &url])
        .await
        .expect(1);
    let failure = verify
        .stdout
        .lines()
        .find(|line| line.contains(&second_text))
        .unwrap_or_else(|| panic!("the tampered request is not named: {verify:?}"));
    assert!(
        failure.contains(&format!("position {position}")),
        "{verify:?}"
    );
    assert!(
        !verify.stdout.contains(&first_text),
        "only the tampered request fails: {verify:?}"
    );

    let verify = run(dir.path(), &["verify", &first_text, "--database-url", &url])
        .await
        .ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");
    let verify = run(
        dir.path(),
        &["verify", &second_text, "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(
        verify.stdout.contains(&format!("position {position}")),
        "{verify:?}"
    );

    let history = run(
        dir.path(),
        &["history", &second_text, "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(history.stdout.contains("BROKEN"), "{history:?}");
    let history = run(
        dir.path(),
        &["history", &second_text, "--json", "--database-url", &url],
    )
    .await
    .expect(1);
    let json = history.json();
    assert_eq!(json["verified"], false);
    assert_eq!(json["chain_error"]["position"], position);
    run(
        dir.path(),
        &["history", &first_text, "--database-url", &url],
    )
    .await
    .ok();
}

/// `migrate` on a database that has never seen Lethe, twice: both succeed, and each
/// migration file was applied exactly once.
async fn migrate_is_idempotent(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    for _ in 0..2 {
        let migrate = run(dir.path(), &["migrate", "--database-url", &url])
            .await
            .ok();
        assert!(migrate.stdout.contains("up to date"), "{migrate:?}");
    }
    let mut files: Vec<i64> = std::fs::read_dir(t.migrations_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect();
    files.sort_unstable();
    assert!(!files.is_empty());
    let applied = t
        .fetch_integers("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .await;
    assert_eq!(applied, files);
    let all = t
        .fetch_integers("SELECT COUNT(*) FROM _sqlx_migrations")
        .await;
    assert_eq!(all, [i64::try_from(files.len()).unwrap()]);
    // And the schema is usable.
    run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .ok();
}

/// Applies the migrations that came before the one rewriting the log (ADR 11).
async fn migrate_to_before_the_rewrite(t: &TestStore) {
    let earlier = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(t.migrations_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let rewrite = files
        .iter()
        .position(|path| path.to_string_lossy().ends_with("_events_fewer_checks.sql"))
        .expect("the migration that rewrites the log");
    files.truncate(rewrite);
    for file in &files {
        std::fs::copy(file, earlier.path().join(file.file_name().unwrap())).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(earlier.path()).await.unwrap();
    match t {
        TestStore::Postgres { store, .. } => migrator.run(store.pool()).await.unwrap(),
        TestStore::Sqlite { store, .. } => migrator.run(store.writer()).await.unwrap(),
    }
}

/// Writes three events of one stream under the old schema and deletes the last; returns the
/// positions of the two left.
async fn write_a_log_with_a_gap(t: &TestStore) -> Vec<i64> {
    let row = |version: u32, event_id: &str| {
        format!(
            "('0192e4a0-0000-7000-8000-000000000001', {version}, 'Received', 1, '{{}}', \
             '{event_id}', '0192e4a0-0000-7000-8000-0000000000cc', 'test', \
             '2026-12-01T00:00:00Z', 'p{version}', 'h{version}')"
        )
    };
    t.execute(&format!(
        "INSERT INTO streams (stream_id, version, last_hash) \
         VALUES ('0192e4a0-0000-7000-8000-000000000001', 3, 'h3'); \
         INSERT INTO events (stream_id, version, event_type, schema_version, payload, event_id, \
         correlation_id, actor, recorded_at, prev_hash, hash) VALUES {}, {}, {}; \
         DELETE FROM events WHERE version = 3;",
        row(1, "0192e4a0-0000-7000-8000-0000000000e1"),
        row(2, "0192e4a0-0000-7000-8000-0000000000e2"),
        row(3, "0192e4a0-0000-7000-8000-0000000000e3"),
    ))
    .await;
    let before = t
        .fetch_integers("SELECT position FROM events ORDER BY position")
        .await;
    assert_eq!(before.len(), 2);
    before
}

/// Writes a projection row under the old schema (as `jsonb` on Postgres, before ADR 12).
async fn write_a_projection_row(t: &TestStore) -> RequestRow {
    let view = RequestRow {
        id: RequestId::from_uuid(uuid::Uuid::from_u128(
            0x0192_e4a0_0000_7000_8000_0000_0000_0001,
        )),
        status: RequestStatus::Due,
        jurisdiction: "gdpr".to_owned(),
        source: Some("web \"form\"".to_owned()),
        tags: vec!["b".to_owned(), "a".to_owned()],
        received_at: "2026-12-01T00:00:00Z".parse().unwrap(),
        due_at: "2026-12-15T00:00:00Z".parse().unwrap(),
        deadline: chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(),
        on_hold: false,
        awaiting_approval: false,
        became_due_at: Some("2026-12-15T00:00:01Z".parse().unwrap()),
        closed_at: None,
        cleaners: vec![CleanerRow {
            name: "crm".to_owned(),
            status: "pending".to_owned(),
            attempts: 2,
            max_attempts: 8,
            last_error: Some("503 from crm".to_owned()),
            started_at: "2026-12-15T00:00:01Z".parse().unwrap(),
            finished_at: None,
        }],
        last_error: Some("503 from crm".to_owned()),
        shredded: false,
    };
    t.execute(&format!(
        "INSERT INTO request_view (request_id, status, jurisdiction, received_at, deadline, \
         closed_at, row_data) VALUES ('0192e4a0-0000-7000-8000-000000000001', 'due', 'gdpr', \
         '2026-12-01T00:00:00Z', '2027-01-01', NULL, '{}')",
        serde_json::to_string(&view).unwrap().replace('\'', "''")
    ))
    .await;
    view
}

/// Upgrading a database written under the migrations before the log was rewritten (ADR 11),
/// through every later one, keeps every event and its position, and a later append comes
/// after the highest position ever given, even one whose event is gone. A projection row
/// written before the upgrade (as `jsonb` on Postgres, before ADR 12) reads back the same.
async fn an_upgrade_keeps_the_log(t: TestStore) {
    migrate_to_before_the_rewrite(&t).await;
    let before = write_a_log_with_a_gap(&t).await;
    let view = write_a_projection_row(&t).await;

    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let migrate = run(dir.path(), &["migrate", "--database-url", &url])
        .await
        .ok();
    assert!(migrate.stdout.contains("up to date"), "{migrate:?}");
    let kept = t
        .fetch_integers(
            "SELECT position FROM events \
             WHERE stream_id = '0192e4a0-0000-7000-8000-000000000001' ORDER BY position",
        )
        .await;
    assert_eq!(kept, before, "every event keeps its position");
    let versions = t
        .fetch_integers(
            "SELECT version FROM events \
             WHERE stream_id = '0192e4a0-0000-7000-8000-000000000001' ORDER BY position",
        )
        .await;
    assert_eq!(versions, [1, 2]);
    let upgraded = t
        .database()
        .projections
        .list_requests(&RequestFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(upgraded, [view], "the projection's row after the upgrade");

    run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .ok();
    let after = t
        .fetch_integers(
            "SELECT position FROM events \
             WHERE stream_id <> '0192e4a0-0000-7000-8000-000000000001' ORDER BY position",
        )
        .await;
    assert_eq!(after.len(), 1, "the submission's Received");
    assert!(
        after[0] > before[1] + 1,
        "a new event comes after every position given before the upgrade: {after:?} after {before:?}"
    );
}

/// On Postgres the log is read in transaction order, which hides events whose transaction
/// committed after one still open elsewhere; `verify` must not take that for removed events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_not_fooled_by_a_transaction_left_open() {
    let t = support::postgres().await;
    let TestStore::Postgres { store, .. } = &t else {
        unreachable!("support::postgres gives a Postgres store")
    };
    let mut open = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .ok();
    let verify = run(dir.path(), &["verify", "--database-url", &url]).await;
    open.rollback().await.unwrap();
    let verify = verify.ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");
}
support::backends!(verify_and_history_detect_tampering);
support::backends!(unmigrated: migrate_is_idempotent, an_upgrade_keeps_the_log);
