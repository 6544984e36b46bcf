//! Queries on one request: its current state ([`Requests::show`]) and the auditor's replay
//! ([`Requests::history`]).

use lethe_domain::RequestId;

use super::subjects::SubjectAccess;
use super::views::{HistoryView, RequestView};
use super::{loaded, LoadedRequest, RequestError, Requests};
use crate::store::{StoreError, StreamHead};

impl Requests {
    /// The request's current state, without the subject's identifiers.
    pub async fn show(&self, id: RequestId) -> Result<RequestView, RequestError> {
        let loaded = self.load(id).await?.ok_or(RequestError::NotFound(id))?;
        self.view_with_progress(RequestView::new(&loaded), id).await
    }

    /// Every event of the request, the status after each (with `states`, the whole request
    /// after each), the verdict of its hash chain and its subject as far as this process can
    /// read it ([`Self::history_of`]).
    pub async fn history(&self, id: RequestId, states: bool) -> Result<HistoryView, RequestError> {
        let (head, loaded, subject) = self
            .history_of(id)
            .await?
            .ok_or(RequestError::NotFound(id))?;
        Ok(HistoryView::new(&loaded, head.as_ref(), subject, states)?)
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
}
