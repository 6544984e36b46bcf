//! The cleaner called as the workflow calls it: what an attempt, a batch and a dry run delete
//! and leave on a real server, and how failures come back.

use std::collections::BTreeMap;
use std::io::Write as _;

use chrono::Utc;
use lethe_domain::event::Received;
use lethe_domain::state::Request;
use lethe_domain::{
    CleanerName, DeadlineRule, DeletionRequest, Event, Jurisdiction, RequestId, Subject,
    SubjectRecord,
};
use lethe_engine::cleaners::redis::RedisCleaner;
use lethe_engine::cleaners::{Attempt, Cleaner, Outcome};
use lethe_engine::config::{CleanerKind, Config};

use crate::keyspace::{seeded_without, Keyspace, EMAIL, NEIGHBOURS, SUBJECT};
use crate::redis_url;
use crate::support::chaos_proxy::{ChaosProxy, Mode};

/// The cleaner `cache` with these settings (TOML lines under `[[cleaners]]`).
fn build(url: &str, settings: &str) -> RedisCleaner {
    let config = Config::parse(&format!(
        "[[cleaners]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"{url}\"\n{settings}\n"
    ))
    .unwrap();
    let cleaner = &config.cleaners[0];
    let CleanerKind::Redis(redis) = &cleaner.kind else {
        panic!("not a redis cleaner")
    };
    RedisCleaner::new(cleaner, redis).unwrap()
}

/// A request received now; the cleaner reads only its subject, given beside it.
fn request() -> Request {
    let now = Utc::now();
    let subject = BTreeMap::from([("user_id".to_owned(), "0".to_owned())]);
    let received = Received {
        request_id: RequestId::from_uuid(uuid::Uuid::now_v7()),
        subject: SubjectRecord::Plain(Subject::parse(subject).unwrap()),
        jurisdiction: Jurisdiction::parse("gdpr").unwrap(),
        source: None,
        reason: None,
        external_id: None,
        tags: vec![],
        received_at: now,
        due_at: now,
        reminders: vec![],
        deadline_rule: DeadlineRule::GDPR,
        deadline: now.date_naive(),
        awaiting_approval: false,
    };
    DeletionRequest::fold([Event::Received(received)])
        .request()
        .unwrap()
        .clone()
}

fn subject(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn attempt<'a>(
    request: &'a Request,
    cleaner: &'a CleanerName,
    subject: Option<&'a BTreeMap<String, String>>,
) -> Attempt<'a> {
    Attempt {
        request,
        cleaner,
        attempt: 1,
        subject,
        due: None,
        public_url: "http://127.0.0.1:9",
        now: Utc::now(),
    }
}

/// `(keys, fields)` of a success; fails on anything else.
#[track_caller]
fn deleted(outcome: &Outcome) -> (u64, u64) {
    match outcome {
        Outcome::Succeeded {
            deleted: Some(deleted),
            ..
        } => (deleted["keys"], deleted["fields"]),
        other => panic!("not a success with counts: {other:?}"),
    }
}

/// `(error, retryable)` of a failure; fails on anything else.
#[track_caller]
fn failure(outcome: &Outcome) -> (&str, bool) {
    match outcome {
        Outcome::Failed {
            error, retryable, ..
        } => (error, *retryable),
        other => panic!("not a failure: {other:?}"),
    }
}

fn cache() -> CleanerName {
    CleanerName::parse("cache").unwrap()
}

#[tokio::test]
async fn an_attempt_erases_the_subject_and_leaves_every_neighbour_even_hostile_ids() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    space.seed().await;
    let cleaner = build(&url, &space.settings());
    let (request, name) = (request(), cache());
    let ada = subject(&[("user_id", SUBJECT), ("email", EMAIL)]);

    let outcome = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    let outcome = outcome.unwrap();
    assert_eq!(
        deleted(&outcome),
        (4, 1),
        "user, profile, 2 sessions; 1 field"
    );
    assert_eq!(space.dump().await, seeded_without(&[SUBJECT]));

    let again = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    assert_eq!(
        deleted(&again.unwrap()),
        (0, 0),
        "a re-run finds nothing more"
    );

    // The most dangerous ids first: each erases its own data and nothing of the others'.
    let mut erased = vec![SUBJECT];
    for id in ["*", "?", "[a]", "\\", "4200", "420"] {
        let someone = subject(&[("user_id", id)]);
        let outcome = cleaner
            .attempt(attempt(&request, &name, Some(&someone)))
            .await
            .unwrap();
        assert_eq!(deleted(&outcome), (3, 1), "subject {id:?}: {outcome:?}");
        let Outcome::Succeeded { detail, .. } = &outcome else {
            unreachable!()
        };
        let detail = detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("keys[1]") && detail.contains("the subject has no email"),
            "the profile template is skipped, and said so: {detail}"
        );
        erased.push(id);
        assert_eq!(space.dump().await, seeded_without(&erased), "after {id:?}");
    }
    assert_eq!(erased.len(), 1 + NEIGHBOURS.len());
    space.clean_up().await;
}

#[tokio::test]
async fn a_dry_run_lists_what_would_go_and_changes_nothing() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    space.seed().await;
    let cleaner = build(&url, &space.settings());
    let before = space.dump().await;
    let p = space.prefix.clone();

    let found = cleaner
        .dry_run(&subject(&[("user_id", "*"), ("email", EMAIL)]))
        .await
        .unwrap();
    assert_eq!(space.dump().await, before, "a dry run deletes nothing");
    let items: Vec<(&str, Option<u64>, Vec<String>)> = found
        .items
        .iter()
        .map(|i| (i.target.as_str(), i.matched, i.keys.clone()))
        .collect();
    assert_eq!(
        items,
        [
            (
                format!("{p}user:{{user_id}}").as_str(),
                Some(1),
                vec![format!("{p}user:*")]
            ),
            (
                format!("{p}profile:{{email}}").as_str(),
                Some(1),
                vec![format!("{p}profile:{EMAIL}")]
            ),
            (
                format!("{p}session:{{user_id}}:*").as_str(),
                Some(2),
                vec![format!("{p}session:*:a"), format!("{p}session:*:b")]
            ),
            (
                format!("{p}last_seen {{user_id}}").as_str(),
                Some(1),
                vec![format!("{p}last_seen")]
            ),
        ]
    );

    let nobody = cleaner
        .dry_run(&subject(&[("email", "nobody@example.com")]))
        .await
        .unwrap();
    assert_eq!(
        nobody.items[0].skipped.as_deref(),
        Some("the subject has no user_id")
    );
    assert_eq!(nobody.items[1].matched, Some(0));
    assert_eq!(space.dump().await, before);
    space.clean_up().await;
}

#[tokio::test]
async fn a_pattern_over_many_scan_pages_is_followed_to_its_end() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    let mut mine: Vec<String> = (0..2_000).map(|i| format!("session:42:{i}")).collect();
    let theirs: Vec<String> = (0..100).map(|i| format!("session:420:{i}")).collect();
    mine.extend(theirs.iter().cloned());
    space.set_many(&mine).await;
    let cleaner = build(&url, &space.settings());
    let (request, name) = (request(), cache());
    let someone = subject(&[("user_id", "42")]);

    let found = cleaner.dry_run(&someone).await.unwrap();
    assert_eq!(found.items[2].matched, Some(2_000));
    let outcome = cleaner
        .attempt(attempt(&request, &name, Some(&someone)))
        .await
        .unwrap();
    assert_eq!(deleted(&outcome), (2_000, 0));
    let left: Vec<String> = space.keys().await.into_iter().collect();
    let mut expected = theirs;
    expected.sort();
    assert_eq!(left, expected, "only the neighbour's sessions are left");
    space.clean_up().await;
}

#[tokio::test]
async fn a_batch_answers_for_each_request_and_a_refused_command_fails_only_its_own() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    space.seed().await;
    // 420's preferences are not a hash: HDEL answers WRONGTYPE for 420 alone.
    space.set("prefs:420").await;
    space.hset("prefs:42", "seen").await;
    let p = space.prefix.clone();
    let settings = format!(
        "{}\nhash_fields = [{{ key = \"{p}last_seen\", field = \"{{user_id}}\" }}, \
         {{ key = \"{p}prefs:{{user_id}}\", field = \"seen\" }}]",
        space
            .settings()
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cleaner = build(&url, &settings);
    let (request, name) = (request(), cache());
    let (ada, neighbour, star) = (
        subject(&[("user_id", SUBJECT), ("email", EMAIL)]),
        subject(&[("user_id", "420")]),
        subject(&[("user_id", "*")]),
    );
    let attempts = [
        attempt(&request, &name, Some(&ada)),
        attempt(&request, &name, Some(&neighbour)),
        attempt(&request, &name, None),
        attempt(&request, &name, Some(&star)),
    ];
    let outcomes: Vec<Outcome> = cleaner
        .attempt_batch(&attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes.len(), 4);
    assert_eq!(deleted(&outcomes[0]), (4, 2));
    let (error, retryable) = failure(&outcomes[1]);
    assert!(!retryable, "WRONGTYPE will not mend itself");
    assert!(
        error.contains("hash_fields[1]") && error.contains("WRONGTYPE") && !error.contains("420"),
        "{error}"
    );
    let (error, _) = failure(&outcomes[2]);
    assert!(error.contains("identifiers could not be read"), "{error}");
    assert_eq!(deleted(&outcomes[3]), (3, 1));
    let left = space.keys().await;
    for id in ["4200", "?", "[a]", "\\"] {
        assert!(left.contains(&format!("user:{id}")), "{id}'s data is left");
        assert!(
            left.contains(&format!("session:{id}:a")),
            "{id}'s data is left"
        );
    }
    for gone in [
        "user:42",
        "session:42:a",
        "session:*:b",
        "user:*",
        "prefs:42",
    ] {
        assert!(!left.contains(gone), "{gone} is erased");
    }
    space.clean_up().await;
}

#[tokio::test]
async fn an_unreachable_or_silent_server_is_a_retryable_failure_and_the_next_attempt_succeeds() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    space.seed().await;
    let proxy = ChaosProxy::start(space.addr()).await;
    let settings = format!("timeout = \"1s\"\n{}", space.settings());
    let cleaner = build(&space.url_via(proxy.addr()), &settings);
    let (request, name) = (request(), cache());
    let ada = subject(&[("user_id", SUBJECT), ("email", EMAIL)]);

    proxy.set(Mode::Refuse).await;
    let refused = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    let refused = refused.unwrap();
    let (error, retryable) = failure(&refused);
    assert!(retryable, "{error}");
    assert!(
        !error.contains(SUBJECT) && !error.contains(EMAIL),
        "{error}"
    );
    assert_eq!(space.dump().await, seeded_without(&[]), "nothing deleted");

    proxy.set(Mode::Open).await;
    let outcome = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    assert_eq!(deleted(&outcome.unwrap()), (4, 1));

    // The connection cut: the attempt on it fails at once, retryable.
    proxy.set(Mode::Blackhole).await;
    proxy.reset_all();
    let cut = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    let cut = cut.unwrap();
    let (error, retryable) = failure(&cut);
    assert!(retryable, "{error}");
    // A server that accepts and never answers: the attempt ends at the timeout (1 s).
    let started = std::time::Instant::now();
    let silent = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    let silent = silent.unwrap();
    let (error, retryable) = failure(&silent);
    assert!(retryable, "{error}");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(10),
        "waited {waited:?}: {error}"
    );
    proxy.set(Mode::Open).await;
    let outcome = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    assert_eq!(deleted(&outcome.unwrap()), (0, 0));
    space.clean_up().await;
}

#[tokio::test]
async fn a_password_the_server_refuses_is_a_final_failure_that_does_not_show_it() {
    let Some(url) = redis_url() else { return };
    let space = Keyspace::open(&url).await;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "hunter2-not-the-password").unwrap();
    let settings = format!(
        "password_file = \"{}\"\n{}",
        file.path().display(),
        space.settings()
    );
    let cleaner = build(&url, &settings);
    assert!(!format!("{cleaner:?}").contains("hunter2"));
    let (request, name) = (request(), cache());
    let ada = subject(&[("user_id", SUBJECT)]);
    let outcome = cleaner.attempt(attempt(&request, &name, Some(&ada))).await;
    let outcome = outcome.unwrap();
    let (error, retryable) = failure(&outcome);
    assert!(!retryable, "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn a_missing_password_file_stops_the_build_naming_the_setting() {
    let config = Config::parse(
        "[[cleaners]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"redis://127.0.0.1:9/0\"\n\
         password_file = \"/nonexistent/lethe-redis-password\"\nkeys = [\"u:{user_id}\"]\n",
    )
    .unwrap();
    let CleanerKind::Redis(redis) = &config.cleaners[0].kind else {
        panic!("not a redis cleaner")
    };
    let error = RedisCleaner::new(&config.cleaners[0], redis).unwrap_err();
    assert!(error.to_string().contains("password_file"), "{error}");
}
