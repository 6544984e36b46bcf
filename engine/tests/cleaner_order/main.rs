//! What a cleaner's settings ask of the workflow before it calls: `identifiers` (a cleaner
//! receives only its own identifiers of the subject, and is not called for a subject with
//! none of them) and `after` (a cleaner is called for a request only once the cleaners it
//! names, when the request plans them, succeeded or were skipped), in-process on both
//! backends with real HTTP cleaners on 127.0.0.1.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/many.rs"]
mod many;

#[path = "../support/flow_service.rs"]
mod flow_service;

mod after;
mod identifiers;

use support::config::{Cleaner, TestConfig};

/// Requests due a second after they arrive, workers looking for work every 50 ms.
fn config() -> TestConfig {
    TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .lease("5s")
}

/// An HTTP cleaner answering within 2 s, retried quickly.
fn cleaner(name: &str, url: &str) -> Cleaner {
    Cleaner::http(name, url)
        .timeout("2s")
        .retry(6, "100ms", "400ms", 2.0)
}
