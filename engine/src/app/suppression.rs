//! Suppression after erasure (opt-in `[suppression]`, ADR 33): at `Completed` the subject's
//! identifiers are kept as keyed hashes (`Suppressed`, appended with `Completed` in one
//! commit); `check_suppressions` answers whether identifiers belong to an erased subject; a
//! new request for such a subject is accepted and flagged (`PreviouslyErased`); an
//! administrator lifts a suppression with a reason (`SuppressionLifted`).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::error::InvalidInput;
use lethe_domain::event::Event;
use lethe_domain::state::Request;
use lethe_domain::{Aggregate, Command, DeletionRequest, RequestId, Subject};
use serde::Serialize;

use super::subjects::SubjectAccess;
use super::{LoadedRequest, RequestError, Requests};
use crate::store::suppression::SuppressionKey;
use crate::store::EventMetadata;

/// The answer of `POST /v1/suppressions:check` and `lethe suppressions check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SuppressionCheck {
    /// Whether any of the identifiers belongs to an erased subject (an entry in force).
    pub suppressed: bool,
    /// The erased requests they match, in request order.
    pub matches: Vec<SuppressionMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SuppressionMatch {
    #[schema(value_type = String, format = Uuid)]
    pub request_id: RequestId,
    /// The day the request completed (UTC).
    pub erased_on: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Which of the identifiers asked about matched (their kinds, sorted).
    pub identifiers: Vec<String>,
}

/// The time a check is answered for (the doors' clock; tests pass their own time to
/// [`Requests::check_suppressions`]).
pub fn now() -> DateTime<Utc> {
    crate::store::now_micros()
}

impl Requests {
    /// The suppression key, when `[suppression]` is configured.
    fn suppression_key(&self) -> Option<SuppressionKey> {
        self.config
            .suppression
            .as_ref()
            .map(|s| SuppressionKey::from_bytes(s.key))
    }

    /// The subject's entries (hash, kind), when suppression is on and it can be read.
    pub(super) fn suppression_hashes(
        &self,
        identifiers: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        self.suppression_key()
            .map(|key| key.hashes(identifiers))
            .unwrap_or_default()
    }

    /// The `Suppress` command for a request whose `events` just completed it, when
    /// suppression is on: the subject's keyed hashes, expiring `expire_after` after `at`.
    pub(super) async fn suppress_on_completion(
        &self,
        request: &Request,
        events: &[Event],
    ) -> Result<Option<Command>, RequestError> {
        let Some(settings) = &self.config.suppression else {
            return Ok(None);
        };
        let Some(at) = events.iter().find_map(|e| match e {
            Event::Completed(completed) => Some(completed.at),
            _ => None,
        }) else {
            return Ok(None);
        };
        let SubjectAccess::Clear(identifiers) = self.subject_of(request).await? else {
            tracing::warn!(request_id = %request.id, "completed with a subject that cannot be read: not kept for suppression");
            return Ok(None);
        };
        let hashes = self
            .suppression_hashes(&identifiers)
            .into_iter()
            .map(|(hash, _)| hash)
            .collect();
        let expires_at = settings
            .expire_after
            .and_then(|d| chrono::TimeDelta::from_std(d.0).ok())
            .and_then(|d| at.checked_add_signed(d));
        Ok(Some(Command::Suppress {
            hashes,
            expires_at,
            at,
        }))
    }

    /// Whether these identifiers belong to an erased subject at `at`: the entries in force
    /// (not lifted, not expired) they match, by request.
    pub async fn check_suppressions(
        &self,
        identifiers: BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> Result<SuppressionCheck, RequestError> {
        if self.config.suppression.is_none() {
            return Err(RequestError::SuppressionOff);
        }
        let subject = Subject::parse(identifiers)?;
        let hashes = self.suppression_hashes(subject.identifiers());
        self.matching(&hashes, at).await
    }

    /// The entries in force at `at` among `hashes` (hash, kind), grouped by request.
    pub(super) async fn matching(
        &self,
        hashes: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<SuppressionCheck, RequestError> {
        let kinds: BTreeMap<&str, &str> = hashes
            .iter()
            .map(|(hash, kind)| (hash.as_str(), kind.as_str()))
            .collect();
        let wanted: Vec<String> = hashes.iter().map(|(hash, _)| hash.clone()).collect();
        let entries = self
            .projections_or_refuse()?
            .find_suppressions(&wanted, at)
            .await?;
        let mut matches: Vec<SuppressionMatch> = Vec::new();
        for entry in entries {
            let kind = kinds.get(entry.hash.as_str()).copied().unwrap_or_default();
            match matches.last_mut() {
                Some(last) if last.request_id == entry.request_id => {
                    last.identifiers.push(kind.to_owned());
                }
                _ => matches.push(SuppressionMatch {
                    request_id: entry.request_id,
                    erased_on: entry.suppressed_at.date_naive(),
                    expires_at: entry.expires_at,
                    identifiers: vec![kind.to_owned()],
                }),
            }
        }
        for m in &mut matches {
            m.identifiers.sort();
            m.identifiers.dedup();
        }
        Ok(SuppressionCheck {
            suppressed: !matches.is_empty(),
            matches,
        })
    }

    /// Lifts the request's suppression (an administrator's decision): `SuppressionLifted`
    /// with the reason, and its entries answer no more.
    pub async fn lift_suppression(
        &self,
        id: RequestId,
        reason: &str,
        metadata: &EventMetadata,
    ) -> Result<LoadedRequest, RequestError> {
        if self.config.suppression.is_none() {
            return Err(RequestError::SuppressionOff);
        }
        if reason.trim().is_empty() {
            return Err(
                InvalidInput::new("reason", "a reason is required to lift a suppression").into(),
            );
        }
        let at = crate::store::now_micros();
        let reason = reason.to_owned();
        self.execute(id, metadata, move |_| Command::LiftSuppression {
            at,
            reason: reason.clone(),
        })
        .await
    }
}

impl Requests {
    /// Flags each new request whose subject matches suppression entries in force: its append
    /// gets `PreviouslyErased` after `Received` (the request is accepted all the same). A
    /// failed lookup flags nothing and is logged: intake does not wait on suppression.
    pub(super) async fn flag_previously_erased(&self, resolved: &mut super::Resolved) {
        let Some(projections) = self.projections() else {
            return;
        };
        if resolved.suppression.iter().all(Vec::is_empty) {
            return;
        }
        let all: Vec<String> = resolved
            .suppression
            .iter()
            .flatten()
            .map(|(hash, _)| hash.clone())
            .collect();
        let at = crate::store::now_micros();
        let entries = match projections.find_suppressions(&all, at).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "suppression lookup at intake failed: requests not flagged");
                return;
            }
        };
        for (append, hashes) in resolved.appends.iter_mut().zip(&resolved.suppression) {
            let mut requests: Vec<RequestId> = entries
                .iter()
                .filter(|e| hashes.iter().any(|(hash, _)| *hash == e.hash))
                .map(|e| e.request_id)
                .collect();
            requests.sort();
            requests.dedup();
            if requests.is_empty() {
                continue;
            }
            let state = DeletionRequest::fold(append.events.clone());
            let command = Command::FlagPreviouslyErased { requests, at };
            if let Ok(events) = DeletionRequest::handle_command(&state, command) {
                append.events.extend(events);
            }
        }
    }
}
