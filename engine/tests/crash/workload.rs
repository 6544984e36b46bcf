//! The workload of a scenario: its database, cleaners, notifier and requests, and its
//! progress.

use super::*;

/// What a crash workload runs against, beyond the three HTTP cleaners.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// `[policy]`: the grace period and the reminders.
    pub(crate) grace_period: &'static str,
    pub(crate) reminders: &'static [&'static str],
    /// A `[notifier]` on 127.0.0.1 that accepts every reminder.
    pub(crate) notifier: bool,
    /// The cleaner [`BATCH`], which answers 202 and reports through the callback URL.
    pub(crate) batch_cleaner: bool,
    /// `[kafka]` on these brokers, and the Kafka cleaner [`SEARCH`] reading from them.
    pub(crate) kafka: Option<String>,
}

impl Setup {
    /// Every request submitted up front; no reminders, no notifier, HTTP cleaners that answer
    /// at once.
    pub(crate) const PLAIN: Self = Self {
        grace_period: "1s",
        reminders: &[],
        notifier: false,
        batch_cleaner: false,
        kafka: None,
    };
}

/// A cleaner as the workload sees it: one that answers at once, one that reports later, or
/// one that reads Kafka.
pub(crate) enum Cleaner {
    Answering(FakeService),
    Reporting(AsyncCleaner),
    Reading(KafkaCleaner),
}

/// One call (or Kafka message) a cleaner got: the request and the attempt, and for an HTTP
/// call the call itself.
pub(crate) struct Heard {
    pub(crate) request_id: String,
    pub(crate) attempt: u64,
    pub(crate) call: Option<Call>,
}

impl Cleaner {
    pub(crate) fn heard(&self) -> Vec<Heard> {
        let calls = match self {
            Self::Answering(service) => service.calls(),
            Self::Reporting(service) => service.calls(),
            Self::Reading(service) => {
                return service
                    .handled()
                    .into_iter()
                    .map(|handled| Heard {
                        request_id: handled.request_id,
                        attempt: handled.attempt,
                        call: None,
                    })
                    .collect()
            }
        };
        calls
            .into_iter()
            .map(|call| Heard {
                request_id: call.body["request_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                attempt: call.body["attempt"].as_u64().unwrap(),
                call: Some(call),
            })
            .collect()
    }
}

/// A temp dir with `lethe.toml` and a key file, a fresh schema or SQLite file, the fake
/// cleaners (and notifier), the gateway in front of `lethe serve`, the requests submitted so
/// far and the kills so far.
pub(crate) struct Workload {
    pub(crate) store: TestStore,
    pub(crate) events: Arc<dyn EventStore>,
    pub(crate) workflow: Arc<dyn WorkflowStore>,
    pub(crate) requests: Requests,
    pub(crate) cleaners: Vec<(&'static str, Cleaner)>,
    pub(crate) notifier: Option<FakeService>,
    pub(crate) gateway: Gateway,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config_path: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) ids: Vec<RequestId>,
    /// Reminders per request.
    pub(crate) reminder_count: u64,
    /// SIGKILLs of `lethe serve`, and of the Kafka broker.
    pub(crate) kills: usize,
    pub(crate) broker_kills: usize,
    pub(crate) seed: u64,
}

/// Reminder events by request, reminder index and type.
pub(crate) type Reminders = BTreeMap<((String, u64), &'static str), usize>;

/// The events that record what became of a reminder, in versions that record it.
pub(crate) const REMINDER_OUTCOMES: [&str; 2] = ["ReminderSent", "ReminderNotSent"];

/// Whether the log records reminders' outcomes (versions before recorded `Reminded` only).
pub(crate) fn records_reminder_outcomes(reminders: &Reminders) -> bool {
    reminders
        .keys()
        .any(|(_, kind)| REMINDER_OUTCOMES.contains(kind))
}

/// How far a workload had got at one moment.
#[derive(Clone, Copy)]
pub(crate) struct Progress {
    /// Requests in the log, notifier calls, results the 202 cleaner reported, requests
    /// completed.
    pub(crate) requests: usize,
    pub(crate) notified: usize,
    pub(crate) reported: usize,
    pub(crate) completed: usize,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests/{} notified/{} reported/{} completed",
            self.requests, self.notified, self.reported, self.completed
        )
    }
}

/// What the final checks counted.
///
/// The bound on cleaner calls: a cleaner is called for a request at most `1 + f + k` times,
/// where `f` is the number of `CleanerFailed` events of that request and cleaner in the log
/// and `k` the number of SIGKILLs in the run. Each attempt is made at least once; each
/// recorded failure (a 503, a reported failure, a 202 whose result missed `callback_timeout`)
/// legitimately causes one more attempt; and an attempt is repeated only when the process
/// making it died before its outcome was in the log (the next process finds the job after its
/// lease ran out and makes the attempt again), which each kill can cause at most once per
/// request and cleaner, as a process has at most one call of a request's cleaner in flight.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) calls: usize,
    /// Calls beyond one per request and cleaner (retries after failures included).
    pub(crate) extra_calls: usize,
    /// Calls that repeated an attempt already made: what a crash costs under at-least-once.
    pub(crate) repeated_attempts: usize,
    /// The most calls of one cleaner for one request beyond its attempts' due (`1 + f`).
    pub(crate) most_repeats: usize,
    pub(crate) failures: usize,
    /// Notifier calls, and the most for one reminder of one request.
    pub(crate) notifications: usize,
    pub(crate) most_notifications: usize,
    /// Reminder events in the log, by type.
    pub(crate) reminder_events: BTreeMap<&'static str, usize>,
}

impl Workload {
    pub(crate) async fn new(seed: u64, store: TestStore, setup: Setup) -> Self {
        let (events, workflow) = store.stores();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cleaners = Vec::new();
        for name in CLEANERS {
            let service = if name == "flaky" {
                // The script makes the failures happen even where the failure rate is not
                // applied by the fake service; after it, the rate applies.
                let script: Vec<u16> = (0..2000)
                    .map(|_| {
                        if rng.random_bool(FLAKY_RATE) {
                            503
                        } else {
                            200
                        }
                    })
                    .collect();
                FakeService::start_with(&script, FLAKY_RATE).await
            } else {
                FakeService::start(&[]).await
            };
            cleaners.push((name, Cleaner::Answering(service)));
        }
        if setup.batch_cleaner {
            let service = AsyncCleaner::start(rng.random(), BATCH_FAILURE_RATE).await;
            cleaners.push((BATCH, Cleaner::Reporting(service)));
        }
        let gateway = Gateway::start().await;
        let mut config = TestConfig::new()
            .grace(setup.grace_period)
            .reminders(setup.reminders)
            .poll_interval("50ms")
            .lease("2s")
            .public_url(&gateway.url);
        let notifier = if setup.notifier {
            let service = FakeService::start(&[]).await;
            config = config.notifier(&service.url, Some(SECRET), Some("2s"));
            Some(service)
        } else {
            None
        };
        if let Some(brokers) = &setup.kafka {
            config = config.kafka(brokers);
            let service = KafkaCleaner::start(brokers, SEARCH, KAFKA_TOPICS[0], KAFKA_TOPICS[3]);
            cleaners.push((SEARCH, Cleaner::Reading(service)));
        }
        for (name, cleaner) in &cleaners {
            let settings = match cleaner {
                Cleaner::Answering(service) => CleanerSettings::http(name, &service.url),
                Cleaner::Reporting(service) => CleanerSettings::http(name, &service.url),
                Cleaner::Reading(_) => CleanerSettings::kafka(name),
            };
            config = config.cleaner(
                settings
                    .timeout("2s")
                    .callback_timeout(CALLBACK_TIMEOUT)
                    .retry(30, "100ms", "500ms", 2.0),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("lethe.toml");
        std::fs::write(&config_path, config.toml()).unwrap();
        let key_file = dir.path().join("master.key");
        let key: String = (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        let requests = Requests::new(events.clone(), Arc::new(config.build()));
        Self {
            store,
            events,
            workflow,
            requests,
            cleaners,
            notifier,
            gateway,
            dir,
            config_path,
            key_file,
            ids: Vec::new(),
            reminder_count: u64::try_from(setup.reminders.len()).unwrap(),
            kills: 0,
            broker_kills: 0,
            seed,
        }
    }

    /// SIGKILLs `server`, counted for the bound on cleaner calls.
    pub(crate) async fn kill(&mut self, server: Server) {
        if self.gateway.backend() == Some(server.address) {
            self.gateway.route_to(None);
        }
        server.kill().await;
        self.kills += 1;
    }

    /// Submits `n` more requests, each for a subject of its own; returns their ids.
    pub(crate) async fn submit(&mut self, n: usize) -> Vec<RequestId> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let index = self.ids.len() + ids.len();
            let submission = Submission {
                subject: BTreeMap::from([
                    ("user_id".to_owned(), format!("crash-{index}")),
                    ("email".to_owned(), format!("subject-{index}@example.com")),
                ]),
                jurisdiction: Some("gdpr".to_owned()),
                ..Submission::default()
            };
            let submitted = self
                .requests
                .submit(submission, None, "test")
                .await
                .unwrap();
            assert!(submitted.created);
            ids.push(submitted.loaded.request.id);
        }
        self.ids.extend(&ids);
        ids
    }

    /// How far the work had got: for the moments of the kills.
    pub(crate) async fn progress(&self) -> Progress {
        let reporting = self.cleaners.iter().find_map(|(_, c)| match c {
            Cleaner::Reporting(service) => Some(service),
            Cleaner::Answering(_) | Cleaner::Reading(_) => None,
        });
        Progress {
            requests: usize::try_from(
                self.store
                    .fetch_integers("SELECT COUNT(*) FROM streams")
                    .await[0],
            )
            .unwrap(),
            notified: self.notifier.as_ref().map_or(0, |n| n.calls().len()),
            reported: reporting.map_or(0, |c| c.reports().len()),
            completed: usize::try_from(self.completed_events().await).unwrap(),
        }
    }

    /// Waits (at most [`COMPLETION_DEADLINE`]) until the work has got as far as `reached`
    /// says, while `server` runs.
    pub(crate) async fn wait_for(
        &self,
        server: &mut Server,
        what: &str,
        reached: impl Fn(&Progress) -> bool,
    ) {
        let deadline = Instant::now() + COMPLETION_DEADLINE;
        loop {
            server.assert_alive();
            let progress = self.progress().await;
            if reached(&progress) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {COMPLETION_DEADLINE:?}: {progress:?}; seed {}\n{}",
                self.seed,
                server.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many `Completed` events the log holds.
    pub(crate) async fn completed_events(&self) -> i64 {
        self.store
            .fetch_integers("SELECT COUNT(*) FROM events WHERE event_type = 'Completed'")
            .await[0]
    }

    /// How many of `ids` are completed.
    pub(crate) async fn completed_among(&self, ids: &[RequestId]) -> usize {
        let list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
        let sql = format!(
            "SELECT COUNT(DISTINCT stream_id) FROM events \
             WHERE event_type = 'Completed' AND stream_id IN ({})",
            list.join(", ")
        );
        usize::try_from(self.store.fetch_integers(&sql).await[0]).unwrap()
    }

    /// Waits until every one of `ids` is completed, while `servers` run (at most `within`).
    pub(crate) async fn wait_completed(
        &self,
        ids: &[RequestId],
        servers: &mut [&mut Server],
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            for server in servers.iter_mut() {
                server.assert_alive();
            }
            let done = self.completed_among(ids).await;
            if done == ids.len() {
                return;
            }
            if Instant::now() > deadline {
                let jobs = self.workflow.pending_jobs().await.unwrap();
                let logs: String = servers.iter().map(|s| s.tail()).collect();
                panic!(
                    "only {done} of {} requests completed within {within:?}; jobs waiting: \
                     {jobs:?}; seed {}\n{logs}",
                    ids.len(),
                    self.seed
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
