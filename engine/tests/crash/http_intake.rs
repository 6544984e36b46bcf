//! Requests arriving over HTTP, one by one and in bulk, while `lethe serve` is SIGKILLed.

use super::*;

/// Single submissions and bulk lines in the HTTP scenario.
const SINGLES: usize = 50;
const BULK_LINES: usize = 50;
const BULK_CHUNK: usize = 10;
/// SIGKILLs in each run of the HTTP scenario.
const HTTP_KILLS: usize = 6;

/// Requests arrive over HTTP, one by one (two clients) and in bulk (one client), through a
/// gateway, while the single `lethe serve` behind it is SIGKILLed and restarted; reminders fall
/// due and go to a notifier; the cleaner [`BATCH`] answers 202 and reports later through the
/// gateway, retrying while nothing answers. Beyond [`Workload::check`]: every submission is
/// answered 2xx in the end, every answer to it names the same request, no submission makes a
/// second request, and each sent once more afterwards is answered 200 with its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_intake_reminders_and_callbacks_survive_sigkill() {
    for seed in seeds::seeds() {
        http_intake_survives_sigkill_on(seed, support::postgres().await, "postgres").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_intake_reminders_and_callbacks_survive_sigkill_on_sqlite() {
    for seed in seeds::seeds() {
        http_intake_survives_sigkill_on(seed, support::sqlite().await, "sqlite").await;
    }
}

async fn http_intake_survives_sigkill_on(seed: u64, store: TestStore, backend: &str) {
    let _turn = turn(&store, &format!("http intake on {backend}"), seed).await;
    let mut rng = StdRng::seed_from_u64(seed);
    // The reminder falls due 1 s after receipt, the request 1 s later.
    let setup = Setup {
        grace_period: "2s",
        reminders: &["1s"],
        notifier: true,
        batch_cleaner: true,
        ..Setup::PLAIN
    };
    let mut workload = Workload::new(seed, store, setup).await;
    let base = workload.gateway.url.clone();
    let singles: Vec<usize> = (0..SINGLES).collect();
    let lines: Vec<usize> = (SINGLES..SINGLES + BULK_LINES).collect();

    let started = Instant::now();
    let server = Server::start(&workload, "lethe-1").await;
    // Spread over the first kills: about 3 s of single submissions and of bulk calls.
    let single_intake = tokio::spawn(intake::singles(
        base.clone(),
        singles.clone(),
        2,
        Duration::from_millis(120),
    ));
    let bulk_intake = tokio::spawn(intake::bulk(
        base.clone(),
        lines.clone(),
        BULK_CHUNK,
        Duration::from_millis(600),
    ));
    let (mut server, at_kills) = kill_in_each_phase(&mut workload, server, &mut rng).await;
    let mut answers = timeout(COMPLETION_DEADLINE, single_intake)
        .await
        .expect("the single submissions end")
        .unwrap();
    answers.extend(
        timeout(COMPLETION_DEADLINE, bulk_intake)
            .await
            .expect("the bulk submissions end")
            .unwrap(),
    );
    let unanswered: usize = answers.values().map(|a| a.unanswered).sum();
    let retried = answers.values().filter(|a| a.unanswered > 0).count();
    // Whether a kill lands on a submission in flight depends on scheduling, which this test
    // does not control; a run whose kills missed the intake still checks everything below,
    // so it is reported rather than failed.
    if retried == 0 {
        eprintln!("note: no submission went unanswered: the kills missed the intake (seed {seed})");
    }
    let requests = answered_requests(&answers, SINGLES + BULK_LINES, seed);
    workload.ids = requests.values().copied().collect();
    let streams = workload
        .store
        .fetch_integers("SELECT COUNT(*) FROM streams")
        .await[0];
    assert_eq!(
        usize::try_from(streams).unwrap(),
        SINGLES + BULK_LINES,
        "one request per submission, none lost, none made twice (seed {seed})"
    );

    let ids = workload.ids.clone();
    workload
        .wait_completed(&ids, &mut [&mut server], COMPLETION_DEADLINE)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    submit_everything_again(&workload, base, singles, lines, &requests).await;
    workload.wait_reminders_settled(&mut server).await;
    server.kill().await;

    let tally = workload.check().await;
    let reports = workload.check_reports().await;
    let last = workload.progress().await;
    note_missed_phases(&at_kills, &last, seed);
    workload.verify().await;
    eprintln!(
        "http intake on {backend}: {HTTP_KILLS} SIGKILLs (at each: {at_kills:?}), {retried} submissions retried after {unanswered} tries \
         without an answer, {} notifier calls (at most {} for one reminder; in the log: \
         {:?}), {} cleaner calls, {} beyond one per request and cleaner ({} failures retried, {} repeated \
         attempts, at most {} repeats of one cleaner for one request), {reports}, all {} \
         completed after {seconds:.1} s (seed {seed})",
        tally.notifications,
        tally.most_notifications,
        tally.reminder_events,
        tally.calls,
        tally.extra_calls,
        tally.failures,
        tally.repeated_attempts,
        tally.most_repeats,
        SINGLES + BULK_LINES
    );
}

/// Kills at random moments of the intake, then (as the intake may run on) once reminders go
/// out, and twice once results are being reported: each after a random pause from the moment
/// its phase began. Returns the server running after the last kill and the progress at each.
async fn kill_in_each_phase(
    workload: &mut Workload,
    mut server: Server,
    rng: &mut StdRng,
) -> (Server, Vec<Progress>) {
    let mut at_kills: Vec<Progress> = Vec::new();
    for kill in 1..=HTTP_KILLS {
        // The phase: what must have happened at least (notifier calls, results reported).
        let (what, notified, reported) = match kill {
            1..=3 => ("the intake", 0, 0),
            4 => ("reminders going out", 1, 0),
            5 => ("results reported", 0, 1),
            _ => (
                "more results reported",
                0,
                at_kills.last().map_or(0, |p| p.reported) + 1,
            ),
        };
        workload
            .wait_for(&mut server, what, |p| {
                p.notified >= notified && p.reported >= reported
            })
            .await;
        let pause = if kill <= 3 {
            random_run(rng)
        } else {
            Duration::from_millis(rng.random_range(0..=300))
        };
        tokio::time::sleep(pause).await;
        at_kills.push(workload.progress().await);
        workload.kill(server).await;
        server = Server::start(workload, &format!("lethe-{}", kill + 1)).await;
    }
    (server, at_kills)
}

/// Every submission once more, as a client that never saw its answer would: the same request,
/// found (200), not made again.
async fn submit_everything_again(
    workload: &Workload,
    base: String,
    singles: Vec<usize>,
    lines: Vec<usize>,
    requests: &BTreeMap<usize, RequestId>,
) {
    let mut again = intake::singles(base.clone(), singles, 4, Duration::ZERO).await;
    again.extend(intake::bulk(base, lines, BULK_LINES, Duration::ZERO).await);
    for (index, answers) in &again {
        assert_eq!(
            answers.statuses,
            [200],
            "submission {index} again: {answers:?}"
        );
        assert_eq!(
            answers.ids,
            [requests[index].to_string()],
            "submission {index} again names another request"
        );
    }
    let streams = workload
        .store
        .fetch_integers("SELECT COUNT(*) FROM streams")
        .await[0];
    assert_eq!(usize::try_from(streams).unwrap(), SINGLES + BULK_LINES);
}

/// Each kill waited for its phase to begin; whether the phase was still going on when it
/// landed depends on scheduling, so a miss is reported, not failed (the checks hold either
/// way).
fn note_missed_phases(at_kills: &[Progress], last: &Progress, seed: u64) {
    if !at_kills
        .iter()
        .any(|p| 0 < p.notified && p.notified < last.notified)
    {
        eprintln!("note: no kill while reminders went out: {at_kills:?} (seed {seed})");
    }
    if !at_kills
        .iter()
        .any(|p| 0 < p.reported && p.reported < last.reported)
    {
        eprintln!("note: no kill while results were reported: {at_kills:?} (seed {seed})");
    }
}

/// The request each submission was answered with, by index: every submission was answered
/// 2xx at least once, every answer to it named the same request, and no two submissions (each
/// for a subject of its own) share a request.
fn answered_requests(
    answers: &BTreeMap<usize, intake::Answers>,
    submissions: usize,
    seed: u64,
) -> BTreeMap<usize, RequestId> {
    assert_eq!(answers.len(), submissions, "every submission was made");
    let mut requests = BTreeMap::new();
    for (index, answered) in answers {
        assert!(
            !answered.ids.is_empty()
                && answered.ids.len() == answered.statuses.len()
                && answered.ids.iter().all(|id| *id == answered.ids[0]),
            "submission {index}: every answer names one request: {answered:?} (seed {seed})"
        );
        assert!(
            answered.statuses.iter().all(|s| [200, 201].contains(s)),
            "submission {index}: {answered:?} (seed {seed})"
        );
        requests.insert(*index, answered.ids[0].parse::<RequestId>().unwrap());
    }
    let distinct: BTreeSet<RequestId> = requests.values().copied().collect();
    assert_eq!(distinct.len(), submissions, "a request per submission");
    requests
}
