//! Bulk intake: a stream of numbered lines, each a submission as the door encodes it, answered
//! chunk by chunk in input order. Lines are submitted in chunks of what has arrived (one
//! lookup and one transaction each), so a list of 100,000 requests never sits in memory. A
//! bad line fails alone; the lines around it are accepted.
//!
//! The door (`POST /v1/requests:bulk`) splits its body into lines and renders the answers;
//! everything between is here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures::{SinkExt, Stream, StreamExt};
use lethe_domain::{RequestId, RequestStatus};

use super::{LoadedRequest, Prepared, Recorded, RequestError, Requests, Submission, Written};

/// Lines submitted together, at most.
const CHUNK: usize = 512;
/// Chunks being written at once, at most.
const IN_FLIGHT: usize = 2;

/// The answer to one line.
#[derive(Debug)]
pub enum LineAnswer<E> {
    /// Recorded, or recognised as a repeat of the request it names (`created: false`).
    Accepted {
        id: RequestId,
        status: RequestStatus,
        created: bool,
    },
    /// The line is not a submission: the door's own error for it.
    Invalid(E),
    /// The submission was refused or could not be recorded.
    Failed(RequestError),
    /// No answer came back for the line (a bug in this process).
    Lost,
}

/// A chunk's answers: each line's number and its answer, in input order.
pub type Answers<E> = Vec<(usize, LineAnswer<E>)>;

impl Requests {
    /// Submits the lines of a bulk upload as they arrive and yields their answers, a chunk at
    /// a time, in input order. Each line is `(number, bytes)` or the door's error for a line
    /// it could not read; `parse` turns bytes into a submission (on the blocking pool, with
    /// the sealing). With an idempotency `key`, line N's command id is
    /// `bulk:<actor>:<key>:<N>`: a retried upload answers each line with the request its
    /// first upload made (`created: false`).
    ///
    /// The writes run as tasks of their own: a consumer that goes away stops the intake after
    /// the chunks already submitted, which are written in full.
    pub fn bulk<E, P>(
        &self,
        lines: impl Stream<Item = (usize, Result<Vec<u8>, E>)> + Send + 'static,
        parse: P,
        actor: String,
        key: Option<String>,
    ) -> impl Stream<Item = Answers<E>> + Send + 'static
    where
        E: Send + 'static,
        P: Fn(&[u8]) -> Result<Submission, E> + Send + Sync + 'static,
    {
        let parse = Arc::new(parse);
        let prepared = lines
            // Whatever lines have arrived, up to a chunk, are submitted together (one lookup,
            // one transaction); the next chunk is parsed, validated and sealed (CPU work, on
            // the blocking pool) meanwhile.
            .ready_chunks(CHUNK)
            .map({
                let requests = self.clone();
                move |chunk| {
                    let job = Job {
                        requests: requests.clone(),
                        parse: parse.clone(),
                        actor: actor.clone(),
                        key: key.clone(),
                    };
                    prepare(job, chunk)
                }
            })
            .buffered(2);
        record_in_order(self.clone(), prepared)
    }
}

/// What preparing a chunk needs.
struct Job<P> {
    requests: Requests,
    parse: Arc<P>,
    actor: String,
    key: Option<String>,
}

/// Records prepared chunks with up to [`IN_FLIGHT`] of them being written at once, and yields
/// each chunk's answers in input order.
///
/// A chunk is looked up while the chunks before it are still being written, so that the
/// database never waits for the lookup, nor the lookup for a commit. The lookup cannot see
/// requests not yet committed: a subject that one of the chunks in flight records is
/// recognised from that chunk's blind indexes, kept in memory until its write ends, and the
/// line gets that chunk's request. So a subject listed twice still makes one request.
fn record_in_order<E: Send + 'static>(
    requests: Requests,
    prepared: impl Stream<Item = PreparedChunk<E>> + Send + 'static,
) -> impl Stream<Item = Answers<E>> + Send + 'static {
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Answers<E>>(1);
    tokio::spawn(async move {
        let mut prepared = std::pin::pin!(prepared);
        let mut writing: VecDeque<(WriteTask<E>, Arc<HashSet<String>>)> = VecDeque::new();
        // The requests created by the chunks answered last, by the blind indexes of their
        // subjects: the chunks that were in flight while any chunk still to answer was looked
        // up.
        let mut recent: VecDeque<Created> = VecDeque::new();
        loop {
            let next = prepared.next().await;
            let done = next.is_none();
            let resolved = match next {
                Some(chunk) => {
                    let unwritten: Vec<_> = writing.iter().map(|(_, s)| s.clone()).collect();
                    let resolved = requests.resolve(chunk.prepared, &unwritten).await;
                    Some((chunk.answers, chunk.submitted_at, resolved))
                }
                None => None,
            };
            while writing.len() >= if done { 1 } else { IN_FLIGHT } {
                let Some((task, _)) = writing.pop_front() else {
                    break;
                };
                let answers = match task.await {
                    Ok(written) => answer(written, &mut recent),
                    Err(error) => std::panic::resume_unwind(error.into_panic()),
                };
                if sender.send(answers).await.is_err() {
                    return; // the consumer went away
                }
            }
            let Some((answers, submitted_at, resolved)) = resolved else {
                return; // every line read is answered
            };
            let subjects = Arc::new(resolved.new_subjects());
            let requests = requests.clone();
            let task = tokio::spawn(async move {
                WrittenChunk {
                    answers,
                    submitted_at,
                    written: requests.write(resolved).await,
                }
            });
            writing.push_back((task, subjects));
        }
    });
    receiver
}

/// A chunk parsed and prepared: each line's number and, for a line that did not parse, its
/// error.
struct PreparedChunk<E> {
    answers: Vec<(usize, Option<LineAnswer<E>>)>,
    /// Where each prepared submission's answer goes.
    submitted_at: Vec<usize>,
    prepared: Prepared,
}

/// Parses a chunk's lines and prepares its submissions ([`Requests::prepare_with_ids`]) on
/// the blocking pool.
async fn prepare<E, P>(job: Job<P>, chunk: Vec<(usize, Result<Vec<u8>, E>)>) -> PreparedChunk<E>
where
    E: Send + 'static,
    P: Fn(&[u8]) -> Result<Submission, E> + Send + Sync + 'static,
{
    let work = move || {
        let Job {
            requests,
            parse,
            actor,
            key,
        } = job;
        let mut answers: Vec<(usize, Option<LineAnswer<E>>)> = Vec::with_capacity(chunk.len());
        let mut submissions = Vec::with_capacity(chunk.len());
        let mut submitted_at = Vec::with_capacity(chunk.len());
        for (number, line) in chunk {
            match line.and_then(|bytes| parse(&bytes)) {
                Ok(submission) => {
                    submitted_at.push(answers.len());
                    answers.push((number, None));
                    let retry_id = key
                        .as_ref()
                        .map(|key| format!("bulk:{actor}:{key}:{number}"));
                    submissions.push((submission, retry_id));
                }
                Err(error) => answers.push((number, Some(LineAnswer::Invalid(error)))),
            }
        }
        let prepared = requests.prepare_with_ids(submissions, &actor);
        PreparedChunk {
            answers,
            submitted_at,
            prepared,
        }
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(chunk) => chunk,
        // Only a panic gets here; it is the process's bug, not the caller's.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// A chunk after its write: its lines' answers so far and what the write answered.
struct WrittenChunk<E> {
    answers: Vec<(usize, Option<LineAnswer<E>>)>,
    submitted_at: Vec<usize>,
    written: Written,
}

type WriteTask<E> = tokio::task::JoinHandle<WrittenChunk<E>>;

/// The requests a chunk created, by the blind indexes of their subjects.
struct Created {
    by_subject: HashMap<String, usize>,
    requests: Vec<Option<LoadedRequest>>,
}

impl Created {
    fn get(&self, blind_index: &str) -> Option<&LoadedRequest> {
        let at = *self.by_subject.get(blind_index)?;
        self.requests.get(at)?.as_ref()
    }
}

/// A written chunk's answers. What it created joins `recent`, which keeps that of the last
/// [`IN_FLIGHT`] chunks.
fn answer<E>(chunk: WrittenChunk<E>, recent: &mut VecDeque<Created>) -> Answers<E> {
    let WrittenChunk {
        mut answers,
        submitted_at,
        written,
    } = chunk;
    let Recorded {
        results,
        new_subjects,
    } = written.finish(|index| recent.iter().find_map(|chunk| chunk.get(index)));
    let mut requests = Vec::with_capacity(results.len());
    for (at, result) in submitted_at.into_iter().zip(results) {
        let (answer, created) = match result {
            Ok(submitted) => {
                let request = &submitted.loaded.request;
                let answer = LineAnswer::Accepted {
                    id: request.id,
                    status: request.status(),
                    created: submitted.created,
                };
                (answer, submitted.created.then_some(submitted.loaded))
            }
            Err(error) => (LineAnswer::Failed(error), None),
        };
        answers[at].1 = Some(answer);
        requests.push(created);
    }
    if recent.len() >= IN_FLIGHT {
        recent.pop_front();
    }
    recent.push_back(Created {
        by_subject: new_subjects,
        requests,
    });
    answers
        .into_iter()
        .map(|(number, answer)| (number, answer.unwrap_or(LineAnswer::Lost)))
        .collect()
}
