//! Read models of Lethe: pure folds from events to the rows that dashboards and list views
//! read, and their SQL persistence.
//!
//! Nothing lives here yet. Until the read models land, every view is computed by folding the
//! request's own event stream with [`lethe_domain::DeletionRequest::fold`], which is exact but
//! answers only per-request questions.
