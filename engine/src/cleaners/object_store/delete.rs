//! Bulk deletes: the objects go in chunks of at most 1,000 (one `DeleteObjects` call each,
//! through `ObjectStore::delete_stream`), and each object's result comes back in order, so
//! that a batch of requests learns, request by request, what went. An object already gone is
//! deleted all the same (S3 answers success for it).

use std::sync::Arc;

use futures::StreamExt as _;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::ObjectStore as _;

/// The most keys S3 takes in one `DeleteObjects` call.
const CHUNK: usize = 1_000;
/// How many delete calls are in flight at once.
const CALLS_IN_FLIGHT: usize = 4;

/// Why one object was not deleted: its own error, or that of the whole call it was in
/// (shared by every object of the call).
pub type DeleteError = Arc<object_store::Error>;

/// Deletes `paths`; one result per path, in order.
pub async fn delete_all(store: &AmazonS3, paths: Vec<Path>) -> Vec<Result<(), DeleteError>> {
    let chunks: Vec<Vec<Path>> = paths.chunks(CHUNK).map(<[Path]>::to_vec).collect();
    let results: Vec<Vec<Result<(), DeleteError>>> = futures::stream::iter(chunks)
        .map(|chunk| delete_chunk(store, chunk))
        .buffered(CALLS_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// One call. When the call itself fails, each of its objects fails with the call's error.
async fn delete_chunk(store: &AmazonS3, chunk: Vec<Path>) -> Vec<Result<(), DeleteError>> {
    let count = chunk.len();
    let locations = futures::stream::iter(chunk.into_iter().map(Ok)).boxed();
    let answers: Vec<Result<Path, object_store::Error>> =
        store.delete_stream(locations).collect().await;
    if answers.len() == count {
        return answers
            .into_iter()
            .map(|answer| answer.map(drop).map_err(Arc::new))
            .collect();
    }
    let error = Arc::new(
        answers
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| object_store::Error::Generic {
                store: "S3",
                source: "the delete call answered for too few objects".into(),
            }),
    );
    (0..count).map(|_| Err(Arc::clone(&error))).collect()
}
