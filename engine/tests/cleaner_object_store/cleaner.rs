//! Attempts, batches and dry runs of the object_store cleaner.

use chrono::Utc;
use lethe_domain::CleanerName;
use lethe_engine::cleaners::{Attempt, Cleaner as _, Outcome};

use super::*;

const SETTINGS: &str = r#"keys = ["avatars/{user_id}.png", "cards/{email}.pdf"]
prefixes = ["uploads/{user_id}/"]"#;

const SEED: &[&str] = &[
    "avatars/42.png",
    "avatars/43.png",
    "uploads/42/a.png",
    "uploads/42/deep/b.txt",
    "uploads/43/a.png",
];

#[tokio::test]
async fn an_attempt_deletes_the_subjects_objects_and_a_rerun_deletes_nothing_more() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    // More than one page of a listing (moto pages by 1,000).
    let many: Vec<String> = (0..1_005).map(|i| format!("uploads/42/many/{i}")).collect();
    fx.put(BUCKET, SEED).await;
    fx.put(BUCKET, &many.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let cleaner = fx.cleaner(BUCKET, SETTINGS);
    let subject = subject(&[("user_id", "42")]);

    let outcome = attempt(&cleaner, &subject).await;
    assert_eq!(deleted(&outcome), 1 + 2 + 1_005, "{outcome:?}");
    let Outcome::Succeeded { detail, .. } = &outcome else {
        unreachable!()
    };
    assert_eq!(
        detail.as_deref(),
        Some("keys[1]: skipped: the subject has no email")
    );
    assert_eq!(
        fx.keys(BUCKET).await,
        set(&["avatars/43.png", "uploads/43/a.png"])
    );

    let again = attempt(&cleaner, &subject).await;
    assert_eq!(deleted(&again), 0, "{again:?}");
    assert_eq!(fx.keys(BUCKET).await.len(), 2);
}

#[tokio::test]
async fn a_dry_run_lists_what_would_go_and_changes_nothing() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    fx.put(BUCKET, SEED).await;
    let cleaner = fx.cleaner(BUCKET, SETTINGS);
    let dry = cleaner
        .dry_run(&subject(&[("user_id", "42")]))
        .await
        .unwrap();
    assert_eq!(dry.items.len(), 3);
    assert_eq!(dry.items[0].target, "avatars/{user_id}.png");
    assert_eq!(dry.items[0].matched, Some(1));
    assert_eq!(dry.items[0].keys, ["avatars/42.png"]);
    assert_eq!(dry.items[1].matched, None);
    assert_eq!(
        dry.items[1].skipped.as_deref(),
        Some("skipped: the subject has no email")
    );
    assert_eq!(dry.items[2].matched, Some(2));
    assert_eq!(
        dry.items[2].keys,
        ["uploads/42/a.png", "uploads/42/deep/b.txt"]
    );
    assert_eq!(fx.keys(BUCKET).await, set(SEED));
}

#[tokio::test]
async fn a_batch_deletes_every_requests_objects_and_answers_for_each() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    fx.put(BUCKET, SEED).await;
    fx.put(
        BUCKET,
        &["uploads/44/a.png", "cards/ada%40example%2Ecom.pdf"],
    )
    .await;
    let cleaner = fx.cleaner(BUCKET, SETTINGS);
    let subjects = [
        subject(&[("user_id", "42")]),
        subject(&[("user_id", "43"), ("email", "ada@example.com")]),
        subject(&[("user_id", "45")]),
    ];
    let requests: Vec<_> = subjects.iter().map(|_| request()).collect();
    let name = CleanerName::parse("uploads").unwrap();
    let attempts: Vec<Attempt<'_>> = subjects
        .iter()
        .zip(&requests)
        .map(|(subject, request)| Attempt {
            request,
            cleaner: &name,
            attempt: 1,
            subject: Some(subject),
            due: None,
            public_url: "http://127.0.0.1:1",
            now: Utc::now(),
        })
        .collect();
    let outcomes = cleaner.attempt_batch(&attempts).await;
    let counts: Vec<u64> = outcomes
        .iter()
        .map(|o| deleted(o.as_ref().unwrap()))
        .collect();
    assert_eq!(counts, [3, 3, 0]);
    assert_eq!(fx.keys(BUCKET).await, set(&["uploads/44/a.png"]));
}

#[tokio::test]
async fn an_outage_is_retried_and_a_missing_bucket_is_not() {
    let Some(mut fx) = Fixture::start().await else {
        return;
    };
    let secret_id = "user-7731";
    fx.put(BUCKET, &["uploads/user-7731/a.png", "uploads/other/a.png"])
        .await;
    let cleaner = fx.cleaner(BUCKET, SETTINGS);
    let subject = subject(&[("user_id", secret_id)]);

    fx.moto.stop();
    match attempt(&cleaner, &subject).await {
        Outcome::Failed {
            retryable, error, ..
        } => {
            assert!(retryable, "{error}");
            assert!(!error.contains(secret_id), "{error}");
            assert!(error.contains("could not be reached"), "{error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // moto keeps its buckets in memory: the restarted server is seeded again.
    fx.moto.restart().await;
    fx.create_bucket(BUCKET).await;
    fx.put(BUCKET, &["uploads/user-7731/a.png", "uploads/other/a.png"])
        .await;
    assert_eq!(deleted(&attempt(&cleaner, &subject).await), 1);
    assert_eq!(fx.keys(BUCKET).await, set(&["uploads/other/a.png"]));

    let missing = fx.cleaner("no-such-bucket", SETTINGS);
    match attempt(&missing, &subject).await {
        Outcome::Failed {
            retryable,
            error,
            status_code,
            ..
        } => {
            assert!(!retryable, "{error}");
            assert_eq!(status_code, Some(404), "{error}");
            assert!(!error.contains(secret_id), "{error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_prefix_without_a_delimiter_after_its_placeholder_is_refused_at_start() {
    let toml = "[[cleaners]]\nname = \"uploads\"\nkind = \"object_store\"\n\
                url = \"s3://b\"\nprefixes = [\"uploads/{user_id}/\", \"uploads/{user_id}\"]\n";
    let error = Config::parse(toml).unwrap_err().to_string();
    assert!(error.contains("cleaners[0].prefixes[1]"), "{error}");
    assert!(error.contains("must be followed by `/`"), "{error}");
}
