//! Intake: a submission validated, its subject sealed and looked up among the open requests,
//! and recorded as a new request (or answered with the request it repeats). One submission
//! ([`Requests::submit`]) or many at once ([`Requests::submit_many`], and the bulk pipeline
//! in [`super::bulk`] through [`Requests::prepare_with_ids`], [`Requests::resolve`] and
//! [`Requests::write`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use lethe_domain::command::Receive;
use lethe_domain::error::InvalidInput;
use lethe_domain::{
    Aggregate, Command, DeletionRequest, Jurisdiction, RequestId, RequestState, Subject,
    SubjectRecord,
};
use uuid::Uuid;

use super::{
    loaded, text_field, LoadedRequest, RequestError, Requests, MAX_EXTERNAL_ID_LEN, MAX_REASON_LEN,
    MAX_SOURCE_LEN, MAX_TAGS, MAX_TAG_LEN,
};
use crate::store::sealing::DataKey;
use crate::store::{Append, Appended, EventMetadata, NewKey, StoreError};

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
    pub(super) appends: Vec<Append>,
    /// Where each append's answer goes.
    appended: Vec<usize>,
    /// Submissions that repeat the subject of an earlier one among these: (this, that).
    same_as: Vec<(usize, usize)>,
    /// Submissions that repeat the subject of one resolved before these and not yet known to
    /// be written, with the blind index they share.
    after: Vec<(usize, String)>,
    /// The blind indexes of the subjects these appends record, each with its submission.
    new_subjects: HashMap<String, usize>,
    /// Each append's subject's suppression entries (hash, kind).
    pub(super) suppression: Vec<Vec<(String, String)>>,
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
    /// The subject's suppression entries (hash, kind), to flag it if it was erased before
    /// (none without `[suppression]`).
    suppression: Vec<(String, String)>,
    /// The append that records it as a new request.
    append: Result<Append, RequestError>,
}

#[derive(Debug)]
pub struct Submitted {
    pub loaded: LoadedRequest,
    /// False when an earlier submission with the same idempotency key or external id won.
    pub created: bool,
}

impl Requests {
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
                    let suppression = match &receive.subject {
                        SubjectRecord::Plain(subject) => {
                            self.suppression_hashes(subject.identifiers())
                        }
                        SubjectRecord::Sealed(_) => Vec::new(),
                    };
                    let append = self.receive(receive, command_ids.clone(), &indexes, actor);
                    valid.push(PreparedOne {
                        index,
                        command_ids,
                        indexes,
                        suppression,
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
            suppression: Vec::new(),
        };
        let blind: Vec<&[String]> = fresh.iter().map(|one| one.indexes.as_slice()).collect();
        // One lookup for all; should it fail, each submission looks up (and fails) alone,
        // unless the database is unreachable: then all fail at once rather than each after
        // its own connection time-out.
        let open = match self.open_requests(&blind).await {
            Ok(open) => Some(open),
            Err(RequestError::Unavailable(message)) => {
                for one in fresh {
                    resolved.answers[one.index] =
                        Some(Err(RequestError::Unavailable(message.clone())));
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
                    resolved.suppression.push(one.suppression);
                }
                Err(e) => resolved.answers[index] = Some(Err(e)),
            }
        }
        self.flag_previously_erased(&mut resolved).await;
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
            ..
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
        let source = text_field("source", submission.source, MAX_SOURCE_LEN)?;
        let policy = self
            .config
            .request_policy(&jurisdiction, source.as_deref())
            .ok_or_else(|| {
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
}

fn finish(
    answers: Vec<Option<Result<Submitted, RequestError>>>,
) -> Vec<Result<Submitted, RequestError>> {
    answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(RequestError::Contended)))
        .collect()
}
