//! Talking to cleaners: the HTTP protocol that docs/CLEANERS.md describes (`http`), its
//! signature (`signature`), and what of a cleaner's answer may be recorded (`redact`).

pub mod http;
pub mod redact;
pub mod signature;
