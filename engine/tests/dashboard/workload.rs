//! The workload: a seeded log whose statistics the page must show.

use super::*;

/// The requests of the seeded workload whose place on the page is known.
#[derive(Debug)]
pub(crate) struct Seeded {
    pub(crate) overdue: RequestId,
    /// Most urgent first: a GDPR request received 27 days ago (1-4 days left), then a CCPA one
    /// received 40 days ago (5 days left).
    pub(crate) at_risk: [RequestId; 2],
}

pub(crate) fn meta() -> EventMetadata {
    EventMetadata::new("test")
}

pub(crate) fn plan(names: &[&str], max_attempts: u32) -> Vec<PlannedCleaner> {
    names
        .iter()
        .map(|n| PlannedCleaner {
            name: CleanerName::parse(*n).unwrap(),
            max_attempts,
            stores: Vec::new(),
        })
        .collect()
}

/// A request received at `received_at`: the aggregate decides `Receive` with the policy of the
/// jurisdiction (so the deadline is computed from that day), and the log records it.
pub(crate) async fn received(
    requests: &Requests,
    n: usize,
    jurisdiction: &str,
    received_at: DateTime<Utc>,
) -> RequestId {
    let jurisdiction = Jurisdiction::parse(jurisdiction).unwrap();
    let policy = requests
        .config()
        .request_policy(&jurisdiction, None)
        .unwrap();
    let id = RequestId::from_uuid(uuid::Uuid::now_v7());
    let receive = Receive {
        request_id: id,
        subject: Subject::parse(BTreeMap::from([(
            "user_id".to_owned(),
            format!("dash-{n}"),
        )]))
        .unwrap()
        .into(),
        jurisdiction,
        source: Some("app".into()),
        reason: None,
        external_id: None,
        tags: Vec::new(),
        received_at,
        policy,
    };
    let events =
        DeletionRequest::handle_command(&RequestState::NotReceived, Command::Receive(receive))
            .unwrap();
    requests
        .store()
        .append(id, 0, &events, &meta())
        .await
        .unwrap();
    id
}

pub(crate) async fn submitted(requests: &Requests, n: usize) -> RequestId {
    requests
        .submit(
            Submission {
                subject: BTreeMap::from([("user_id".to_owned(), format!("dash-{n}"))]),
                jurisdiction: Some("gdpr".into()),
                ..Submission::default()
            },
            None,
            "test",
        )
        .await
        .unwrap()
        .loaded
        .request
        .id
}

pub(crate) async fn run(requests: &Requests, id: RequestId, command: Command) {
    requests
        .execute(id, &meta(), move |_| command.clone())
        .await
        .unwrap();
}

pub(crate) fn due(at: DateTime<Utc>, names: &[&str], expedite: bool) -> Command {
    Command::MarkDue {
        at,
        cleaners: plan(names, 2),
        expedite,
        reason: None,
    }
}

pub(crate) fn success(cleaner: &str, attempt: u32, at: DateTime<Utc>) -> Command {
    Command::RecordCleanerSuccess {
        cleaner: CleanerName::parse(cleaner).unwrap(),
        attempt,
        at,
        deleted: None,
        detail: None,
    }
}

pub(crate) fn failure(cleaner: &str, attempt: u32, at: DateTime<Utc>) -> Command {
    Command::RecordCleanerFailure {
        cleaner: CleanerName::parse(cleaner).unwrap(),
        attempt,
        at,
        error: "HTTP 503".into(),
        status_code: Some(503),
        retryable: true,
        retry_after_seconds: None,
    }
}

/// Twelve requests with histories spread over the last ten weeks.
pub(crate) async fn seed(requests: &Requests) -> Seeded {
    let now = now_micros();
    let ago = |days: i64| now - TimeDelta::days(days);
    let minutes = |m: i64| TimeDelta::minutes(m);

    // Completed 39 days ago, after the 30-day grace period; crm needed a second attempt.
    let id = received(requests, 1, "gdpr", ago(70)).await;
    run(requests, id, due(ago(40), &["billing", "crm"], false)).await;
    run(requests, id, success("billing", 1, ago(40) + minutes(2))).await;
    run(requests, id, failure("crm", 1, ago(40) + minutes(3))).await;
    run(requests, id, success("crm", 2, ago(39))).await;
    // Completed 15 days ago.
    let id = received(requests, 2, "gdpr", ago(45)).await;
    run(requests, id, due(ago(15), &["billing", "crm"], false)).await;
    run(requests, id, success("billing", 1, ago(15) + minutes(1))).await;
    run(requests, id, success("crm", 1, ago(15) + minutes(15))).await;
    // Expedited, completed in two days.
    let id = received(requests, 3, "ccpa", ago(20)).await;
    run(
        requests,
        id,
        due(ago(20) + minutes(60), &["billing", "crm"], true),
    )
    .await;
    run(requests, id, success("billing", 1, ago(20) + minutes(61))).await;
    run(requests, id, success("crm", 1, ago(18))).await;
    // Expedited, completed now.
    let id = submitted(requests, 4).await;
    run(requests, id, due(now_micros(), &["billing", "crm"], true)).await;
    run(requests, id, success("billing", 1, now_micros())).await;
    run(requests, id, success("crm", 1, now_micros())).await;
    // crm failed both attempts: needs attention.
    let id = received(requests, 5, "gdpr", ago(3)).await;
    run(
        requests,
        id,
        due(ago(3) + minutes(10), &["billing", "crm"], true),
    )
    .await;
    run(requests, id, success("billing", 1, ago(3) + minutes(11))).await;
    run(requests, id, failure("crm", 1, ago(3) + minutes(12))).await;
    run(requests, id, failure("crm", 2, ago(3) + minutes(20))).await;
    // On hold; cancelled; rejected.
    let id = submitted(requests, 6).await;
    run(
        requests,
        id,
        Command::PlaceHold {
            at: now_micros(),
            reason: "litigation".into(),
        },
    )
    .await;
    let id = submitted(requests, 7).await;
    run(
        requests,
        id,
        Command::Cancel {
            at: now_micros(),
            reason: None,
        },
    )
    .await;
    let id = received(requests, 8, "gdpr", ago(5)).await;
    run(
        requests,
        id,
        Command::Reject {
            at: ago(4),
            reason: "not a customer".into(),
        },
    )
    .await;
    // Received 40 days ago under GDPR (one month): its deadline passed 9-12 days ago while
    // billing kept failing.
    let overdue = received(requests, 9, "gdpr", ago(40)).await;
    run(requests, overdue, due(ago(10), &["billing"], false)).await;
    run(
        requests,
        overdue,
        failure("billing", 1, ago(10) + minutes(1)),
    )
    .await;
    // Close to their deadlines, still in the grace period.
    let gdpr = received(requests, 10, "gdpr", ago(27)).await;
    let ccpa = received(requests, 11, "ccpa", ago(40)).await;
    // Just received.
    submitted(requests, 12).await;
    Seeded {
        overdue,
        at_risk: [gdpr, ccpa],
    }
}

pub(crate) fn engine(database: &Database, config: Config) -> Requests {
    Requests::new(database.events.clone(), Arc::new(config))
        .with_projections(database.projections.clone())
}

pub(crate) async fn seeded(store: &TestStore, config: Config) -> (axum::Router, Seeded) {
    let database = store.database();
    let requests = engine(&database, config);
    let seeded = seed(&requests).await;
    lethe_engine::projections::catch_up(&database.events, &database.projections)
        .await
        .unwrap();
    let app = router(AppState {
        requests,
        key: MasterKey::from_bytes([7; 32]),
    });
    (app, seeded)
}
