//! `kind = "redis"` against a real Redis server (`LETHE_TEST_REDIS_URL`; scripts/test.sh sets
//! it with scripts/services/redis.sh): the cleaner called directly (`cleaner.rs`: what an
//! attempt, a batch and a dry run delete and leave, failures), and through a running engine
//! (`lifecycle.rs`). Every test works under a key prefix of its own and removes it at the end,
//! so tests in parallel and other users of the server never meet.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/many.rs"]
mod many;

mod batch;
mod cleaner;
mod keyspace;
mod lifecycle;

/// The server's URL, or `None` (said loudly) when `LETHE_TEST_REDIS_URL` is unset: the only
/// case in which these tests do not run.
pub fn redis_url() -> Option<String> {
    match std::env::var("LETHE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: LETHE_TEST_REDIS_URL is not set; scripts/services/redis.sh prints \
                 a Redis URL (scripts/test.sh sets it)"
            );
            None
        }
    }
}
