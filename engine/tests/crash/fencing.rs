//! In-process: a deposed subscription owner cannot commit, and a restarted runner resumes at
//! its checkpoint.

use super::support::config::TestConfig;
use super::*;

/// The saga, counting the events it handles and the job changes it decides.
struct Counting {
    saga: Saga,
    handled: Mutex<Vec<i64>>,
    changes: AtomicUsize,
}

impl Counting {
    fn new(saga: &Saga) -> Self {
        Self {
            saga: saga.clone(),
            handled: Mutex::new(Vec::new()),
            changes: AtomicUsize::new(0),
        }
    }

    /// The positions of the events handled so far, in order.
    fn handled(&self) -> Vec<i64> {
        self.handled.lock().unwrap().clone()
    }

    fn changes(&self) -> usize {
        self.changes.load(Ordering::SeqCst)
    }
}

impl Subscriber for Counting {
    type Write = JobChange;

    fn name(&self) -> &'static str {
        self.saga.name()
    }

    fn handle(&self, event: &RecordedEvent) -> Result<Vec<JobChange>, StoreError> {
        let changes = self.saga.handle(event)?;
        self.handled.lock().unwrap().push(event.position);
        self.changes.fetch_add(changes.len(), Ordering::SeqCst);
        Ok(changes)
    }
}

/// The whole log, once at least `n` events are visible to a global read (on Postgres a
/// transaction open elsewhere in the cluster holds newer events back for a moment).
async fn read_log(events: &dyn EventStore, n: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = events.read_all(Checkpoint::START, 1000).await.unwrap();
        if log.len() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events became visible",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs rounds until `runner` has committed `n` events (at most 20 s); returns how many
/// rounds committed nothing on the way (owned elsewhere or not yet visible).
async fn drain(
    runner: &SubscriptionRunner,
    subscriber: &Writing<Counting, dyn WorkflowStore>,
    n: usize,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut committed, mut idle) = (0, 0);
    while committed < n {
        let handled = runner.round(subscriber).await.unwrap();
        committed += handled;
        if handled == 0 {
            idle += 1;
            assert!(
                Instant::now() < deadline,
                "{} committed {committed} of {n} events",
                runner.owner
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        committed, n,
        "{} committed more than expected",
        runner.owner
    );
    idle
}

async fn submit_requests(requests: &Requests, first: usize, n: usize) -> Vec<RequestId> {
    let mut ids = Vec::new();
    for index in first..first + n {
        let subject = BTreeMap::from([("user_id".to_owned(), format!("fenced-{index}"))]);
        ids.push(support::due::submitted(requests, subject).await);
    }
    ids
}

/// Owner A's lease runs out while it holds a decided batch; B takes the subscription over and
/// commits part of the log; A's late commit is refused and changes nothing. Then B, as a
/// running subscription, carries on from its checkpoint, dies without releasing, and a
/// restarted runner resumes exactly where B stopped.
async fn a_deposed_subscription_owner_cannot_commit(store: TestStore) {
    let (events, workflow) = store.stores();
    // One reminder and the end of the grace period: two jobs per `Received`.
    let config = Arc::new(TestConfig::new().grace("1h").reminders(&["30m"]).build());
    let requests = Requests::new(events.clone(), config.clone());
    submit_requests(&requests, 0, 3).await;
    let log = read_log(&*events, 3).await;
    assert_eq!(log.len(), 3);
    let saga = Saga { config };
    let lease = Duration::from_secs(1);
    let jobs = |id: RequestId| {
        let workflow = workflow.clone();
        async move { workflow.jobs_of(id).await.unwrap().len() }
    };

    let t0 = Utc::now();
    let acquired = workflow
        .acquire_subscription(SAGA, "owner-a", lease, t0)
        .await
        .unwrap();
    assert_eq!(acquired, Some(Checkpoint::START));
    let half = chrono::TimeDelta::milliseconds(500);
    let refused = workflow
        .acquire_subscription(SAGA, "owner-b", lease, t0 + half)
        .await
        .unwrap();
    assert_eq!(refused, None, "B waits while A's lease runs");
    // A decides its batch, then stalls (a pause, a partition) past its lease.
    let a_changes: Vec<JobChange> = log
        .iter()
        .flat_map(|event| saga.handle(event).unwrap())
        .collect();
    assert_eq!(a_changes.len(), 6);

    // B takes over once A's lease ran out and commits the first event.
    let t1 = t0 + chrono::TimeDelta::seconds(2);
    let taken = workflow
        .acquire_subscription(SAGA, "owner-b", lease, t1)
        .await
        .unwrap();
    assert_eq!(taken, Some(Checkpoint::START));
    let b_changes = saga.handle(&log[0]).unwrap();
    assert!(workflow
        .commit_subscription(SAGA, "owner-b", log[0].checkpoint(), &b_changes)
        .await
        .unwrap());

    // A's late commit is refused and applies nothing; the checkpoint stays B's.
    let committed = workflow
        .commit_subscription(SAGA, "owner-a", log[2].checkpoint(), &a_changes)
        .await
        .unwrap();
    assert!(!committed, "a deposed owner's commit is refused");
    assert_eq!(
        workflow.subscription_checkpoint(SAGA).await.unwrap(),
        Some(log[0].checkpoint())
    );
    assert_eq!(jobs(log[0].stream_id).await, 2);
    assert_eq!(
        jobs(log[1].stream_id).await,
        0,
        "nothing of A's batch applied"
    );
    assert_eq!(
        jobs(log[2].stream_id).await,
        0,
        "nothing of A's batch applied"
    );
    // Nor can A take the subscription back while B's lease runs.
    let refused = workflow
        .acquire_subscription(SAGA, "owner-a", lease, t1 + half)
        .await
        .unwrap();
    assert_eq!(refused, None);

    resume_at_the_checkpoint(&events, &workflow, &requests, &saga, &log).await;
}

support::backends!(a_deposed_subscription_owner_cannot_commit);

/// After the takeover: B runs on as a subscription runner from its checkpoint; once B dies, a
/// restarted runner takes over when B's lease runs out and handles only the newer events; B,
/// deposed in turn, can commit nothing.
async fn resume_at_the_checkpoint(
    events: &Arc<dyn EventStore>,
    workflow: &Arc<dyn WorkflowStore>,
    requests: &Requests,
    saga: &Saga,
    log: &[RecordedEvent],
) {
    let jobs = |id: RequestId| {
        let workflow = workflow.clone();
        async move { workflow.jobs_of(id).await.unwrap().len() }
    };
    // B runs on as a subscription runner: from its checkpoint, so only the two events after it.
    let runner = |owner: &str| SubscriptionRunner {
        events: events.clone(),
        subscriptions: workflow.clone(),
        owner: owner.to_owned(),
        lease: Duration::from_millis(300),
        poll_interval: Duration::from_millis(20),
    };
    let b = runner("owner-b");
    let b_saga = Writing {
        subscriber: Counting::new(saga),
        sink: workflow.clone(),
    };
    drain(&b, &b_saga, 2).await;
    assert_eq!(
        b_saga.subscriber.handled(),
        [log[1].position, log[2].position]
    );
    assert_eq!(b_saga.subscriber.changes(), 4);
    for event in log {
        assert_eq!(jobs(event.stream_id).await, 2);
    }
    assert_eq!(b.round(&b_saga).await.unwrap(), 0, "B is caught up");

    // B dies without giving the subscription up; more requests arrive; a restarted runner (a
    // new owner, a fresh subscriber) takes over once B's lease runs out and handles only them.
    drop(b);
    let fresh = submit_requests(requests, 3, 2).await;
    let c = runner("owner-c");
    let c_saga = Writing {
        subscriber: Counting::new(saga),
        sink: workflow.clone(),
    };
    drain(&c, &c_saga, 2).await;
    let mut expected = Vec::new();
    for id in &fresh {
        expected.push(events.read_stream(*id, 0).await.unwrap()[0].position);
    }
    let mut handled = c_saga.subscriber.handled();
    handled.sort_unstable();
    expected.sort_unstable();
    assert_eq!(handled, expected, "only the events after the checkpoint");
    assert_eq!(
        c_saga.subscriber.changes(),
        4,
        "two jobs for each fresh request, no more"
    );
    assert_eq!(c.round(&c_saga).await.unwrap(), 0, "C is caught up");
    assert_eq!(c_saga.subscriber.handled().len(), 2);
    let all = read_log(&**events, 5).await;
    assert_eq!(
        workflow.subscription_checkpoint(SAGA).await.unwrap(),
        Some(all.last().unwrap().checkpoint())
    );
    for id in log.iter().map(|e| e.stream_id).chain(fresh) {
        assert_eq!(jobs(id).await, 2, "{id}");
    }
    // And B, deposed in turn, can commit nothing.
    assert!(!workflow
        .commit_subscription(SAGA, "owner-b", Checkpoint::START, &[])
        .await
        .unwrap());
}
