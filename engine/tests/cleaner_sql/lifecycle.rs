//! Requests through an engine: submitted over HTTP, erased by the sql cleaner.
