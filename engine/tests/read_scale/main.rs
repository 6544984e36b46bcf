//! Reads that do not grow with history (ADR 37), on both backends: the figures read from the
//! counters equal the pass over every row they replaced (`oracle.rs`) on a random workload —
//! kept live, after a rebuild, and after the migrations' fill of a database projected before
//! them; and every filter of the request list is planned on an index.

mod oracle;
#[path = "../support/mod.rs"]
mod support;

use chrono::{TimeDelta, Utc};
use lethe_domain::{CleanerName, Command, RequestId, RequestStatus};
use lethe_engine::app::annual_report::compute_annual_report;
use lethe_engine::app::stats::compute_stats;
use lethe_engine::projections::{rebuild, RequestFilter, REQUESTS};
use lethe_engine::root::Database;
use lethe_engine::store::EventMetadata;
use lethe_engine::subscriptions::SubscriptionRunner;
use lethe_projections::tallies::bucket;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::projection::{catch_up, plan, requests, runner};
use support::TestStore;

const AT_RISK_DAYS: u32 = 7;

/// One request's random life: left pending, on hold, cancelled, rejected, or due with each
/// cleaner succeeding (at once or at its second attempt), running out of attempts, skipped,
/// or left pending; every time spread over months and durations over 12 orders of magnitude.
/// The projection follows at random moments of it, so that rows change across batches.
async fn life(database: &Database, live: &SubscriptionRunner, id: RequestId, rng: &mut StdRng) {
    let requests = &requests(database);
    let meta = &EventMetadata::new("test");
    let now = Utc::now();
    let run = |command: Command| async move {
        requests
            .execute(id, meta, |_| command.clone())
            .await
            .unwrap();
    };
    match rng.random_range(0..10) {
        0 => {
            run(Command::Cancel {
                at: now,
                reason: None,
            })
            .await
        }
        1 => {
            run(Command::Reject {
                at: now,
                reason: "no".into(),
            })
            .await
        }
        2 => {
            run(Command::PlaceHold {
                at: now,
                reason: "x".into(),
            })
            .await
        }
        3 => {}
        _ => {
            let due = now + TimeDelta::seconds(rng.random_range(0..100 * 86_400));
            run(Command::MarkDue {
                at: due,
                cleaners: plan(),
                expedite: true,
                reason: None,
            })
            .await;
            for name in ["billing", "crm"] {
                if rng.random_bool(0.3) {
                    catch_up(database, live).await;
                }
                let cleaner = CleanerName::parse(name).unwrap();
                let took = TimeDelta::microseconds(
                    10_i64.pow(rng.random_range(0..12)) * rng.random_range(1..10)
                        + rng.random_range(0..1000),
                );
                let at = due + took;
                let fail = |retryable| Command::RecordCleanerFailure {
                    cleaner: cleaner.clone(),
                    attempt: 1,
                    at,
                    error: "HTTP 503".into(),
                    status_code: Some(503),
                    retryable,
                    retry_after_seconds: None,
                };
                let succeed = |attempt| Command::RecordCleanerSuccess {
                    cleaner: cleaner.clone(),
                    attempt,
                    at,
                    deleted: None,
                    detail: None,
                };
                match rng.random_range(0..7) {
                    0..=2 => run(succeed(1)).await,
                    3 => {
                        run(fail(true)).await;
                        run(succeed(2)).await;
                    }
                    4 => run(fail(false)).await,
                    5 => {
                        let reason = "gone".into();
                        run(Command::SkipCleaner {
                            cleaner: cleaner.clone(),
                            at,
                            reason,
                        })
                        .await;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Submits `n` requests, projects them, and lives their random lives.
async fn workload(database: &Database, n: usize) {
    let seed = rand::random();
    println!("workload seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let requests = requests(database);
    let live = runner(database, "live");
    let mut ids = Vec::new();
    for i in 0..n {
        let submission = lethe_engine::app::Submission {
            subject: std::collections::BTreeMap::from([("user_id".to_owned(), format!("u{i}"))]),
            jurisdiction: Some(if i % 3 == 0 { "ccpa" } else { "gdpr" }.to_owned()),
            ..Default::default()
        };
        let submitted = requests.submit(submission, None, "test").await.unwrap();
        ids.push(submitted.loaded.request.id);
    }
    catch_up(database, &live).await;
    for id in ids {
        life(database, &live, id, &mut rng).await;
    }
    catch_up(database, &live).await;
    database
        .workflow
        .release_subscription(REQUESTS, "live")
        .await
        .unwrap();
}

fn micros(d: TimeDelta) -> i64 {
    d.num_microseconds().unwrap().max(0)
}

/// The counters' figures against the pass over every row, looked at from several days.
#[allow(clippy::cast_precision_loss)]
async fn figures_agree(database: &Database) {
    let rows = oracle::rows(database).await;
    let statuses: std::collections::BTreeSet<_> = rows.iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&RequestStatus::Completed) && statuses.len() >= 4,
        "{statuses:?}"
    );
    let today = Utc::now().date_naive();
    let mut late = 0;
    for later in [0, 20, 31, 40, 200] {
        let day = today + TimeDelta::days(later);
        let expected = oracle::figures(&rows, AT_RISK_DAYS, day);
        let stats = compute_stats(&*database.projections, AT_RISK_DAYS, day)
            .await
            .unwrap();
        late += expected.at_risk.min(expected.overdue);
        assert_eq!(
            (stats.total, &stats.by_status, stats.at_risk, stats.overdue),
            (
                expected.total,
                &expected.by_status,
                expected.at_risk,
                expected.overdue
            ),
            "counts as of {day}"
        );
        let names: Vec<_> = stats.cleaners.keys().collect();
        assert_eq!(names, expected.cleaners.keys().collect::<Vec<_>>());
        for (name, [attempts, succeeded, exhausted, skipped]) in &expected.cleaners {
            let got = &stats.cleaners[name];
            assert_eq!(
                [got.attempts, got.succeeded, got.exhausted, got.skipped],
                [*attempts, *succeeded, *exhausted, *skipped],
                "{name}"
            );
            let (p50, p95) = expected.latency[name];
            for (got, want) in [(got.p50_seconds, p50), (got.p95_seconds, p95)] {
                assert_eq!(got, bucket(micros(want)) as f64 / 1e6, "{name}");
                let exact = want.as_seconds_f64();
                assert!(
                    (got - exact).abs() <= exact * 5e-4 + 1e-6,
                    "{name}: {got} ~ {exact}"
                );
            }
        }
        let months: Vec<_> = stats.completion.keys().collect();
        assert_eq!(months, expected.completion.keys().collect::<Vec<_>>());
        for (month, (completed, median, mean)) in &expected.completion {
            let got = &stats.completion[month];
            assert_eq!(got.completed, *completed, "{month}");
            assert_eq!(
                got.median_days,
                bucket(micros(*median)) as f64 / 86_400e6,
                "{month}"
            );
            assert!(
                (got.mean_days - mean).abs() <= 1e-9 * mean.max(1.0),
                "{month}"
            );
        }
    }
    assert!(late > 0, "some day sees requests at risk and overdue");
    for ((year, jurisdiction), (counts, median, mean)) in oracle::figures(&rows, 0, today).annual {
        let report = compute_annual_report(&*database.projections, year, None)
            .await
            .unwrap();
        let got = report
            .jurisdictions
            .iter()
            .find(|j| j.jurisdiction == jurisdiction)
            .unwrap();
        assert_eq!(
            [
                got.received,
                got.complied_in_whole,
                got.complied_in_part,
                got.denied,
                got.cancelled,
                got.open
            ],
            counts
        );
        assert_eq!(
            (got.median_days_to_respond, got.mean_days_to_respond),
            (median, mean)
        );
    }
}

/// The `cleaner` lists hold exactly the rows with that cleaner pending or exhausted.
async fn cleaner_lists_agree(database: &Database) {
    let rows = oracle::rows(database).await;
    for name in ["billing", "crm"] {
        let filter = RequestFilter {
            cleaner: Some(name.to_owned()),
            ..Default::default()
        };
        let listed = database
            .projections
            .list_requests(&filter, None, 10_000)
            .await
            .unwrap();
        let expected: Vec<_> = rows
            .iter()
            .filter(|r| filter.accepts(r))
            .map(|r| r.id)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            listed.iter().map(|r| r.id).collect::<Vec<_>>(),
            expected,
            "{name}"
        );
    }
}

async fn counters_equal_the_full_pass(store: TestStore) {
    let database = store.database();
    workload(&database, 90).await;
    figures_agree(&database).await;

    rebuild(
        &database.events,
        &database.projections,
        REQUESTS,
        &mut |_, _| {},
    )
    .await
    .unwrap();
    figures_agree(&database).await;

    // A database projected before migrations 12 and 14: their tables gone, their records too.
    store
        .execute(
            "DROP TABLE request_tallies; DROP TABLE projection_backfills; \
             DROP TABLE unfinished_cleaners; DROP INDEX requests_projection_by_jurisdiction; \
             DELETE FROM _sqlx_migrations WHERE version IN (12, 14)",
        )
        .await;
    let upgraded = Database::open(&store.database_url(), true).await.unwrap();
    figures_agree(&upgraded).await;
    cleaner_lists_agree(&upgraded).await;
    assert!(
        !upgraded.projections.backfill_tallies().await.unwrap(),
        "filled once"
    );
}

/// Each filter of the list, alone, and the index its plan must read (no full scan).
async fn every_list_filter_reads_an_index(store: TestStore) {
    let database = store.database();
    workload(&database, 20).await;
    let today = Some(Utc::now().date_naive());
    let filters = [
        (
            RequestFilter {
                status: Some(RequestStatus::Due),
                ..Default::default()
            },
            "by_status",
        ),
        (
            RequestFilter {
                needs_attention: true,
                ..Default::default()
            },
            "by_status",
        ),
        (
            RequestFilter {
                jurisdiction: Some("gdpr".into()),
                ..Default::default()
            },
            "by_jurisdiction",
        ),
        (
            RequestFilter {
                at_risk: true,
                at_risk_days: 7,
                today,
                ..Default::default()
            },
            "open_by_deadline",
        ),
        (
            RequestFilter {
                overdue: true,
                today,
                ..Default::default()
            },
            "open_by_deadline",
        ),
        (
            RequestFilter {
                cleaner: Some("crm".into()),
                ..Default::default()
            },
            "unfinished_cleaners",
        ),
    ];
    for (filter, index) in filters {
        let plan = database.projections.explain_list(&filter).await.unwrap();
        let text = plan.join("\n");
        assert!(text.contains(index), "{filter:?} reads {index}:\n{text}");
        let full_scan = if store.is_postgres() {
            plan.iter().any(|line| line.contains("Seq Scan"))
        } else {
            plan.iter()
                .any(|line| line.trim_start().starts_with("SCAN"))
        };
        assert!(!full_scan, "{filter:?} scans a whole table:\n{text}");
    }
}

support::backends!(
    counters_equal_the_full_pass,
    every_list_filter_reads_an_index
);
