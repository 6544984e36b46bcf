//! Runs commands against the log: load a request's stream, fold it, let the aggregate decide,
//! append with the expected version, and retry when someone else appended in between.
//! Both doors (HTTP and CLI) go through here.

pub mod audit;
pub mod keys;
pub mod planning;
pub mod views;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use lethe_domain::command::Receive;
use lethe_domain::error::InvalidInput;
use lethe_domain::state::Request;
use lethe_domain::{
    Aggregate, Command, DeletionRequest, DomainError, Jurisdiction, RequestId, RequestState,
    Subject, SubjectRecord,
};
use uuid::Uuid;

use crate::config::Config;
use crate::projections::ProjectionStore;
use crate::store::keys::{FindBatcher, KeyStore};
use crate::store::master_key::MasterKey;
use crate::store::sealing::{DataKey, SealError};
use crate::store::{
    Append, Appended, EventMetadata, EventStore, NewKey, RecordedEvent, StoreError, StreamHead,
};

/// Limits on the free-text fields of a submission.
pub const MAX_SOURCE_LEN: usize = 128;
pub const MAX_REASON_LEN: usize = 1024;
pub const MAX_EXTERNAL_ID_LEN: usize = 256;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 64;
/// A command is decided again at most this many times when appends race.
const MAX_CONFLICT_RETRIES: usize = 5;

/// A submission as it arrives, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub subject: BTreeMap<String, String>,
    pub jurisdiction: Option<String>,
    pub source: Option<String>,
    pub reason: Option<String>,
    pub external_id: Option<String>,
    pub tags: Vec<String>,
}

/// Submissions validated and sealed by [`Requests::prepare`], to be recorded by
/// [`Requests::record`].
#[derive(Debug)]
pub struct Prepared {
    answers: Vec<Option<Result<Submitted, RequestError>>>,
    valid: Vec<PreparedOne>,
}

/// Prepared submissions checked against what is recorded ([`Requests::resolve`]): each is
/// answered, waits for an earlier one, or is to be appended ([`Requests::write`]).
#[derive(Debug)]
pub struct Resolved {
    answers: Vec<Option<Result<Submitted, RequestError>>>,
    appends: Vec<Append>,
    /// Where each append's answer goes.
    appended: Vec<usize>,
    /// Submissions that repeat the subject of an earlier one among these: (this, that).
    same_as: Vec<(usize, usize)>,
    /// Submissions that repeat the subject of one resolved before these and not yet known to
    /// be written, with the blind index they share.
    after: Vec<(usize, String)>,
    /// The blind indexes of the subjects these appends record, each with its submission.
    new_subjects: HashMap<String, usize>,
}

impl Resolved {
    /// The blind indexes of the subjects this will record as new requests: what a lookup
    /// made before it is written cannot find.
    pub fn new_subjects(&self) -> HashSet<String> {
        self.new_subjects.keys().cloned().collect()
    }
}

/// Resolved submissions after their appends ([`Requests::write`]).
#[derive(Debug)]
pub struct Written {
    answers: Vec<Option<Result<Submitted, RequestError>>>,
    after: Vec<(usize, String)>,
    new_subjects: HashMap<String, usize>,
}

impl Written {
    /// The answers, in order. A submission that waited for an earlier one gets the request
    /// `earlier` finds by the blind index they share; none found means that one failed, and
    /// so does this.
    pub fn finish<'a>(self, earlier: impl Fn(&str) -> Option<&'a LoadedRequest>) -> Recorded {
        let Self {
            mut answers,
            after,
            new_subjects,
        } = self;
        for (index, blind_index) in after {
            answers[index] = Some(match earlier(&blind_index) {
                Some(loaded) => Ok(Submitted {
                    loaded: loaded.clone(),
                    created: false,
                }),
                None => Err(RequestError::Contended),
            });
        }
        Recorded {
            results: finish(answers),
            new_subjects,
        }
    }
}

/// Recorded submissions: their answers, in order.
#[derive(Debug)]
pub struct Recorded {
    pub results: Vec<Result<Submitted, RequestError>>,
    /// The blind indexes of the subjects of the requests created, each with the place of the
    /// submission that created it (when that one failed, nothing was created).
    pub new_subjects: HashMap<String, usize>,
}

#[derive(Debug)]
struct PreparedOne {
    /// Its place among the submissions.
    index: usize,
    command_ids: Vec<String>,
    /// The subject's blind indexes (none without sealing).
    indexes: Vec<String>,
    /// The append that records it as a new request.
    append: Result<Append, RequestError>,
}

/// A request as loaded from its stream.
#[derive(Debug, Clone)]
pub struct LoadedRequest {
    pub request: Request,
    pub events: Vec<RecordedEvent>,
}

impl LoadedRequest {
    pub fn version(&self) -> i64 {
        self.events.last().map_or(0, |e| e.version)
    }
}

#[derive(Debug)]
pub struct Submitted {
    pub loaded: LoadedRequest,
    /// False when an earlier submission with the same idempotency key or external id won.
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("no request {0}")]
    NotFound(RequestId),
    #[error(transparent)]
    Rejected(#[from] DomainError),
    #[error("the request kept changing while the command was decided; try again")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct Requests {
    store: Arc<dyn EventStore>,
    config: Arc<Config>,
    /// For the list and stats queries; absent in tools that only write.
    projections: Option<Arc<dyn ProjectionStore>>,
    /// Seals subjects (crypto-shredding) and finds open requests of the same subject. Without
    /// it subjects are recorded in clear (only tests do that).
    sealing: Option<Sealing>,
}

#[derive(Debug, Clone)]
struct Sealing {
    master: MasterKey,
    keys: Arc<dyn KeyStore>,
    /// The blind-index lookups of concurrent submissions, gathered into one query.
    finder: Arc<FindBatcher>,
}

/// What can be known of a request's subject now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAccess {
    Clear(BTreeMap<String, String>),
    /// The data key was destroyed: the identity is gone for good.
    Shredded,
    /// Sealed, and this process holds no key that opens it.
    Unavailable,
}

/// Why a subject did not open.
#[derive(Debug)]
enum Opening {
    /// Its data key is wrapped under a master key this process does not hold.
    UnknownKey(String),
    Error(RequestError),
}

impl Opening {
    fn into_error(self) -> RequestError {
        match self {
            Self::UnknownKey(problem) => StoreError::Corrupt(problem).into(),
            Self::Error(e) => e,
        }
    }
}

impl Requests {
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        Self {
            store,
            config,
            projections: None,
            sealing: None,
        }
    }

    /// Seals every new subject under a per-request data key (wrapped by `master`, stored in
    /// `keys`) and answers a submission for a subject with an open request with that request.
    #[must_use]
    pub fn with_sealing(mut self, master: MasterKey, keys: Arc<dyn KeyStore>) -> Self {
        let finder = Arc::new(FindBatcher::new(keys.clone()));
        self.sealing = Some(Sealing {
            master,
            keys,
            finder,
        });
        self
    }

    /// The subject's identifiers, if they can still be read.
    pub async fn subject_of(&self, request: &Request) -> Result<SubjectAccess, RequestError> {
        let wrapped = match (&request.subject, &self.sealing) {
            (SubjectRecord::Sealed(_), Some(sealing)) => {
                Some(sealing.keys.wrapped_key(request.id).await?)
            }
            _ => None,
        };
        self.open_learning(request, wrapped).await
    }

    /// What an auditor's history shows: the stream's head, the request and its subject. The
    /// stream and the data key are read side by side. A subject this process cannot open
    /// (sealed under a key it does not hold) is shown sealed: the events still are.
    pub async fn history_of(
        &self,
        id: RequestId,
    ) -> Result<Option<(Option<StreamHead>, LoadedRequest, SubjectAccess)>, RequestError> {
        let key = async {
            match &self.sealing {
                Some(sealing) => sealing.keys.wrapped_key(id).await.map(Some),
                None => Ok(None),
            }
        };
        let (stream, key) = tokio::join!(self.store.read_stream_with_head(id), key);
        let (head, events) = stream?;
        if events.is_empty() {
            return Ok(None);
        }
        let loaded = loaded(events)?;
        let subject = match self.open_learning(&loaded.request, key?).await {
            Ok(subject) => subject,
            Err(RequestError::Store(StoreError::Corrupt(problem))) => {
                tracing::warn!(request.id = %id, problem, "the subject does not open: shown sealed");
                SubjectAccess::Unavailable
            }
            Err(e) => return Err(e),
        };
        Ok(Some((head, loaded, subject)))
    }

    /// [`Self::open_subject`], learning the key ring again from the database once when the
    /// data key is wrapped under a key this process does not hold (yet): another process
    /// may have begun a rotation.
    async fn open_learning(
        &self,
        request: &Request,
        wrapped: Option<Option<String>>,
    ) -> Result<SubjectAccess, RequestError> {
        match self.open_subject(request, wrapped.clone()) {
            Err(Opening::UnknownKey(_)) => {
                if let Some(sealing) = &self.sealing {
                    crate::store::key_ring::refresh(sealing.keys.as_ref(), &sealing.master).await?;
                }
                self.open_subject(request, wrapped)
                    .map_err(Opening::into_error)
            }
            other => other.map_err(Opening::into_error),
        }
    }

    /// The subject of `request`, given its wrapped data key as read (`None` without sealing).
    fn open_subject(
        &self,
        request: &Request,
        wrapped: Option<Option<String>>,
    ) -> Result<SubjectAccess, Opening> {
        match &request.subject {
            SubjectRecord::Plain(subject) => {
                Ok(SubjectAccess::Clear(subject.identifiers().clone()))
            }
            SubjectRecord::Sealed(sealed) => {
                let (Some(sealing), Some(wrapped)) = (&self.sealing, wrapped) else {
                    return Ok(SubjectAccess::Unavailable);
                };
                let Some(wrapped) = wrapped else {
                    return Ok(SubjectAccess::Shredded);
                };
                let corrupt = |what: String| Opening::Error(StoreError::Corrupt(what).into());
                let key = match sealing.master.unwrap(request.id, &wrapped) {
                    Ok(key) => key,
                    Err(SealError::UnknownKey(fingerprint)) => {
                        return Err(Opening::UnknownKey(format!(
                            "data key of {}: sealed under the master key {fingerprint}, which \
                             this process does not hold",
                            request.id
                        )))
                    }
                    Err(e) => return Err(corrupt(format!("data key of {}: {e}", request.id))),
                };
                let subject = key
                    .open(request.id, sealed)
                    .map_err(|e| corrupt(format!("subject of {}: {e}", request.id)))?;
                Ok(SubjectAccess::Clear(subject.identifiers().clone()))
            }
        }
    }

    /// Whether `token` is a cancel token of request `id` issued under a master key since
    /// retired (a rotation keeps their digests while the request is in its grace period).
    pub async fn previous_cancel_token(
        &self,
        id: RequestId,
        token: &str,
    ) -> Result<bool, RequestError> {
        let Some(sealing) = &self.sealing else {
            return Ok(false);
        };
        let kept = sealing.keys.previous_cancel_tokens(id).await?;
        Ok(kept.iter().any(|digest| {
            crate::store::master_key::matches_previous_cancel_token(id, token, digest)
        }))
    }

    /// Destroys the request's data key and blind index, then records `Shredded`. Idempotent;
    /// refused (and nothing destroyed) while the request is open.
    pub async fn shred(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
    ) -> Result<LoadedRequest, RequestError> {
        let loaded = self.load(id).await?.ok_or(RequestError::NotFound(id))?;
        if !loaded.request.status().is_closed() {
            return Err(DomainError::NotClosed.into());
        }
        if let Some(sealing) = &self.sealing {
            sealing.keys.destroy(id).await?;
        }
        self.execute(id, metadata, |_| Command::Shred { at: Utc::now() })
            .await
    }

    /// Adds the projections that answer list and stats queries.
    #[must_use]
    pub fn with_projections(mut self, projections: Arc<dyn ProjectionStore>) -> Self {
        self.projections = Some(projections);
        self
    }

    pub const fn projections(&self) -> Option<&Arc<dyn ProjectionStore>> {
        self.projections.as_ref()
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Validates and records a new request. A submission whose external id, or whose
    /// idempotency key from the same actor, was seen before returns that first request; so
    /// does one whose subject has an open request (when sealing).
    pub async fn submit(
        &self,
        submission: Submission,
        idempotency_key: Option<&str>,
        actor: &str,
    ) -> Result<Submitted, RequestError> {
        self.submit_each(vec![(submission, idempotency_key)], actor)
            .await
            .pop()
            .unwrap_or(Err(RequestError::Contended))
    }

    /// Submits many requests at once, as [`Self::submit`] does each, answering in order: one
    /// lookup of earlier subjects for all of them and one transaction for their appends. A
    /// bad submission fails alone. Two submissions of one subject make one request.
    pub async fn submit_many(
        &self,
        submissions: Vec<Submission>,
        actor: &str,
    ) -> Vec<Result<Submitted, RequestError>> {
        self.submit_each(submissions.into_iter().map(|s| (s, None)).collect(), actor)
            .await
    }

    async fn submit_each(
        &self,
        submissions: Vec<(Submission, Option<&str>)>,
        actor: &str,
    ) -> Vec<Result<Submitted, RequestError>> {
        self.record(self.prepare(submissions, actor)).await
    }

    /// The part of intake that needs no database: validates each submission, computes its
    /// subject's blind indexes and seals it into the append that would record it as a new
    /// request. CPU work, so a bulk intake prepares its next chunk while the current one is
    /// being recorded ([`Self::record`]). (A submission that turns out to repeat an earlier
    /// one was sealed for nothing; its append is dropped.)
    pub fn prepare(&self, submissions: Vec<(Submission, Option<&str>)>, actor: &str) -> Prepared {
        let submissions = submissions
            .into_iter()
            .map(|(submission, key)| (submission, key.map(|key| format!("submit:{actor}:{key}"))))
            .collect();
        self.prepare_with_ids(submissions, actor)
    }

    /// [`Self::prepare`], each submission with the command id of its own retries (instead of
    /// one derived from an `Idempotency-Key`): a bulk upload's line gets one from the
    /// upload's key and the line's number.
    pub fn prepare_with_ids(
        &self,
        submissions: Vec<(Submission, Option<String>)>,
        actor: &str,
    ) -> Prepared {
        let mut answers: Vec<Option<Result<Submitted, RequestError>>> =
            (0..submissions.len()).map(|_| None).collect();
        let mut valid = Vec::with_capacity(submissions.len());
        for (index, (submission, retry_id)) in submissions.into_iter().enumerate() {
            match self.validate(submission) {
                Ok(receive) => {
                    let command_ids: Vec<String> = receive
                        .external_id
                        .iter()
                        .map(|id| format!("external:{id}"))
                        .chain(retry_id)
                        .collect();
                    let indexes = match (&self.sealing, &receive.subject) {
                        (Some(sealing), SubjectRecord::Plain(subject)) => {
                            sealing.master.blind_indexes(subject)
                        }
                        _ => Vec::new(),
                    };
                    let append = self.receive(receive, command_ids.clone(), &indexes, actor);
                    valid.push(PreparedOne {
                        index,
                        command_ids,
                        indexes,
                        append,
                    });
                }
                Err(e) => answers[index] = Some(Err(e.into())),
            }
        }
        Prepared { answers, valid }
    }

    /// Records prepared submissions, answering in their order: a submission whose command id
    /// was seen before, or whose subject has an open request (earlier, or earlier among
    /// these), gets that request; the rest are appended in one transaction.
    pub async fn record(&self, prepared: Prepared) -> Vec<Result<Submitted, RequestError>> {
        let resolved = self.resolve(prepared, &[]).await;
        self.write(resolved).await.finish(|_| None).results
    }

    /// The first half of [`Self::record`]: answers the prepared submissions that repeat a
    /// command id seen before or the subject of an open request, and keeps the rest as the
    /// appends that record them. A submission whose subject is among `unwritten` (the
    /// subjects of submissions resolved before but perhaps not yet written, which the lookup
    /// cannot see) waits for that one's answer ([`Written::finish`]).
    pub async fn resolve(
        &self,
        prepared: Prepared,
        unwritten: &[Arc<HashSet<String>>],
    ) -> Resolved {
        let Prepared { mut answers, valid } = prepared;
        let seen = futures::future::join_all(valid.iter().map(|one| async move {
            for command_id in &one.command_ids {
                if let Some(record) = self.store.find_command(command_id).await? {
                    return Ok(Some(record.stream_id));
                }
            }
            Ok::<_, StoreError>(None)
        }))
        .await;
        let mut fresh = Vec::with_capacity(valid.len());
        for (one, seen) in valid.into_iter().zip(seen) {
            match seen {
                Ok(Some(id)) => answers[one.index] = Some(self.existing(id).await),
                Ok(None) => fresh.push(one),
                Err(e) => answers[one.index] = Some(Err(e.into())),
            }
        }

        let mut resolved = Resolved {
            answers,
            appends: Vec::with_capacity(fresh.len()),
            appended: Vec::with_capacity(fresh.len()),
            same_as: Vec::new(),
            after: Vec::new(),
            new_subjects: HashMap::new(),
        };
        let blind: Vec<&[String]> = fresh.iter().map(|one| one.indexes.as_slice()).collect();
        // One lookup for all; should it fail, each submission looks up (and fails) alone,
        // unless the database is unreachable: then all fail at once rather than each after
        // its own connection time-out.
        let open = match self.open_requests(&blind).await {
            Ok(open) => Some(open),
            Err(RequestError::Store(error)) if error.is_unavailable() => {
                for one in fresh {
                    resolved.answers[one.index] = Some(Err(error.for_another().into()));
                }
                return resolved;
            }
            Err(_) => None,
        };
        for one in fresh {
            let index = one.index;
            let earlier = match &open {
                Some(open) => one.indexes.iter().find_map(|i| open.get(i)).cloned(),
                None => match self.open_requests(&[one.indexes.as_slice()]).await {
                    Ok(open) => open.into_values().next(),
                    Err(e) => {
                        resolved.answers[index] = Some(Err(e));
                        continue;
                    }
                },
            };
            if let Some(loaded) = earlier {
                resolved.answers[index] = Some(Ok(Submitted {
                    loaded,
                    created: false,
                }));
                continue;
            }
            if let Some(i) = one
                .indexes
                .iter()
                .find(|i| unwritten.iter().any(|set| set.contains(*i)))
            {
                resolved.after.push((index, i.clone()));
                continue;
            }
            if let Some(&earlier) = one
                .indexes
                .iter()
                .find_map(|i| resolved.new_subjects.get(i))
            {
                resolved.same_as.push((index, earlier));
                continue;
            }
            match one.append {
                Ok(append) => {
                    for i in one.indexes {
                        resolved.new_subjects.insert(i, index);
                    }
                    resolved.appends.push(append);
                    resolved.appended.push(index);
                }
                Err(e) => resolved.answers[index] = Some(Err(e)),
            }
        }
        resolved
    }

    /// The second half of [`Self::record`]: appends what [`Self::resolve`] left to append, in
    /// one transaction (or, alone, through the group commit).
    pub async fn write(&self, resolved: Resolved) -> Written {
        let Resolved {
            mut answers,
            mut appends,
            appended,
            same_as,
            after,
            new_subjects,
        } = resolved;
        let results = if appends.len() == 1 {
            // Alone: through the group commit, with whatever else is being appended now.
            let append = appends.pop().map(|a| self.store.append_one(a));
            match append {
                Some(append) => vec![append.await],
                None => Vec::new(),
            }
        } else {
            self.store.append_batch(appends).await
        };
        for (index, result) in appended.into_iter().zip(results) {
            answers[index] = Some(match result {
                Ok(Appended::Written(events)) => {
                    crate::telemetry::metrics::events_appended(&events);
                    loaded(events).map(|loaded| Submitted {
                        loaded,
                        created: true,
                    })
                }
                Ok(Appended::Duplicate(record)) => self.existing(record.stream_id).await,
                Err(e) => Err(e.into()),
            });
        }
        for (index, earlier) in same_as {
            answers[index] = Some(match &answers[earlier] {
                Some(Ok(first)) => Ok(Submitted {
                    loaded: first.loaded.clone(),
                    created: false,
                }),
                _ => Err(RequestError::Contended),
            });
        }
        Written {
            answers,
            after,
            new_subjects,
        }
    }

    /// The open requests that any of these blind indexes point to, by blind index.
    async fn open_requests(
        &self,
        blind: &[&[String]],
    ) -> Result<HashMap<String, LoadedRequest>, RequestError> {
        let mut open = HashMap::new();
        let Some(sealing) = &self.sealing else {
            return Ok(open);
        };
        let all: Vec<String> = blind.iter().flat_map(|b| b.iter()).cloned().collect();
        if all.is_empty() {
            return Ok(open);
        }
        let mut requests: HashMap<RequestId, Option<LoadedRequest>> = HashMap::new();
        for (index, id) in sealing.finder.find(all).await? {
            if let std::collections::hash_map::Entry::Vacant(entry) = requests.entry(id) {
                let loaded = self
                    .load(id)
                    .await?
                    .filter(|l| !l.request.status().is_closed());
                entry.insert(loaded);
            }
            if let Some(Some(loaded)) = requests.get(&id) {
                open.entry(index).or_insert_with(|| loaded.clone());
            }
        }
        Ok(open)
    }

    /// The append that records a new request: its `Received` event, its subject sealed under a
    /// new data key (written with the event).
    fn receive(
        &self,
        template: Receive,
        command_ids: Vec<String>,
        indexes: &[String],
        actor: &str,
    ) -> Result<Append, RequestError> {
        let id = RequestId::from_uuid(Uuid::now_v7());
        let mut receive = Receive {
            request_id: id,
            received_at: crate::store::now_micros(),
            ..template
        };
        let mut key = None;
        if let (Some(sealing), SubjectRecord::Plain(subject)) = (&self.sealing, &receive.subject) {
            let data_key = DataKey::generate();
            key = Some(NewKey {
                wrapped_key: sealing.master.wrap(id, &data_key),
                indexes: indexes.to_vec(),
            });
            receive.subject = SubjectRecord::Sealed(data_key.seal(id, subject));
        }
        let events =
            DeletionRequest::handle_command(&RequestState::NotReceived, Command::Receive(receive))?;
        let mut metadata = EventMetadata::new(actor);
        metadata.command_id = command_ids.into_iter().next();
        Ok(Append {
            stream_id: id,
            expected_version: 0,
            events,
            metadata,
            key,
        })
    }

    async fn existing(&self, id: RequestId) -> Result<Submitted, RequestError> {
        let loaded = self.load(id).await?.ok_or(RequestError::NotFound(id))?;
        Ok(Submitted {
            loaded,
            created: false,
        })
    }

    fn validate(&self, submission: Submission) -> Result<Receive, InvalidInput> {
        let subject = Subject::parse(submission.subject)?;
        let jurisdiction = match submission.jurisdiction {
            Some(name) => Jurisdiction::parse(name)?,
            None => self.config.policy.default_jurisdiction.clone(),
        };
        let policy = self.config.request_policy(&jurisdiction).ok_or_else(|| {
            let known: Vec<_> = self
                .config
                .jurisdictions
                .keys()
                .map(Jurisdiction::as_str)
                .collect();
            InvalidInput::new(
                "jurisdiction",
                format!(
                    "{jurisdiction} is not configured; use one of {}",
                    known.join(", ")
                ),
            )
        })?;
        let source = text_field("source", submission.source, MAX_SOURCE_LEN)?;
        let reason = text_field("reason", submission.reason, MAX_REASON_LEN)?;
        let external_id = text_field("external_id", submission.external_id, MAX_EXTERNAL_ID_LEN)?;
        if submission.tags.len() > MAX_TAGS {
            return Err(InvalidInput::new(
                "tags",
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        let mut tags = Vec::with_capacity(submission.tags.len());
        for (i, tag) in submission.tags.into_iter().enumerate() {
            let field = format!("tags[{i}]");
            let tag = text_field(&field, Some(tag), MAX_TAG_LEN)?
                .ok_or_else(|| InvalidInput::new(&field, "must not be empty"))?;
            tags.push(tag);
        }
        Ok(Receive {
            request_id: RequestId::from_uuid(Uuid::nil()),
            subject: SubjectRecord::Plain(subject),
            jurisdiction,
            source,
            reason,
            external_id,
            tags,
            received_at: Utc::now(),
            policy,
        })
    }

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

    /// The subjects of several requests, their data keys read with one query.
    pub async fn subjects_of(
        &self,
        requests: &[&Request],
    ) -> Result<HashMap<RequestId, SubjectAccess>, RequestError> {
        let sealed: Vec<RequestId> = requests
            .iter()
            .filter(|r| matches!(r.subject, SubjectRecord::Sealed(_)))
            .map(|r| r.id)
            .collect();
        let mut keys: HashMap<RequestId, String> = match &self.sealing {
            Some(sealing) if !sealed.is_empty() => sealing
                .keys
                .wrapped_keys(&sealed)
                .await?
                .into_iter()
                .collect(),
            _ => HashMap::new(),
        };
        let mut subjects = HashMap::with_capacity(requests.len());
        for request in requests {
            let wrapped = self.sealing.as_ref().map(|_| keys.remove(&request.id));
            subjects.insert(request.id, self.open_learning(request, wrapped).await?);
        }
        Ok(subjects)
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
    /// to length ([`crate::cleaners::redact`]). Every door that records a result reported
    /// by a cleaner or a person goes through here.
    pub async fn execute_result(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        make: impl Fn(&Request) -> Command + Send + Sync,
    ) -> Result<LoadedRequest, RequestError> {
        use crate::cleaners::redact::scrub_result;
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
}

fn finish(
    answers: Vec<Option<Result<Submitted, RequestError>>>,
) -> Vec<Result<Submitted, RequestError>> {
    answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(RequestError::Contended)))
        .collect()
}

/// Folds a stream into its request.
pub fn loaded(events: Vec<RecordedEvent>) -> Result<LoadedRequest, RequestError> {
    let mut state = RequestState::NotReceived;
    for event in &events {
        state = DeletionRequest::apply_event(state, event.event()?);
    }
    match state {
        RequestState::Received(request) => Ok(LoadedRequest {
            request: *request,
            events,
        }),
        RequestState::NotReceived => {
            Err(StoreError::Corrupt("a stream without a Received event".to_owned()).into())
        }
    }
}

/// A trimmed, bounded, printable optional text; empty means absent.
pub fn text_field(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, InvalidInput> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    // Characters, not bytes: the limit JSON Schema's `maxLength` and a pattern can state.
    if value.chars().count() > max {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(Some(value.to_owned()))
}
