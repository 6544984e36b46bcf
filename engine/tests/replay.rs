//! Full replay: a request rebuilt at any point of its history (`show_at`, the `?at=` of
//! `GET /v1/requests/{id}`, and the history's `state_after`) is exactly the aggregate's own
//! fold of the events up to that point, for every prefix of many generated histories.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use lethe_domain::policy::Span;
use lethe_domain::state::{CleanerState, Request};
use lethe_domain::{Aggregate, CleanerName, Command, DeletionRequest, RequestId, RequestState};
use lethe_engine::app::planning::plan_cleaners;
use lethe_engine::app::replay::At;
use lethe_engine::app::views::RequestView;
use lethe_engine::app::{RequestError, Requests, Submission};
use lethe_engine::store::{EventMetadata, RecordedEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::config::{Cleaner, TestConfig};
use support::TestStore;

/// Histories generated per backend, and commands tried on each.
const HISTORIES: u64 = 16;
const COMMANDS: usize = 14;

/// One command chosen at random for `request` as it is now; the aggregate may refuse it (a
/// release without a hold), which leaves the history as it was, as a refused command does.
fn random_command(
    rng: &mut StdRng,
    request: &Request,
    config: &lethe_engine::config::Config,
) -> Command {
    let at = Utc::now();
    let pending: Vec<(CleanerName, u32)> = request
        .cleaning()
        .map(|c| {
            c.cleaners
                .iter()
                .filter(|(_, p)| p.state == CleanerState::Pending)
                .map(|(name, p)| (name.clone(), p.next_attempt()))
                .collect()
        })
        .unwrap_or_default();
    let cleaner = || pending.first().cloned();
    match rng.random_range(0..10) {
        8 => Command::Approve {
            at,
            policy: config.grace_policy(request.deadline_rule, true),
            reason: None,
        },
        0 => Command::PlaceHold {
            at,
            reason: "legal review".to_owned(),
        },
        1 => Command::ReleaseHold { at, reason: None },
        2 => Command::ExtendDeadline {
            at,
            by: Span::days(rng.random_range(1..20)),
            reason: "complex".to_owned(),
        },
        3 | 4 => Command::MarkDue {
            at,
            cleaners: plan_cleaners(config, request),
            expedite: true,
            reason: None,
        },
        5 => match cleaner() {
            Some((cleaner, attempt)) => Command::RecordCleanerSuccess {
                cleaner,
                attempt,
                at,
                deleted: Some(BTreeMap::from([(
                    "rows".to_owned(),
                    rng.random_range(0..9),
                )])),
                detail: None,
            },
            None => Command::Cancel {
                at,
                reason: Some("changed my mind".to_owned()),
            },
        },
        6 => match cleaner() {
            Some((cleaner, attempt)) => Command::RecordCleanerFailure {
                cleaner,
                attempt,
                at,
                error: "busy".to_owned(),
                status_code: Some(503),
                retryable: true,
                retry_after_seconds: None,
            },
            None => Command::PlaceHold {
                at,
                reason: "again".to_owned(),
            },
        },
        7 => match cleaner() {
            Some((cleaner, _)) => Command::SkipCleaner {
                cleaner,
                at,
                reason: "no data there".to_owned(),
            },
            None => Command::ReleaseHold {
                at,
                reason: Some("done".to_owned()),
            },
        },
        _ => Command::Cancel { at, reason: None },
    }
}

/// Submits a request and drives it with random commands; returns its id.
async fn generated_history(requests: &Requests, seed: u64) -> RequestId {
    let mut rng = StdRng::seed_from_u64(seed);
    let subject = BTreeMap::from([("user_id".to_owned(), format!("replay-{seed}"))]);
    // Every other history awaits approval (its source requires it) until an `Approve`.
    let submission = Submission {
        subject,
        source: seed.is_multiple_of(2).then(|| "review".to_owned()),
        ..Submission::default()
    };
    let id = requests
        .submit(submission, None, "test")
        .await
        .unwrap()
        .loaded
        .request
        .id;
    let config = requests.config().clone();
    for _ in 0..COMMANDS {
        let loaded = requests.load(id).await.unwrap().unwrap();
        let command = random_command(&mut rng, &loaded.request, &config);
        let result = requests
            .execute(id, &EventMetadata::new("test"), move |_| command.clone())
            .await;
        match result {
            Ok(_) | Err(RequestError::Rejected(_)) => {}
            Err(other) => panic!("command on {id}: {other}"),
        }
    }
    id
}

/// The aggregate's own fold of `events`, as the view of the request after the last of them.
fn folded(events: &[RecordedEvent]) -> serde_json::Value {
    let mut state = RequestState::NotReceived;
    for event in events {
        state = DeletionRequest::apply_event(state, event.event().unwrap());
    }
    let request = state.request().expect("a prefix starts with Received");
    let version = events.last().unwrap().version;
    serde_json::to_value(RequestView::of(request, version)).unwrap()
}

async fn every_prefix_replays_as_the_aggregate_folds_it(store: TestStore) {
    let config = TestConfig::new()
        .cleaner(Cleaner::manual("billing"))
        .cleaner(Cleaner::manual("search"))
        .source_approval("review", "required")
        .build();
    let requests = Requests::new(store.store(), Arc::new(config));
    let mut prefixes = 0;
    for seed in 0..HISTORIES {
        let id = generated_history(&requests, seed).await;
        let events = store.store().read_stream(id, 0).await.unwrap();
        let history = requests.history(id, true).await.unwrap();
        assert_eq!(history.events.len(), events.len());
        for (k, event) in events.iter().enumerate() {
            let expected = folded(&events[..=k]);
            let at_position = requests
                .show_at(id, At::Position(event.position))
                .await
                .unwrap();
            assert_eq!(
                serde_json::to_value(&at_position).unwrap(),
                expected,
                "{id} at {}",
                event.position
            );
            let state_after = history.events[k]
                .state_after
                .as_ref()
                .expect("asked for states");
            assert_eq!(
                serde_json::to_value(state_after).unwrap(),
                expected,
                "{id} state_after {k}"
            );
            // By time: every event recorded by then, which may be more than k + 1 when several
            // share a microsecond.
            let by_time: Vec<RecordedEvent> = events
                .iter()
                .filter(|e| e.recorded_at <= event.recorded_at)
                .cloned()
                .collect();
            let at_time = requests
                .show_at(id, At::Time(event.recorded_at))
                .await
                .unwrap();
            assert_eq!(serde_json::to_value(&at_time).unwrap(), folded(&by_time));
            prefixes += 1;
        }
        let now = serde_json::to_value(requests.show(id).await.unwrap()).unwrap();
        assert_eq!(now, folded(&events), "the last point is the current state");
        let before = At::Position(events[0].position - 1);
        assert!(matches!(
            requests.show_at(id, before).await,
            Err(RequestError::NotYet { .. })
        ));
    }
    assert!(
        prefixes > HISTORIES as usize * 3,
        "the histories are too short: {prefixes} prefixes"
    );
}

async fn the_api_answers_a_request_as_it_was(store: TestStore) {
    let engine = support::engine::TestEngine::spawn(
        &store,
        TestConfig::new().cleaner(Cleaner::manual("billing")),
    )
    .await;
    let id = engine.submit(&[("user_id", "u-replay")]).await;
    engine.expedite(id).await;
    let events = store.store().read_stream(id, 0).await.unwrap();
    let received = &events[0];

    let (status, then) = engine
        .get(&format!("/v1/requests/{id}?at={}", received.position))
        .await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(then["status"], "pending");
    assert_eq!(then["version"], 1);
    let (_, now) = engine.get(&format!("/v1/requests/{id}")).await;
    assert_eq!(now["status"], "due", "{now}");
    let day = received.recorded_at.date_naive();
    let (status, by_day) = engine.get(&format!("/v1/requests/{id}?at={day}")).await;
    assert_eq!(
        (status, &by_day["status"]),
        (200, &now["status"]),
        "{by_day}"
    );

    let (status, problem) = engine.get(&format!("/v1/requests/{id}?at=yesterday")).await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].to_string().contains("at"), "{problem}");
    let (status, problem) = engine
        .get(&format!("/v1/requests/{id}?at={}", received.position - 1))
        .await;
    assert_eq!(status, 404, "{problem}");

    let (_, plain) = engine.get(&format!("/v1/requests/{id}/history")).await;
    assert!(plain["events"][0].get("state_after").is_none(), "{plain}");
    let (_, full) = engine
        .get(&format!("/v1/requests/{id}/history?states=true"))
        .await;
    assert_eq!(full["events"][0]["state_after"], then);
    assert_eq!(
        full["events"][events.len() - 1]["state_after"]["status"],
        "due"
    );
    engine.stop().await;
}

support::backends!(
    every_prefix_replays_as_the_aggregate_folds_it,
    the_api_answers_a_request_as_it_was,
);
