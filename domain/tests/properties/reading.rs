//! An independent reading of the stream, checked event by event against the aggregate's
//! invariants.

use super::*;

/// What a cleaner's events say, tracked from the stream alone.
#[derive(Debug, Default)]
pub(crate) struct CleanerHistory {
    pub(crate) max_attempts: u32,
    pub(crate) last_attempt: u32,
    pub(crate) exhausted: bool,
    pub(crate) done: bool,
    pub(crate) skipped: bool,
    pub(crate) failed_attempts: BTreeSet<u32>,
    pub(crate) stores: Vec<String>,
}

/// What the stream says, checked event by event against the aggregate's invariants.
#[derive(Debug, Default)]
pub(crate) struct StreamReading {
    pub(crate) received_on: Option<NaiveDate>,
    pub(crate) due_at: Option<DateTime<Utc>>,
    pub(crate) reminder_count: usize,
    /// Reminders with an outcome (sent, or not sent and why).
    pub(crate) settled: BTreeSet<u32>,
    pub(crate) on_hold: bool,
    pub(crate) awaiting_approval: bool,
    pub(crate) deadline: Option<NaiveDate>,
    pub(crate) deadline_rule: Option<DeadlineRule>,
    pub(crate) due: bool,
    pub(crate) cleaners: BTreeMap<String, CleanerHistory>,
    pub(crate) closed: Option<RequestStatus>,
    pub(crate) shredded: bool,
}

impl StreamReading {
    pub(crate) fn read(events: &[Event]) -> Result<Self, String> {
        let mut reading = Self::default();
        for (position, event) in events.iter().enumerate() {
            reading
                .apply(event)
                .map_err(|broken| format!("event {position} ({}): {broken}", event.event_type()))?;
        }
        // "Completed ... and then at once": no open request whose cleaners are all done.
        if reading.due && reading.closed.is_none() && reading.cleaners.values().all(|c| c.done) {
            return Err("every planned cleaner is done but the request is not Completed".into());
        }
        Ok(reading)
    }

    pub(crate) fn apply(&mut self, event: &Event) -> Result<(), String> {
        if let Event::Received(received) = event {
            if self.received_on.is_some() {
                return Err("a second Received".into());
            }
            for at in &received.reminders {
                if *at <= received.received_at || *at > received.due_at {
                    return Err(format!("reminder at {at} outside the grace period"));
                }
            }
            self.received_on = Some(received.received_at.date_naive());
            self.due_at = Some(received.due_at);
            self.reminder_count = received.reminders.len();
            self.awaiting_approval = received.awaiting_approval;
            if received.awaiting_approval && !received.reminders.is_empty() {
                return Err("reminders before the approval".into());
            }
            self.deadline = Some(received.deadline);
            self.deadline_rule = Some(received.deadline_rule);
            return Ok(());
        }
        if self.received_on.is_none() {
            return Err("an event before Received".into());
        }
        // A reminder's outcome may come in any phase, closed and shredded included, once.
        match event {
            // A sent reminder counts at least the call the notifier accepted.
            Event::ReminderSent(sent) => return self.settle(sent.index, sent.calls == 0),
            Event::ReminderNotSent(not_sent) => return self.settle(not_sent.index, false),
            Event::Reminded(_) => return Err("Reminded is no longer written".into()),
            _ => {}
        }
        if let Some(status) = self.closed {
            return match event {
                Event::Shredded(_) if self.shredded => Err("shredded twice".into()),
                Event::Shredded(_) => {
                    self.shredded = true;
                    Ok(())
                }
                _ => Err(format!("an event after the request was {status}")),
            };
        }
        match event {
            Event::Received(_) => unreachable!("handled above"),
            Event::Shredded(_) => return Err("shredded while open".into()),
            Event::Approved(approved) => return self.approve(approved),
            Event::Suppressed(_) | Event::SuppressionLifted(_) | Event::PreviouslyErased(_) => {
                return Err("no suppression command is generated".into())
            }
            Event::Reminded(_) | Event::ReminderSent(_) | Event::ReminderNotSent(_) => {
                unreachable!("handled above")
            }
            Event::Cancelled(_) | Event::Rejected(_) => {
                if self.due {
                    return Err("cancelled or rejected after Due".into());
                }
                self.closed = Some(if matches!(event, Event::Cancelled(_)) {
                    RequestStatus::Cancelled
                } else {
                    RequestStatus::Rejected
                });
            }
            Event::HoldPlaced(hold) => {
                if self.on_hold || hold.reason.trim().is_empty() {
                    return Err("a hold while held, or without a reason".into());
                }
                self.on_hold = true;
            }
            Event::HoldReleased(_) => {
                if !self.on_hold {
                    return Err("a release without a hold".into());
                }
                self.on_hold = false;
            }
            Event::DeadlineExtended(extended) => return self.extend(extended),
            Event::Due(due) => return self.fall_due(due),
            Event::CleanerSucceeded(_)
            | Event::CleanerFailed(_)
            | Event::CleanerRetried(_)
            | Event::CleanerSkipped(_) => return self.apply_cleaner_event(event),
            Event::Completed(completed) => {
                if !self.due || !self.cleaners.values().all(|c| c.done) {
                    return Err("Completed with a cleaner outstanding".into());
                }
                self.check_covered(completed)?;
                self.closed = Some(RequestStatus::Completed);
            }
        }
        Ok(())
    }

    pub(crate) fn approve(
        &mut self,
        approved: &lethe_domain::event::Approved,
    ) -> Result<(), String> {
        if !self.awaiting_approval {
            return Err("approved without awaiting approval".into());
        }
        if approved
            .reminders
            .iter()
            .any(|at| *at <= approved.at || *at > approved.due_at)
        {
            return Err("a reminder outside the approved grace period".into());
        }
        self.awaiting_approval = false;
        self.due_at = Some(approved.due_at);
        self.reminder_count = approved.reminders.len();
        Ok(())
    }

    pub(crate) fn extend(&mut self, extended: &DeadlineExtended) -> Result<(), String> {
        let latest = self
            .deadline_rule
            .zip(self.received_on)
            .map(|(rule, received)| rule.latest_deadline(received));
        if extended.by.is_zero() || extended.reason.trim().is_empty() {
            return Err("an empty or unexplained extension".into());
        }
        if Some(extended.deadline) > latest || Some(extended.deadline) <= self.deadline {
            return Err(format!(
                "deadline moved from {:?} to {} (latest {latest:?})",
                self.deadline, extended.deadline
            ));
        }
        self.deadline = Some(extended.deadline);
        Ok(())
    }

    pub(crate) fn fall_due(&mut self, due: &Due) -> Result<(), String> {
        if self.due {
            return Err("a second Due".into());
        }
        if self.on_hold {
            return Err("Due while on hold".into());
        }
        if self.awaiting_approval {
            return Err("Due while awaiting approval".into());
        }
        if !due.expedited && Some(due.at) < self.due_at {
            return Err("Due before the grace period ended, not expedited".into());
        }
        self.due = true;
        for planned in &due.cleaners {
            self.cleaners.insert(
                planned.name.to_string(),
                CleanerHistory {
                    max_attempts: planned.max_attempts,
                    stores: planned.stores.iter().map(ToString::to_string).collect(),
                    ..CleanerHistory::default()
                },
            );
        }
        Ok(())
    }

    /// A cleaner's success, failure, retry or skip.
    pub(crate) fn apply_cleaner_event(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::CleanerSucceeded(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if c.done {
                    return Err("a result for a cleaner that is done".into());
                }
                if e.attempt == 0 || e.attempt > c.last_attempt + 1 {
                    return Err(format!(
                        "success for attempt {} after {}",
                        e.attempt, c.last_attempt
                    ));
                }
                c.last_attempt = c.last_attempt.max(e.attempt);
                c.done = true;
                c.exhausted = false;
            }
            Event::CleanerFailed(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if c.done || c.exhausted {
                    return Err("a failure for a cleaner that is done or exhausted".into());
                }
                if e.attempt != c.last_attempt + 1 || !c.failed_attempts.insert(e.attempt) {
                    return Err(format!(
                        "failure of attempt {} after {}",
                        e.attempt, c.last_attempt
                    ));
                }
                let exhausted = !e.retryable || e.attempt >= c.max_attempts;
                if e.exhausted != exhausted {
                    return Err(format!("exhausted = {}, expected {exhausted}", e.exhausted));
                }
                c.last_attempt = e.attempt;
                c.exhausted = exhausted;
            }
            Event::CleanerRetried(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if !c.exhausted || e.max_attempts <= c.last_attempt {
                    return Err(
                        "a retry of a cleaner not exhausted, or with no attempt left".into(),
                    );
                }
                c.max_attempts = e.max_attempts;
                c.exhausted = false;
            }
            Event::CleanerSkipped(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if c.done || e.reason.trim().is_empty() {
                    return Err("a skip of a done cleaner, or without a reason".into());
                }
                c.done = true;
                c.skipped = true;
                c.exhausted = false;
            }
            _ => unreachable!("not a cleaner event"),
        }
        Ok(())
    }

    /// Completed names each store a planned cleaner erases, with its cleaners by outcome.
    fn check_covered(&self, completed: &Completed) -> Result<(), String> {
        let mut wanted: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for (name, cleaner) in &self.cleaners {
            for store in &cleaner.stores {
                let (succeeded, skipped) = wanted.entry(store.clone()).or_default();
                if cleaner.skipped { skipped } else { succeeded }.push(name.clone());
            }
        }
        let names = |list: &[lethe_domain::CleanerName]| -> Vec<String> {
            list.iter().map(ToString::to_string).collect()
        };
        let recorded: BTreeMap<String, (Vec<String>, Vec<String>)> = completed
            .stores
            .iter()
            .map(|s| {
                (
                    s.store.to_string(),
                    (names(&s.succeeded), names(&s.skipped)),
                )
            })
            .collect();
        if recorded.len() != completed.stores.len() || recorded != wanted {
            return Err(format!("covered stores {recorded:?}, expected {wanted:?}"));
        }
        Ok(())
    }

    pub(crate) fn settle(&mut self, index: u32, sent_without_a_call: bool) -> Result<(), String> {
        if index as usize >= self.reminder_count {
            return Err(format!("reminder {index} does not exist"));
        }
        if sent_without_a_call {
            return Err(format!("reminder {index} sent after no call"));
        }
        if !self.settled.insert(index) {
            return Err(format!("reminder {index} settled twice"));
        }
        Ok(())
    }

    pub(crate) fn planned(&mut self, name: &str) -> Result<&mut CleanerHistory, String> {
        if !self.due {
            return Err("a cleaner event before Due".into());
        }
        self.cleaners
            .get_mut(name)
            .ok_or_else(|| format!("cleaner {name} is not in the plan"))
    }

    /// The status docs/ARCHITECTURE.md gives a request with this history.
    pub(crate) fn status(&self) -> RequestStatus {
        match self.closed {
            Some(status) => status,
            None if self.on_hold => RequestStatus::OnHold,
            None if self.awaiting_approval => RequestStatus::AwaitingApproval,
            None if !self.due => RequestStatus::Pending,
            None if self.cleaners.values().any(|c| c.exhausted) => RequestStatus::NeedsAttention,
            None => RequestStatus::Due,
        }
    }
}
