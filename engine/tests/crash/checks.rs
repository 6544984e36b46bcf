//! The invariants no crash may break, checked over the log and what the cleaners and the
//! notifier saw, and `lethe verify`.

use super::*;

impl Workload {
    /// The invariants that no crash may break, over the log and what the cleaners and the
    /// notifier saw.
    pub(crate) async fn check(&self) -> Tally {
        let mut tally = Tally::default();
        let reminders = self.reminders().await;
        let failures = self.check_log(&reminders, &mut tally).await;
        self.check_calls(&failures, &mut tally);
        if let Some(notifier) = &self.notifier {
            self.check_notifications(notifier, &reminders, &mut tally);
        }
        tally
    }

    /// Each request's log: one `Received`, `Due` and `Completed`, each reminder recorded once
    /// with one outcome, one success per cleaner and no failure after it. Returns the
    /// `CleanerFailed` events by request and cleaner, for the bound on calls.
    async fn check_log(
        &self,
        reminders: &Reminders,
        tally: &mut Tally,
    ) -> BTreeMap<(String, &'static str), usize> {
        let names: Vec<&'static str> = self.cleaners.iter().map(|(name, _)| *name).collect();
        let mut failures: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
        let outcomes = records_reminder_outcomes(reminders);
        for id in &self.ids {
            let events = self.events.read_stream(*id, 0).await.unwrap();
            let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            for (kind, expected) in [("Received", 1), ("Due", 1), ("Completed", 1)] {
                assert_eq!(count(&events, kind), expected, "{kind} of {id}: {kinds:?}");
            }
            // Only a reminder's outcome, a fact about a notification, may follow completion.
            let completed = kinds.iter().position(|k| *k == "Completed").unwrap();
            assert!(
                kinds[completed + 1..]
                    .iter()
                    .all(|k| REMINDER_OUTCOMES.contains(k)),
                "{id}: {kinds:?}"
            );
            for index in 0..self.reminder_count {
                let key = (id.to_string(), index);
                let of = |kind: &str| reminders.get(&(key.clone(), kind)).copied().unwrap_or(0);
                let (reminded, sent, not_sent) =
                    (of("Reminded"), of("ReminderSent"), of("ReminderNotSent"));
                assert!(
                    reminded <= 1 && sent + not_sent <= 1,
                    "{id}: reminder {index} recorded more than once: {kinds:?}"
                );
                // A version that records reminder outcomes records one for every reminder.
                if outcomes {
                    assert_eq!(
                        sent + not_sent,
                        1,
                        "{id}: reminder {index} has no outcome: {kinds:?}; seed {}",
                        self.seed
                    );
                }
            }
            for cleaner in &names {
                let of_cleaner = |kind: &str| -> Vec<u64> {
                    events
                        .iter()
                        .filter(|e| e.event_type == kind && e.payload["cleaner"] == *cleaner)
                        .map(|e| e.payload["attempt"].as_u64().unwrap())
                        .collect()
                };
                let succeeded = of_cleaner("CleanerSucceeded");
                assert_eq!(succeeded.len(), 1, "{id} {cleaner}: {kinds:?}");
                let failed = of_cleaner("CleanerFailed");
                let distinct: BTreeSet<u64> = failed.iter().copied().collect();
                assert_eq!(
                    distinct.len(),
                    failed.len(),
                    "one failure per attempt at most: {id} {cleaner}: {failed:?}"
                );
                let success = events
                    .iter()
                    .position(|e| {
                        e.event_type == "CleanerSucceeded" && e.payload["cleaner"] == *cleaner
                    })
                    .unwrap();
                assert!(
                    events[success..].iter().all(
                        |e| e.event_type != "CleanerFailed" || e.payload["cleaner"] != *cleaner
                    ),
                    "{id} {cleaner}: a failure recorded after the success: {kinds:?}"
                );
                tally.failures += failed.len();
                failures.insert((id.to_string(), *cleaner), failed.len());
            }
        }
        failures
    }

    /// What each cleaner heard: only known requests, every one of them, under the same key and
    /// with valid signatures, attempts in order over HTTP, and no more calls than the bound.
    fn check_calls(&self, failures: &BTreeMap<(String, &'static str), usize>, tally: &mut Tally) {
        let known: BTreeSet<String> = self.ids.iter().map(ToString::to_string).collect();
        for (cleaner, service) in &self.cleaners {
            let kafka = matches!(service, Cleaner::Reading(_));
            let mut by_request: BTreeMap<String, Vec<Heard>> = BTreeMap::new();
            for heard in service.heard() {
                by_request
                    .entry(heard.request_id.clone())
                    .or_default()
                    .push(heard);
            }
            for id in by_request.keys() {
                assert!(known.contains(id), "{cleaner} was called for {id:?}");
            }
            for id in &self.ids {
                let heard = by_request
                    .get(&id.to_string())
                    .unwrap_or_else(|| panic!("{cleaner} never heard of {id}"));
                let key = format!("{id}:{cleaner}");
                let attempts: Vec<u64> = heard.iter().map(|h| h.attempt).collect();
                for call in heard.iter().filter_map(|h| h.call.as_ref()) {
                    assert_eq!(call.idempotency_key, key, "{cleaner}: {attempts:?}");
                    assert!(call.signature_ok, "{cleaner} {id}: a bad signature");
                    assert_eq!(call.body["cleaner"], *cleaner);
                }
                // Over Kafka a message published again (a relay that died before its
                // checkpoint, or a batch sent again after a broker failure) may arrive after a
                // later attempt's, so only HTTP calls are in order.
                if !kafka {
                    assert_eq!(attempts[0], 1, "{cleaner} {id}: {attempts:?}");
                    assert!(
                        attempts.windows(2).all(|w| w[0] <= w[1]),
                        "{cleaner} {id}: attempts went backwards: {attempts:?}"
                    );
                }
                // A broker kill can make the relay publish a batch once more, as a kill of
                // Lethe can.
                let kills = self.kills + if kafka { self.broker_kills } else { 0 };
                let failed = failures[&(id.to_string(), *cleaner)];
                assert!(
                    heard.len() <= 1 + failed + kills,
                    "{cleaner} was called {} times for {id}, more than 1 + {failed} failures \
                     + {kills} kills: attempts {attempts:?}; seed {}",
                    heard.len(),
                    self.seed
                );
                let distinct: BTreeSet<u64> = attempts.iter().copied().collect();
                tally.calls += heard.len();
                tally.extra_calls += heard.len() - 1;
                tally.repeated_attempts += heard.len() - distinct.len();
                tally.most_repeats = tally
                    .most_repeats
                    .max(heard.len().saturating_sub(1 + failed));
            }
        }
    }

    /// Every notifier call is signed and for a reminder the log records (as reminded, or with
    /// its outcome), all calls for one reminder carry one `Idempotency-Key`, a reminder recorded
    /// as sent went to the notifier, and no reminder went more than once per kill beyond the
    /// first (the notifier accepts every call).
    pub(crate) fn check_notifications(
        &self,
        notifier: &FakeService,
        reminders: &Reminders,
        tally: &mut Tally,
    ) {
        let mut by_reminder: BTreeMap<(String, u64), Vec<Call>> = BTreeMap::new();
        for call in notifier.calls() {
            if call.body["type"] == "completed" {
                // A completion with its receipt (checked by the workflow's receipt tests).
                assert!(call.signature_ok, "a completion with a bad signature");
                continue;
            }
            let id = call.body["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let index = call.body["reminder"].as_u64().unwrap();
            assert!(call.signature_ok, "notifier {id}: a bad signature");
            let key = (id, index);
            assert!(
                ["Reminded", "ReminderSent", "ReminderNotSent"]
                    .iter()
                    .any(|kind| reminders.contains_key(&(key.clone(), *kind))),
                "the notifier was told of reminder {index} of {}, which the log does not \
                 record; seed {}",
                key.0,
                self.seed
            );
            by_reminder.entry(key).or_default().push(call);
        }
        for ((id, index), calls) in &by_reminder {
            assert!(
                calls.len() <= 1 + self.kills,
                "reminder {index} of {id} went to the notifier {} times, more than once \
                 plus {} kills; seed {}",
                calls.len(),
                self.kills,
                self.seed
            );
            assert!(
                calls
                    .iter()
                    .all(|c| c.idempotency_key == calls[0].idempotency_key),
                "reminder {index} of {id}: calls under different keys"
            );
            tally.most_notifications = tally.most_notifications.max(calls.len());
        }
        for ((key, _), _) in reminders
            .iter()
            .filter(|((_, kind), _)| *kind == "ReminderSent")
        {
            assert!(
                by_reminder.contains_key(key),
                "reminder {} of {} is recorded as sent but never went to the notifier; seed {}",
                key.1,
                key.0,
                self.seed
            );
        }
        for ((_, kind), n) in reminders {
            *tally.reminder_events.entry(kind).or_default() += n;
        }
        tally.notifications = by_reminder.values().map(Vec::len).sum();
        assert!(tally.notifications > 0, "no reminder reached the notifier");
    }

    /// The reminder events in the log, counted by request, reminder and type.
    pub(crate) async fn reminders(&self) -> Reminders {
        let mut reminders = Reminders::new();
        for id in &self.ids {
            for event in self.events.read_stream(*id, 0).await.unwrap() {
                let kind = match event.event_type.as_str() {
                    "Reminded" => "Reminded",
                    "ReminderSent" => "ReminderSent",
                    "ReminderNotSent" => "ReminderNotSent",
                    _ => continue,
                };
                let index = event.payload["index"].as_u64().unwrap();
                *reminders
                    .entry(((id.to_string(), index), kind))
                    .or_default() += 1;
            }
        }
        reminders
    }

    /// Waits until every reminder has its outcome, when this version records outcomes: the
    /// last may be recorded after its request completed.
    pub(crate) async fn wait_reminders_settled(&self, server: &mut Server) {
        let expected = self.ids.len() * usize::try_from(self.reminder_count).unwrap();
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            server.assert_alive();
            let reminders = self.reminders().await;
            let settled: usize = reminders
                .iter()
                .filter(|((_, kind), _)| REMINDER_OUTCOMES.contains(kind))
                .map(|(_, n)| *n)
                .sum();
            if !records_reminder_outcomes(&reminders) || settled >= expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{settled} of {expected} reminders have an outcome after {COMMAND_DEADLINE:?}; \
                 seed {}\n{}",
                self.seed,
                server.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every result the 202 cleaner reported was answered, with 200 (recorded, or found to be
    /// a repeat of one recorded), once every call it took has been reported; returns what it
    /// did, for the run's summary.
    pub(crate) async fn check_reports(&self) -> String {
        let mut summary = Vec::new();
        for (name, cleaner) in &self.cleaners {
            let Cleaner::Reporting(service) = cleaner else {
                continue;
            };
            let deadline = Instant::now() + COMMAND_DEADLINE;
            while service.reports().len() < service.calls().len() {
                assert!(
                    Instant::now() < deadline,
                    "{name} did not report all its calls within {COMMAND_DEADLINE:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let reports = service.reports();
            for report in &reports {
                assert_eq!(
                    report.status,
                    Some(200),
                    "{name}'s report was not accepted: {report:?}; seed {}",
                    self.seed
                );
            }
            // The success in the log is one the cleaner reported, for the attempt it named.
            let succeeded: BTreeSet<(String, u64)> = reports
                .iter()
                .filter(|r| r.succeeded)
                .map(|r| (r.request_id.clone(), r.attempt))
                .collect();
            for id in &self.ids {
                let events = self.events.read_stream(*id, 0).await.unwrap();
                let recorded = events
                    .iter()
                    .find(|e| e.event_type == "CleanerSucceeded" && e.payload["cleaner"] == *name)
                    .map(|e| e.payload["attempt"].as_u64().unwrap())
                    .unwrap();
                assert!(
                    succeeded.contains(&(id.to_string(), recorded)),
                    "{id}: {name}'s success of attempt {recorded} was never reported; seed {}",
                    self.seed
                );
            }
            let failed = reports.iter().filter(|r| !r.succeeded).count();
            let unanswered: usize = reports.iter().map(|r| r.unanswered).sum();
            summary.push(format!(
                "{name} reported {} results ({failed} failures) after {unanswered} tries \
                 without an answer",
                reports.len()
            ));
        }
        summary.join(", ")
    }

    /// `lethe verify` on the workload's database exits 0 and names every request. Run again
    /// (within a deadline) while it reports nothing but what a lagging global read explains:
    /// a transaction left open elsewhere in the cluster hides newer events for a moment.
    pub(crate) async fn verify(&self) {
        let url = self.store.database_url();
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let output = timeout(
                COMMAND_DEADLINE,
                lethe(self.dir.path(), &self.key_file)
                    .args(["verify", "--database-url", &url])
                    .output(),
            )
            .await
            .expect("lethe verify finishes")
            .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if output.status.success() {
                assert!(
                    stdout.starts_with(&format!("ok: {} requests", self.ids.len())),
                    "{stdout}{stderr}"
                );
                return;
            }
            let lagging = stdout
                .lines()
                .filter(|line| line.starts_with("FAILED"))
                .all(|line| line.contains("the stream's head records version"));
            assert!(
                lagging && Instant::now() < deadline,
                "lethe verify failed with {}:\n{stdout}{stderr}",
                output.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
