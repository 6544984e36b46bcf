//! Commands against the log: load a request's stream, fold it, let the aggregate decide,
//! append with the expected version, and decide again when someone else appended in between.

use std::collections::{BTreeMap, HashMap};

use lethe_domain::state::Request;
use lethe_domain::{
    Aggregate, Command, DeletionRequest, DomainError, Event, RequestId, RequestState,
};

use super::subjects::SubjectAccess;
use super::{loaded, LoadedRequest, RequestError, Requests};
use crate::store::{Appended, EventMetadata, RecordedEvent, StoreError};

/// A command is decided again at most this many times when appends race.
const MAX_CONFLICT_RETRIES: usize = 5;

impl Requests {
    /// The request's current state and its whole stream, or `None` if there is no such request.
    pub async fn load(&self, id: RequestId) -> Result<Option<LoadedRequest>, RequestError> {
        let events = self.store.read_stream(id, 0).await?;
        if events.is_empty() {
            return Ok(None);
        }
        loaded(events).map(Some)
    }

    /// Loads several requests with one read of the log; the ones that do not exist are absent.
    pub async fn load_many(
        &self,
        ids: &[RequestId],
    ) -> Result<HashMap<RequestId, LoadedRequest>, RequestError> {
        let mut by_stream: HashMap<RequestId, Vec<RecordedEvent>> =
            HashMap::with_capacity(ids.len());
        for event in self.store.read_streams(ids).await? {
            by_stream.entry(event.stream_id).or_default().push(event);
        }
        by_stream
            .into_iter()
            .map(|(id, events)| Ok((id, loaded(events)?)))
            .collect()
    }

    /// Decides `command` (built from the current state by `make`) and appends the result,
    /// deciding again on a concurrent append. Returns the request after the command.
    pub async fn execute(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        make: impl Fn(&Request) -> Command + Send + Sync,
    ) -> Result<LoadedRequest, RequestError> {
        if let Some(command_id) = &metadata.command_id {
            // A retried command (same idempotency key) gets the request as it is, not a
            // second decision that might now be refused.
            if self.store.find_command(command_id).await?.is_some() {
                return self.load(id).await?.ok_or(RequestError::NotFound(id));
            }
        }
        let (loaded, mut outcomes) = self
            .decide_and_append(id, metadata, None, |request| vec![make(request)])
            .await?;
        match outcomes.pop() {
            Some(Err(rejected)) => Err(rejected.into()),
            _ => Ok(loaded),
        }
    }

    /// As [`Requests::execute`], for a command that records a cleaner's result: the cleaner's
    /// text in it (the `detail`, the error) has the subject's identifiers redacted and is cut
    /// to length ([`lethe_domain::redact`]). Every door that records a result reported
    /// by a cleaner or a person goes through here.
    pub async fn execute_result(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        make: impl Fn(&Request) -> Command + Send + Sync,
    ) -> Result<LoadedRequest, RequestError> {
        use lethe_domain::redact::scrub_result;
        if let Some(command_id) = &metadata.command_id {
            if self.store.find_command(command_id).await?.is_some() {
                return self.load(id).await?.ok_or(RequestError::NotFound(id));
            }
        }
        let loaded = self.load(id).await?.ok_or(RequestError::NotFound(id))?;
        // A shredded subject has nothing left to redact; one this process cannot open (no
        // key store: only tests) neither.
        let subject = match self.subject_of(&loaded.request).await? {
            SubjectAccess::Clear(subject) => subject,
            SubjectAccess::Shredded | SubjectAccess::Unavailable => BTreeMap::new(),
        };
        let (loaded, mut outcomes) = self
            .decide_and_append(id, metadata, Some(loaded), |request| {
                vec![scrub_result(make(request), &subject)]
            })
            .await?;
        match outcomes.pop() {
            Some(Err(rejected)) => Err(rejected.into()),
            _ => Ok(loaded),
        }
    }

    /// Decides `commands` one after another, each on the state the ones before it left, and
    /// appends all their events at once: one append (one commit) for, say, the results of
    /// all of a request's cleaners. A command the aggregate refuses is skipped; its refusal is
    /// returned in its place. `known` is the request as the caller last read it (the append
    /// checks that it is still current; if not, it is read again and everything re-decided).
    pub async fn execute_all(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        known: Option<LoadedRequest>,
        commands: &[Command],
    ) -> Result<(LoadedRequest, Vec<Result<(), DomainError>>), RequestError> {
        self.decide_and_append(id, metadata, known, |_| commands.to_vec())
            .await
    }

    async fn decide_and_append(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        mut known: Option<LoadedRequest>,
        make: impl Fn(&Request) -> Vec<Command> + Send + Sync,
    ) -> Result<(LoadedRequest, Vec<Result<(), DomainError>>), RequestError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let current = match known.take() {
                Some(loaded) => loaded,
                None => self.load(id).await?.ok_or(RequestError::NotFound(id))?,
            };
            let mut state = RequestState::Received(Box::new(current.request.clone()));
            let mut events = Vec::new();
            let mut outcomes = Vec::new();
            for command in make(&current.request) {
                match DeletionRequest::handle_command(&state, command) {
                    Ok(decided) => {
                        for event in &decided {
                            state = DeletionRequest::apply_event(state, event.clone());
                        }
                        events.extend(decided);
                        outcomes.push(Ok(()));
                    }
                    Err(rejected) => outcomes.push(Err(rejected)),
                }
            }
            if events.is_empty() {
                return Ok((current, outcomes));
            }
            self.keep_for_suppression(&current.request, &mut state, &mut events)
                .await?;
            match self
                .store
                .append(id, current.version(), &events, metadata)
                .await
            {
                Ok(Appended::Written(written)) => {
                    crate::telemetry::metrics::events_appended(&written);
                    crate::telemetry::metrics::cleaner_results(&events, &self.config);
                    // The request after the commands: the state just decided on, without
                    // reading the stream again.
                    let RequestState::Received(request) = state else {
                        return Err(StoreError::Corrupt(format!(
                            "request {id} vanished while applying its own events"
                        ))
                        .into());
                    };
                    let mut events = current.events;
                    events.extend(written);
                    return Ok((
                        LoadedRequest {
                            request: *request,
                            events,
                        },
                        outcomes,
                    ));
                }
                Ok(Appended::Duplicate(_)) => {
                    let loaded = self.load(id).await?.ok_or(RequestError::NotFound(id))?;
                    return Ok((loaded, outcomes));
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(RequestError::Contended)
    }

    /// When `events` complete the request and suppression is on, adds its `Suppressed`
    /// event, so that both are written in one commit.
    async fn keep_for_suppression(
        &self,
        request: &Request,
        state: &mut RequestState,
        events: &mut Vec<Event>,
    ) -> Result<(), RequestError> {
        let Some(command) = self.suppress_on_completion(request, events).await? else {
            return Ok(());
        };
        match DeletionRequest::handle_command(state, command) {
            Ok(decided) => {
                for event in &decided {
                    *state = DeletionRequest::apply_event(state.clone(), event.clone());
                }
                events.extend(decided);
            }
            Err(refused) => {
                tracing::warn!(request_id = %request.id, error = %refused, "not kept for suppression");
            }
        }
        Ok(())
    }
}
