//! The cleaner called directly, on each backend.

use lethe_engine::cleaners::{Cleaner as _, Outcome};

use crate::target::{seeded_without, Kind, Target, USERS};
use crate::{attempt, build, counts, deleted, failure, subject, Requests};

crate::on_every_backend!(
    erases_only_the_subject_and_a_rerun_deletes_nothing,
    a_statement_whose_identifier_is_missing_is_skipped,
    sql_errors_are_final_and_never_quote_the_subject,
    an_unreachable_database_is_retried,
    a_dry_run_counts_and_changes_nothing,
    a_verify_count_fails_the_attempt_and_rolls_it_back,
    a_batch_fails_only_its_failing_request,
);

async fn erases_only_the_subject_and_a_rerun_deletes_nothing(target: Target) {
    let requests = Requests::new().await;
    let request = requests.request().await;
    let cleaner = build(&target.url, "");
    let who = subject(&[("user_id", "42"), ("email", "subject@example.com")]);
    let outcome = cleaner
        .attempt(attempt(&request, &requests.cleaner, &who))
        .await
        .unwrap();
    assert_eq!(
        deleted(&outcome),
        counts(&[("rows", 3), ("statements[0]", 2), ("statements[1]", 1)])
    );
    assert_eq!(target.rows().await, seeded_without(&["42"]));

    // Hostile and wildcard identifiers are values, bound: they match themselves only.
    for (id, email) in &USERS[3..] {
        let who = subject(&[("user_id", id), ("email", email)]);
        let outcome = cleaner
            .attempt(attempt(&request, &requests.cleaner, &who))
            .await
            .unwrap();
        assert_eq!(deleted(&outcome)["rows"], 3, "{id:?}");
    }
    assert_eq!(
        target.rows().await,
        seeded_without(&["42", "' OR 1=1 --", "%", "_"])
    );

    let again = cleaner
        .attempt(attempt(&request, &requests.cleaner, &who))
        .await
        .unwrap();
    assert_eq!(
        deleted(&again),
        counts(&[("rows", 0), ("statements[0]", 0), ("statements[1]", 0)])
    );
    assert_eq!(target.sessions().await, 4);
    requests.stop().await;
}

async fn a_statement_whose_identifier_is_missing_is_skipped(target: Target) {
    let requests = Requests::new().await;
    let request = requests.request().await;
    let cleaner = build(
        &target.url,
        r#"statements = ["DELETE FROM sessions WHERE user_id = :user_id", "DELETE FROM users WHERE email = :email"]"#,
    );
    let who = subject(&[("user_id", "420")]);
    let outcome = cleaner
        .attempt(attempt(&request, &requests.cleaner, &who))
        .await
        .unwrap();
    let Outcome::Succeeded {
        deleted, detail, ..
    } = &outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        deleted.clone().unwrap(),
        counts(&[("rows", 2), ("statements[0]", 2)])
    );
    assert_eq!(
        detail.as_deref(),
        Some("statements[1] skipped: no email; verify[0] skipped: no email")
    );
    assert_eq!(target.sessions().await, 10);
    requests.stop().await;
}

async fn sql_errors_are_final_and_never_quote_the_subject(target: Target) {
    let requests = Requests::new().await;
    let request = requests.request().await;
    let secret = "very-secret-value";
    // Postgres quotes a value it cannot cast, MariaDB a duplicate key: both would quote the
    // subject; SQLite names a missing table.
    let (setup, statement) = match target.kind {
        Kind::Postgres => ("", "DELETE FROM users WHERE id::int = :user_id::int"),
        Kind::MariaDb => (
            "CREATE TABLE uniq (v VARCHAR(64) PRIMARY KEY)",
            "INSERT INTO uniq (v) VALUES (:user_id), (:user_id)",
        ),
        Kind::Sqlite => ("", "DELETE FROM missing_table WHERE id = :user_id"),
    };
    if !setup.is_empty() {
        target.run(setup).await;
    }
    let cleaner = build(
        &target.url,
        &format!("statements = [{statement:?}]\nverify = []"),
    );
    let who = subject(&[("user_id", secret)]);
    let outcome = cleaner
        .attempt(attempt(&request, &requests.cleaner, &who))
        .await
        .unwrap();
    let (error, retryable) = failure(&outcome);
    assert!(!retryable, "{error}");
    assert!(!error.contains(secret), "{error}");
    assert!(error.starts_with("error "), "the code leads: {error}");
    if target.kind != Kind::Sqlite {
        assert!(error.contains("[redacted]"), "{error}");
    }
    assert_eq!(target.sessions().await, 12, "the transaction rolled back");
    requests.stop().await;
}

async fn an_unreachable_database_is_retried(target: Target) {
    let requests = Requests::new().await;
    let request = requests.request().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = match target.kind {
        Kind::Postgres => format!("postgres://postgres@127.0.0.1:{closed}/x"),
        Kind::MariaDb => format!("mysql://root@127.0.0.1:{closed}/x"),
        Kind::Sqlite => "sqlite:///nonexistent-dir/app.db".to_owned(),
    };
    let cleaner = build(&url, "timeout = \"3s\"");
    let who = subject(&[("user_id", "42")]);
    let outcome = cleaner
        .attempt(attempt(&request, &requests.cleaner, &who))
        .await
        .unwrap();
    let (error, retryable) = failure(&outcome);
    assert!(retryable, "{error}");
    requests.stop().await;
}

async fn a_dry_run_counts_and_changes_nothing(target: Target) {
    let cleaner = build(&target.url, "");
    let who = subject(&[("user_id", "42"), ("email", "subject@example.com")]);
    let dry = cleaner.dry_run(&who).await.unwrap();
    let matched: Vec<Option<u64>> = dry.items.iter().map(|i| i.matched).collect();
    assert_eq!(matched, [Some(2), Some(1), Some(0)]);
    assert_eq!(target.rows().await, seeded_without(&[]));
}

async fn a_verify_count_fails_the_attempt_and_rolls_it_back(target: Target) {
    let requests = Requests::new().await;
    let request = requests.request().await;
    // The statements erase by id only; verify counts by email too: a row left behind.
    let cleaner = build(
        &target.url,
        r#"statements = ["DELETE FROM sessions WHERE user_id = :user_id", "DELETE FROM users WHERE id = :user_id"]"#,
    );
    let who = subject(&[("user_id", "42"), ("email", "neighbour@example.com")]);
    let outcome = cleaner
        .attempt(attempt(&request, &requests.cleaner, &who))
        .await
        .unwrap();
    assert_eq!(
        failure(&outcome),
        (
            "verify failed: verify[0] counted 1; rolled back".to_owned(),
            false
        )
    );
    assert_eq!(target.rows().await, seeded_without(&[]));
    requests.stop().await;
}

async fn a_batch_fails_only_its_failing_request(target: Target) {
    let requests = Requests::new().await;
    let request = requests.request().await;
    let cleaner = build(
        &target.url,
        r#"statements = ["DELETE FROM sessions WHERE user_id = :user_id", "DELETE FROM users WHERE id = :user_id"]"#,
    );
    let first = subject(&[("user_id", "42"), ("email", "subject@example.com")]);
    // Its email is someone else's: verify fails, its savepoint is rolled back.
    let failing = subject(&[("user_id", "4"), ("email", "neighbour@example.com")]);
    let last = subject(&[("user_id", "%"), ("email", "percent@example.com")]);
    let attempts = [
        attempt(&request, &requests.cleaner, &first),
        attempt(&request, &requests.cleaner, &failing),
        attempt(&request, &requests.cleaner, &last),
    ];
    let outcomes: Vec<Outcome> = cleaner
        .attempt_batch(&attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(deleted(&outcomes[0])["rows"], 3);
    assert_eq!(
        failure(&outcomes[1]),
        (
            "verify failed: verify[0] counted 1; rolled back".to_owned(),
            false
        )
    );
    assert_eq!(deleted(&outcomes[2])["rows"], 3);
    assert_eq!(target.rows().await, seeded_without(&["42", "%"]));
    requests.stop().await;
}
