//! The subject's identifiers: sealed under a per-request data key (crypto-shredding), opened
//! for whoever may read them, and destroyed by shredding.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use lethe_domain::state::Request;
use lethe_domain::{Command, DomainError, RequestId, SubjectRecord};

use super::{LoadedRequest, RequestError, Requests};
use crate::store::keys::{FindBatcher, KeyStore};
use crate::store::master_key::MasterKey;
use crate::store::sealing::SealError;
use crate::store::{EventMetadata, StoreError};

#[derive(Debug, Clone)]
pub(super) struct Sealing {
    pub(super) master: MasterKey,
    pub(super) keys: Arc<dyn KeyStore>,
    /// The blind-index lookups of concurrent submissions, gathered into one query.
    pub(super) finder: Arc<FindBatcher>,
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

    /// [`Self::open_subject`], learning the key ring again from the database once when the
    /// data key is wrapped under a key this process does not hold (yet): another process
    /// may have begun a rotation.
    pub(super) async fn open_learning(
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

    /// The token that lets the data subject cancel request `id`, issued under `key`.
    pub fn cancel_token(&self, key: &MasterKey, id: RequestId) -> String {
        key.cancel_token(id)
    }

    /// Whether `token` lets the data subject cancel request `id`: issued under a key of
    /// `key`'s ring, or under one since rotated away whose digest is kept while the request
    /// is in its grace period (ADR 15).
    pub async fn cancel_token_matches(
        &self,
        key: &MasterKey,
        id: RequestId,
        token: &str,
    ) -> Result<bool, RequestError> {
        if key.verify_cancel_token(id, token) {
            return Ok(true);
        }
        self.previous_cancel_token(id, token).await
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
}
