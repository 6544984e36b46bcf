//! Reminders (ADR 16), driven by hand at chosen times: the saga is caught up after each step
//! and a timer round runs as at the time a test picks, so a test crosses a retry, a lease or
//! the end of the grace period without waiting for it. The notifier is a real HTTP service on
//! 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use lethe_domain::{Command, Event, RequestId};
use lethe_engine::app::{Requests, Submission};

use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::EventMetadata;
use lethe_engine::subscriptions::{SubscriptionRunner, Writing};
use lethe_engine::workflow::saga::{Saga, SAGA};
use lethe_engine::workflow::Workers;
use lethe_engine::workflow::{Job, JobKind, WorkflowStore};
use serde_json::json;

use super::support::config::TestConfig;
use super::support::fake_service::FakeService;
use super::support::TestStore;

/// The workflow without its loops: the test turns the crank.
struct Driven {
    requests: Requests,
    workflow: Arc<dyn WorkflowStore>,
    workers: Arc<Workers>,
    runner: SubscriptionRunner,
    saga: Writing<Saga, dyn WorkflowStore>,
    _store: TestStore,
}

/// A submitted request's times.
struct Submitted {
    id: RequestId,
    reminders: Vec<DateTime<Utc>>,
    due_at: DateTime<Utc>,
}

impl Driven {
    fn new(store: TestStore, config: &TestConfig) -> Self {
        let config = Arc::new(config.build());
        let (events, workflow) = store.stores();
        let requests = Requests::new(events.clone(), config.clone());
        let workers = Arc::new(Workers::new(
            requests.clone(),
            workflow.clone(),
            config.clone(),
            MasterKey::from_bytes([9; 32]),
            "test-worker".to_owned(),
            "http://127.0.0.1:1".to_owned(),
            lethe_engine::root::cleaners(&config).unwrap(),
        ));
        let runner = SubscriptionRunner {
            events,
            subscriptions: workflow.clone(),
            owner: "test-saga".to_owned(),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
        };
        let saga = Writing {
            subscriber: Saga { config },
            sink: workflow.clone(),
        };
        Self {
            requests,
            workflow,
            workers,
            runner,
            saga,
            _store: store,
        }
    }

    async fn submit(&self, user_id: &str) -> Submitted {
        let submission = Submission {
            subject: [("user_id".to_owned(), user_id.to_owned())].into(),
            jurisdiction: Some("gdpr".to_owned()),
            ..Submission::default()
        };
        let request = self
            .requests
            .submit(submission, None, "test")
            .await
            .unwrap()
            .loaded
            .request;
        self.catch_up().await;
        Submitted {
            id: request.id,
            reminders: request.reminders.iter().map(|r| r.at).collect(),
            due_at: request.due_at,
        }
    }

    /// Runs the saga until it has read the whole log as it is now. On Postgres an event is
    /// read only once every transaction older than its own has ended, in the whole cluster
    /// (other tests' included), so a round may find nothing yet: it waits for the checkpoint,
    /// as long as a busy shared server's longest transactions may take.
    async fn catch_up(&self) {
        let head = self.runner.events.head_position().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            self.runner.round(&self.saga).await.unwrap();
            let checkpoint = self.workflow.subscription_checkpoint(SAGA).await.unwrap();
            if checkpoint.is_some_and(|c| c.position >= head) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the saga did not reach position {head}: {checkpoint:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One timer round as at `at` (the saga caught up before and after); how many jobs ran.
    async fn timers_at(&self, at: DateTime<Utc>) -> usize {
        self.catch_up().await;
        let ran = self.workers.run_timer_round(at).await;
        self.catch_up().await;
        ran
    }

    async fn events(&self, id: RequestId) -> Vec<Event> {
        let loaded = self.requests.load(id).await.unwrap().unwrap();
        loaded.events.iter().map(|e| e.event().unwrap()).collect()
    }

    /// The reminder outcomes in the log, as (type, payload).
    async fn outcomes(&self, id: RequestId) -> Vec<(&'static str, serde_json::Value)> {
        self.events(id)
            .await
            .into_iter()
            .filter(|e| matches!(e, Event::ReminderSent(_) | Event::ReminderNotSent(_)))
            .map(|e| (e.event_type(), e.payload()))
            .collect()
    }

    async fn reminder_jobs(&self, id: RequestId) -> Vec<Job> {
        let mut jobs = self.workflow.jobs_of(id).await.unwrap();
        jobs.retain(|j| j.kind == JobKind::Remind);
        jobs
    }

    async fn execute(&self, id: RequestId, command: Command) {
        self.requests
            .execute(id, &EventMetadata::new("test"), |_| command.clone())
            .await
            .unwrap();
        self.catch_up().await;
    }
}

fn config(notifier: Option<&FakeService>, reminders: &[&str]) -> TestConfig {
    let config = TestConfig::new().grace("1h").reminders(reminders);
    match notifier {
        Some(notifier) => config.notifier(&notifier.url, None, Some("2s")),
        None => config,
    }
}

fn at_ms(base: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
    base + TimeDelta::milliseconds(ms)
}

/// The notifier fails twice, then accepts: nothing is recorded until it accepts, then exactly
/// one `ReminderSent` counting the three calls, each with the same `Idempotency-Key`.
async fn a_reminder_is_recorded_sent_once_the_notifier_accepts(store: TestStore) {
    let notifier = FakeService::start(&[503, 503]).await;
    let driven = Driven::new(store, &config(Some(&notifier), &["30m"]));
    let request = driven.submit("1").await;
    let reminder_at = request.reminders[0];

    assert_eq!(driven.timers_at(at_ms(reminder_at, -1)).await, 0);
    assert!(
        super::reminder_calls(&notifier).is_empty(),
        "no call before its time"
    );

    let mut at = reminder_at;
    for failed in 1..=2 {
        driven.timers_at(at).await;
        assert_eq!(super::reminder_calls(&notifier).len(), failed);
        assert_eq!(driven.outcomes(request.id).await, [], "recorded while down");
        let jobs = driven.reminder_jobs(request.id).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].attempt, u32::try_from(failed).unwrap());
        assert!(jobs[0].run_at > at, "retried later: {jobs:?}");
        assert!(jobs[0].run_at < request.due_at);
        at = jobs[0].run_at;
    }
    driven.timers_at(at).await;
    let calls = super::reminder_calls(&notifier);
    assert_eq!(calls.len(), 3);
    for call in &calls {
        assert_eq!(call.idempotency_key, format!("{}:reminder:0", request.id));
        assert_eq!(call.body["reminder"], 0);
        assert_eq!(call.body["subject"]["user_id"], "1");
    }
    let outcomes = driven.outcomes(request.id).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].0, "ReminderSent");
    assert_eq!(outcomes[0].1["index"], 0);
    assert_eq!(outcomes[0].1["calls"], 3);
    assert!(driven.reminder_jobs(request.id).await.is_empty());

    // Nothing more happens to it, up to and after the end of the grace period.
    driven.timers_at(at_ms(request.due_at, -1)).await;
    driven.timers_at(request.due_at).await;
    assert_eq!(super::reminder_calls(&notifier).len(), 3);
    let types: Vec<_> = driven
        .events(request.id)
        .await
        .iter()
        .map(Event::event_type)
        .collect();
    assert_eq!(types, ["Received", "ReminderSent", "Due", "Completed"]);
}

/// A request that completes while its reminder waits for a retry, and one cancelled before its
/// reminder's time: neither gets a `ReminderSent`, both get a `ReminderNotSent` saying why,
/// and the notifier is not called for them again.
async fn a_request_that_closes_before_the_notifier_accepts_records_its_reminder_not_sent(
    store: TestStore,
) {
    let notifier = FakeService::start(&[503]).await;
    let driven = Driven::new(store, &config(Some(&notifier), &["30m"]));
    let completed = driven.submit("1").await;

    driven.timers_at(completed.reminders[0]).await;
    assert_eq!(super::reminder_calls(&notifier).len(), 1);
    assert_eq!(driven.outcomes(completed.id).await, []);
    let retry = driven.reminder_jobs(completed.id).await[0].run_at;

    // An administrator expedites it; with no cleaner it completes at once.
    driven
        .execute(
            completed.id,
            Command::MarkDue {
                at: at_ms(completed.reminders[0], 100),
                cleaners: vec![],
                expedite: true,
                reason: None,
            },
        )
        .await;
    assert_eq!(
        driven.reminder_jobs(completed.id).await.len(),
        1,
        "closing keeps the reminder's job: it ends by recording an outcome"
    );
    let calls_before = super::reminder_calls(&notifier).len();
    driven.timers_at(retry).await;
    assert_eq!(
        super::reminder_calls(&notifier).len(),
        calls_before,
        "no call once completed"
    );
    let outcomes = driven.outcomes(completed.id).await;
    assert_eq!(
        outcomes,
        [(
            "ReminderNotSent",
            json!({"index": 0, "at": outcomes[0].1["at"], "reason": "grace_over", "calls": 1})
        )]
    );
    assert!(driven.reminder_jobs(completed.id).await.is_empty());

    // A request cancelled before its reminder's time.
    let late = driven.submit("3").await;
    driven
        .execute(
            late.id,
            Command::Cancel {
                at: at_ms(late.reminders[0], -1000),
                reason: None,
            },
        )
        .await;
    let calls_before = super::reminder_calls(&notifier).len();
    driven.timers_at(late.reminders[0]).await;
    assert_eq!(super::reminder_calls(&notifier).len(), calls_before);
    let outcomes = driven.outcomes(late.id).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].0, "ReminderNotSent");
    assert_eq!(outcomes[0].1["reason"], "cancelled");
    assert!(outcomes[0].1.get("calls").is_none(), "no call was made");
}

/// A worker claims the reminder and dies; its lease runs past the end of the grace period.
/// The request becomes due meanwhile, and the reminder, claimed again once the lease ran out,
/// is recorded as not sent (grace over) without calling the notifier.
async fn a_reminder_whose_lease_outlasts_the_grace_period_still_ends_in_an_outcome(
    store: TestStore,
) {
    let notifier = FakeService::start(&[]).await;
    let driven = Driven::new(store, &config(Some(&notifier), &["30m"]));
    let request = driven.submit("1").await;
    let reminder_at = request.reminders[0];
    let lease = Duration::from_secs(2 * 3600);
    let claimed = driven
        .workflow
        .claim_jobs(&[JobKind::Remind], "dead-worker", reminder_at, lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    driven.timers_at(request.due_at).await;
    assert_eq!(driven.outcomes(request.id).await, [], "still leased");
    let lease_over = reminder_at + TimeDelta::from_std(lease).unwrap();
    driven.timers_at(lease_over).await;
    assert_eq!(driven.outcomes(request.id).await, [], "still leased");

    driven.timers_at(at_ms(lease_over, 1)).await;
    assert!(
        super::reminder_calls(&notifier).is_empty(),
        "a reminder after the grace period"
    );
    let outcomes = driven.outcomes(request.id).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].0, "ReminderNotSent");
    assert_eq!(outcomes[0].1["reason"], "grace_over");
    assert!(driven.reminder_jobs(request.id).await.is_empty());
}

/// The process is killed while the notifier holds the call: nothing is recorded. The job runs
/// again once its lease is over, calls again with the same `Idempotency-Key`, and records the
/// acceptance.
async fn a_crash_during_the_notifier_call_records_nothing_until_a_call_is_accepted(
    store: TestStore,
) {
    let notifier = FakeService::start_slow(Duration::from_millis(300)).await;
    let driven = Driven::new(store, &config(Some(&notifier), &["30m"]));
    let request = driven.submit("1").await;
    let reminder_at = request.reminders[0];

    let workers = driven.workers.clone();
    let round = tokio::spawn(async move { workers.run_timer_round(reminder_at).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while super::reminder_calls(&notifier).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the notifier was not called"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    round.abort();
    assert!(round.await.unwrap_err().is_cancelled(), "killed mid-call");
    driven.catch_up().await;
    assert_eq!(driven.outcomes(request.id).await, []);

    // Once the timer lease (30 s by default) is over, the job runs again.
    let after_lease = reminder_at + TimeDelta::seconds(60);
    driven.timers_at(after_lease).await;
    let calls = super::reminder_calls(&notifier);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    let outcomes = driven.outcomes(request.id).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].0, "ReminderSent");
}

/// Without a `[notifier]`, and for a request on hold, a reminder's time records why it was
/// not sent.
async fn without_a_notifier_or_while_on_hold_a_reminder_is_recorded_not_sent(store: TestStore) {
    let driven = Driven::new(store, &config(None, &["30m", "10m"]));
    let plain = driven.submit("1").await;
    let held = driven.submit("2").await;
    driven
        .execute(
            held.id,
            Command::PlaceHold {
                at: at_ms(held.reminders[0], -1000),
                reason: "litigation".to_owned(),
            },
        )
        .await;

    driven
        .timers_at(plain.reminders[1].max(held.reminders[1]))
        .await;
    let reasons = |outcomes: Vec<(&str, serde_json::Value)>| -> Vec<(String, serde_json::Value)> {
        outcomes
            .into_iter()
            .map(|(kind, payload)| (kind.to_owned(), payload["reason"].clone()))
            .collect()
    };
    let not_sent = |reason: &str| ("ReminderNotSent".to_owned(), json!(reason));
    assert_eq!(
        reasons(driven.outcomes(plain.id).await),
        [not_sent("no_notifier"), not_sent("no_notifier")]
    );
    assert_eq!(
        reasons(driven.outcomes(held.id).await),
        [not_sent("on_hold"), not_sent("on_hold")]
    );
    // What `show` and `GET /v1/requests/{id}` give for them.
    let loaded = driven.requests.load(plain.id).await.unwrap().unwrap();
    let view = serde_json::to_value(lethe_engine::app::views::RequestView::new(&loaded)).unwrap();
    let reminder = &view["reminders"][0];
    assert_eq!(reminder["status"], "not_sent", "{view}");
    assert_eq!(reminder["sent"], false);
    assert_eq!(reminder["reason"], "no_notifier");
    assert!(reminder["outcome_at"].is_string(), "{view}");
}

/// A log written before ADR 16: `Reminded` was recorded, the notifier's job still pending at
/// the upgrade. The new version delivers it while it is useful and records the acceptance;
/// once moot it leaves it `reminded`, since the old version may have delivered it.
async fn a_reminded_event_of_an_older_version_is_delivered_or_left_as_it_was(store: TestStore) {
    let notifier = FakeService::start(&[]).await;
    let driven = Driven::new(store, &config(Some(&notifier), &["30m"]));
    let useful = driven.submit("1").await;
    let moot = driven.submit("2").await;
    for request in [&useful, &moot] {
        let legacy = Event::Reminded(lethe_domain::event::Reminded {
            index: 0,
            at: request.reminders[0],
        });
        driven
            .requests
            .store()
            .append(
                request.id,
                1,
                &[legacy],
                &EventMetadata::new("system:timers"),
            )
            .await
            .unwrap();
    }
    driven.catch_up().await;
    driven
        .execute(
            moot.id,
            Command::Cancel {
                at: at_ms(moot.reminders[0], 1),
                reason: None,
            },
        )
        .await;
    let kinds = |jobs: Vec<Job>| -> Vec<JobKind> {
        jobs.into_iter()
            .filter(|j| j.kind.is_reminder())
            .map(|j| j.kind)
            .collect()
    };
    assert_eq!(
        kinds(driven.workflow.jobs_of(useful.id).await.unwrap()),
        [JobKind::Notify]
    );
    assert_eq!(
        kinds(driven.workflow.jobs_of(moot.id).await.unwrap()),
        [JobKind::Notify]
    );

    driven.timers_at(at_ms(moot.reminders[0], 2)).await;
    let calls = super::reminder_calls(&notifier);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].idempotency_key,
        format!("{}:reminder:0", useful.id)
    );
    assert_eq!(driven.outcomes(useful.id).await[0].0, "ReminderSent");
    assert_eq!(driven.outcomes(moot.id).await, []);
    let state = driven.requests.load(moot.id).await.unwrap().unwrap();
    assert_eq!(state.request.reminders[0].outcome.as_str(), "reminded");
    for id in [useful.id, moot.id] {
        assert_eq!(kinds(driven.workflow.jobs_of(id).await.unwrap()), []);
    }
}

super::support::backends!(
    a_reminder_is_recorded_sent_once_the_notifier_accepts,
    a_request_that_closes_before_the_notifier_accepts_records_its_reminder_not_sent,
    a_reminder_whose_lease_outlasts_the_grace_period_still_ends_in_an_outcome,
    a_crash_during_the_notifier_call_records_nothing_until_a_call_is_accepted,
    without_a_notifier_or_while_on_hold_a_reminder_is_recorded_not_sent,
    a_reminded_event_of_an_older_version_is_delivered_or_left_as_it_was,
);
