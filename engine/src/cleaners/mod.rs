//! Talking to cleaners: the HTTP protocol of `CONTRACT.md` (`http`), its signature
//! (`signature`).

pub mod http;
pub mod signature;
