//! What of a cleaner's answer may be recorded: the rule lives with the domain
//! ([`lethe_domain::redact`]), since every door that records a result applies it, the
//! application service as much as the cleaners.

pub use lethe_domain::redact::{redact, scrub_result, MAX_DETAIL_CHARS, REDACTED};
