//! Talking to cleaners: the HTTP protocol that docs/CLEANERS.md describes (`http`), its
//! signature (`signature`).

pub mod http;
pub mod signature;
