//! One process, or two sharing the work, SIGKILLed at random moments with every request
//! submitted before the first kill.

use super::*;

/// One process, SIGKILLed at random moments and restarted; the last one finishes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_process_survives_repeated_sigkill() {
    for seed in seeds::seeds() {
        single_process_survives_repeated_sigkill_on(seed, support::postgres().await, "postgres")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_process_survives_repeated_sigkill_on_sqlite() {
    for seed in seeds::seeds() {
        single_process_survives_repeated_sigkill_on(seed, support::sqlite().await, "sqlite").await;
    }
}

async fn single_process_survives_repeated_sigkill_on(seed: u64, store: TestStore, backend: &str) {
    let _turn = turn(&store, &format!("single process on {backend}"), seed).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut workload = Workload::new(seed, store, Setup::PLAIN).await;
    workload.submit(REQUESTS).await;

    let started = Instant::now();
    let mut server = Server::start(&workload, "lethe-1").await;
    let mut completed_at_kills = Vec::new();
    for kill in 1..=KILLS {
        tokio::time::sleep(random_run(&mut rng)).await;
        workload.kill(server).await;
        completed_at_kills.push(workload.completed_events().await);
        server = Server::start(&workload, &format!("lethe-{}", kill + 1)).await;
    }
    let ids = workload.ids.clone();
    workload
        .wait_completed(&ids, &mut [&mut server], COMPLETION_DEADLINE)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    // Not counted: nothing is left to do.
    server.kill().await;

    let tally = workload.check().await;
    assert!(tally.failures > 0, "the flaky cleaner failed some calls");
    workload.verify().await;
    eprintln!(
        "single process on {backend}: {KILLS} SIGKILLs (requests completed at each: {completed_at_kills:?}), \
         {} cleaner calls, {} beyond one per request and cleaner ({} failures retried, \
         {} repeated attempts, at most {} repeats of one cleaner for one request), \
         all {REQUESTS} completed after {seconds:.1} s (seed {seed})",
        tally.calls, tally.extra_calls, tally.failures, tally.repeated_attempts, tally.most_repeats
    );
}

/// Two processes on one database, each SIGKILLed now and then and restarted. Then each in
/// turn is kept down while a fresh batch of requests arrives, which the other must complete
/// alone: so both really do work, and either carries on when the other dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_work_and_survive_kills() {
    for seed in seeds::seeds() {
        two_processes_share_the_work_and_survive_kills_with(seed).await;
    }
}

async fn two_processes_share_the_work_and_survive_kills_with(seed: u64) {
    let store = support::postgres().await;
    let _turn = turn(&store, "two processes on postgres", seed).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut workload = Workload::new(seed, store, Setup::PLAIN).await;
    let solo_batch = 20;
    workload.submit(REQUESTS - 2 * solo_batch).await;

    let names = ["a", "b"];
    let mut generations = [1, 1];
    let started = Instant::now();
    let mut servers = [
        Some(Server::start(&workload, "lethe-a1").await),
        Some(Server::start(&workload, "lethe-b1").await),
    ];
    // Kills of either process at random moments while the work goes on, each restarted at
    // once.
    let mut completed_at_kills = Vec::new();
    while workload.kills < KILLS - 2 {
        tokio::time::sleep(random_run(&mut rng)).await;
        let victim = rng.random_range(0..2);
        workload.kill(servers[victim].take().unwrap()).await;
        completed_at_kills.push(workload.completed_events().await);
        generations[victim] += 1;
        let name = format!("lethe-{}{}", names[victim], generations[victim]);
        servers[victim] = Some(Server::start(&workload, &name).await);
    }
    // Then solo windows: A down while B alone completes fresh requests, then the other way
    // round.
    let mut solo = Vec::new();
    for victim in 0..2 {
        tokio::time::sleep(random_run(&mut rng)).await;
        workload.kill(servers[victim].take().unwrap()).await;
        completed_at_kills.push(workload.completed_events().await);
        let fresh = workload.submit(solo_batch).await;
        let window = Instant::now();
        let survivor = servers[1 - victim].as_mut().unwrap();
        workload
            .wait_completed(&fresh, &mut [survivor], SOLO_DEADLINE)
            .await;
        solo.push(format!(
            "{} alone completed {solo_batch} fresh requests in {:.1} s",
            names[1 - victim],
            window.elapsed().as_secs_f64()
        ));
        generations[victim] += 1;
        let name = format!("lethe-{}{}", names[victim], generations[victim]);
        servers[victim] = Some(Server::start(&workload, &name).await);
    }
    let ids = workload.ids.clone();
    {
        let mut running: Vec<&mut Server> = servers.iter_mut().flatten().collect();
        workload
            .wait_completed(&ids, &mut running, COMPLETION_DEADLINE)
            .await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let kills = workload.kills;
    for server in servers.iter_mut().filter_map(Option::take) {
        server.kill().await;
    }

    let tally = workload.check().await;
    assert!(tally.failures > 0, "the flaky cleaner failed some calls");
    workload.verify().await;
    eprintln!(
        "two processes: {kills} SIGKILLs (requests completed at each: {completed_at_kills:?}; \
         {}), {} cleaner calls, {} beyond one per request and cleaner \
         ({} failures retried, {} repeated attempts, at most {} repeats of one cleaner for \
         one request), all {REQUESTS} completed after {seconds:.1} s (seed {seed})",
        solo.join(", "),
        tally.calls,
        tally.extra_calls,
        tally.failures,
        tally.repeated_attempts,
        tally.most_repeats
    );
}
