//! Group commit: appends from many tasks are gathered while the previous batch commits and
//! written together, in one transaction with multi-row statements, so that a busy engine pays
//! one commit (one `fsync`) per batch rather than per event. Each caller still gets its own
//! result: a conflict or a duplicate command affects only the append it belongs to.
//!
//! A batch never holds two appends to the same stream or with the same command id: the later
//! one waits for the next batch, so the database checks see the earlier one's outcome.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Append, Appended, StoreError};

/// Appends queued beyond this many make callers wait (back-pressure).
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// Writes one batch in one transaction and answers each append in order.
pub(crate) type WriteBatch = Arc<
    dyn Fn(Vec<Append>) -> Pin<Box<dyn Future<Output = Vec<Result<Appended, StoreError>>> + Send>>
        + Send
        + Sync,
>;

/// The queues in front of a store's batch writers.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    /// One queue per writer; a stream's appends always go to the same one.
    queues: Arc<[mpsc::Sender<(Append, Reply)>]>,
    write: WriteBatch,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("writers", &self.queues.len())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts `writers` tasks, each writing batches of at most `max_batch` appends. Must be
    /// called inside a Tokio runtime.
    ///
    /// Appends are spread over the writers by stream, so two appends to one stream never sit
    /// in two batches at once: a batch never waits for another batch's lock on a stream head
    /// (which would hold up every other append in it), and the second append to a stream is
    /// decided against the first one's outcome.
    pub(crate) fn start(writers: usize, max_batch: usize, write: WriteBatch) -> Self {
        let queues: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let (queue, receiver) = mpsc::channel(QUEUE);
                tokio::spawn(run_writer(receiver, max_batch.max(1), write.clone()));
                queue
            })
            .collect();
        Self {
            queues: queues.into(),
            write,
        }
    }

    /// Appends through the stream's queue. Should the writers be gone (their runtime shut
    /// down), the append is written directly.
    pub(crate) async fn append(&self, append: Append) -> Result<Appended, StoreError> {
        let shard =
            usize::try_from(append.stream_id.as_uuid().as_u128() % self.queues.len() as u128)
                .unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        match self.queues[shard].send((append, reply)).await {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                Err(StoreError::Corrupt(
                    "the append writer stopped before answering; the append may or may not \
                     have been written"
                        .to_owned(),
                ))
            }),
            Err(mpsc::error::SendError((append, _))) => write_one(&self.write, append).await,
        }
    }
}

/// Writes `appends` with `try_batch` (one transaction). If that transaction fails as a whole,
/// writes each append on its own, so that one bad append cannot fail the others; unless the
/// database is unreachable: then every append gets that answer at once. Trying them one by
/// one would make each caller wait out its own connection time-out in turn, and if the
/// connection went during the commit, the batch may have been written: an append written
/// again would come back as a conflict with itself.
pub(crate) async fn with_fallback<'a, F, Fut>(
    appends: &'a [Append],
    try_batch: F,
) -> Vec<Result<Appended, StoreError>>
where
    F: Fn(&'a [Append]) -> Fut,
    Fut: Future<Output = Result<Vec<Result<Appended, StoreError>>, StoreError>>,
{
    match try_batch(appends).await {
        Ok(results) => results,
        Err(error) if appends.len() == 1 => vec![Err(error)],
        Err(error) if error.is_unavailable() => {
            appends.iter().map(|_| Err(error.for_another())).collect()
        }
        Err(error) => {
            tracing::debug!(%error, size = appends.len(), "batch append failed; appending one by one");
            let mut results = Vec::with_capacity(appends.len());
            for append in appends {
                results.push(match try_batch(std::slice::from_ref(append)).await {
                    Ok(mut r) => r.pop().unwrap_or_else(|| {
                        Err(StoreError::Corrupt(
                            "an append returned no result".to_owned(),
                        ))
                    }),
                    Err(e) => Err(e),
                });
            }
            results
        }
    }
}

async fn write_one(write: &WriteBatch, append: Append) -> Result<Appended, StoreError> {
    write(vec![append]).await.pop().unwrap_or_else(|| {
        Err(StoreError::Corrupt(
            "the batch writer returned no result".to_owned(),
        ))
    })
}

async fn run_writer(
    mut receiver: mpsc::Receiver<(Append, Reply)>,
    max_batch: usize,
    write: WriteBatch,
) {
    let mut carried: Vec<(Append, Reply)> = Vec::new();
    loop {
        let mut pending = std::mem::take(&mut carried);
        if pending.is_empty() {
            match receiver.recv().await {
                Some(item) => pending.push(item),
                None => return,
            }
        }
        while pending.len() < max_batch {
            match receiver.try_recv() {
                Ok(item) => pending.push(item),
                Err(_) => break,
            }
        }
        let (batch, later) = split_distinct(pending);
        carried = later;
        let (appends, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let results = write(appends).await;
        let outage = results
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| e.is_unavailable()))
            .map(StoreError::for_another);
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away (a dropped request); nothing to tell it then.
            let _ = reply.send(result);
        }
        // Appends that queued while this batch found the database unreachable get that answer
        // now (none of them was tried, so none was written), rather than each batch after it
        // waiting out a connection time-out in turn.
        if let Some(outage) = outage {
            while let Ok((_, reply)) = receiver.try_recv() {
                let _ = reply.send(Err(outage.for_another()));
            }
            for (_, reply) in carried.drain(..) {
                let _ = reply.send(Err(outage.for_another()));
            }
        }
    }
}

/// Appends, each with what the caller needs back.
pub(crate) type Tagged<T> = Vec<(Append, T)>;

/// Splits `items` into those that can share a batch (distinct streams, distinct command ids)
/// and the rest, keeping the order within each.
pub(crate) fn split_distinct<T>(items: Vec<(Append, T)>) -> (Tagged<T>, Tagged<T>) {
    let mut streams = HashSet::with_capacity(items.len());
    let mut commands = HashSet::new();
    let mut now = Vec::with_capacity(items.len());
    let mut later = Vec::new();
    for item in items {
        let append = &item.0;
        let clash = streams.contains(&append.stream_id)
            || append
                .metadata
                .command_id
                .as_ref()
                .is_some_and(|id| commands.contains(id));
        if clash {
            later.push(item);
        } else {
            streams.insert(append.stream_id);
            if let Some(id) = &append.metadata.command_id {
                commands.insert(id.clone());
            }
            now.push(item);
        }
    }
    (now, later)
}

/// A round of at least this many appends per writer is split over `parallel` transactions.
const PARALLEL_FROM: usize = 64;

/// Writes `appends` in as few batches as [`split_distinct`] allows, answering in their order.
/// A large round is written as up to `parallel` transactions side by side (its appends touch
/// distinct streams and command ids, so they cannot wait on each other), so that more than
/// one database backend works on it.
pub(crate) async fn write_all(
    write: &WriteBatch,
    appends: Vec<Append>,
    max_batch: usize,
    parallel: usize,
) -> Vec<Result<Appended, StoreError>> {
    let mut results: Vec<Option<Result<Appended, StoreError>>> =
        (0..appends.len()).map(|_| None).collect();
    let mut rest: Vec<(Append, usize)> = appends.into_iter().zip(0..).collect();
    while !rest.is_empty() {
        let (mut now, mut later) = split_distinct(rest);
        if now.len() > max_batch {
            let tail = now.split_off(max_batch);
            later.splice(0..0, tail);
            later.sort_by_key(|(_, index)| *index);
        }
        rest = later;
        let parts = (now.len() / PARALLEL_FROM).clamp(1, parallel.max(1));
        let size = now.len().div_ceil(parts).max(1);
        let mut writes = Vec::with_capacity(parts);
        let mut now = now.into_iter().peekable();
        while now.peek().is_some() {
            let (batch, indexes): (Vec<_>, Vec<_>) = now.by_ref().take(size).unzip();
            writes.push(async move { (indexes, write(batch).await) });
        }
        for (indexes, written) in futures::future::join_all(writes).await {
            for (index, result) in indexes.into_iter().zip(written) {
                results[index] = Some(result);
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StoreError::Corrupt(
                    "the batch writer returned too few results".to_owned(),
                ))
            })
        })
        .collect()
}
