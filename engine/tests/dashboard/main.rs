//! The dashboard page (`GET /dashboard`) against an engine seeded with a known workload: twelve
//! requests with back-dated histories (completed in different months, one needing attention,
//! one on hold, one cancelled, one rejected, one past its legal deadline, two close to it).
//!
//! - Through the router, on both backends: every `data-stat` figure on the page equals
//!   `GET /v1/stats` (and the numbers shown agree with it), the lists are right and most urgent
//!   first; auth by bearer header, by `?token=` moved into a cookie, and by that cookie; 401 and
//!   403 as HTML pages; 503 without projections; open when no tokens are configured.
//! - The request list and request pages through the router: the list's filters and pages
//!   against `GET /v1/requests`, a bad filter named, a page's state, cleaners and timeline
//!   against the API; every action with the operator's actor, and the refusals (CSRF, scope,
//!   confirmation) changing nothing (`requests.rs`, `actions.rs`).
//! - Clicked in Chromium through chromedriver (`clicks.rs`): every action of the request page,
//!   typed, confirmed and submitted as a person would, its event read back from the timeline;
//!   screenshots of the list and of a request page.
//! - In a real browser: Debian's headless Chromium opens `/dashboard?token=...` on a live
//!   engine (following the redirect with the cookie), its DOM is checked against
//!   `GET /v1/stats`, and a screenshot is saved to `target/test-artifacts/dashboard.png`.

#[path = "../support/mod.rs"]
mod support;

mod actions;
mod annual;
mod browser;
mod clicks;
mod page;
mod requests;
mod router;
mod schedule;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use lethe_domain::command::Receive;
use lethe_domain::event::PlannedCleaner;
use lethe_domain::{
    Aggregate, CleanerName, Command, DeletionRequest, Jurisdiction, RequestId, RequestState,
    Subject,
};
use lethe_engine::app::{Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::root::Database;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{now_micros, EventMetadata};
use serde_json::Value;
use support::config::TestConfig;
use support::TestStore;
use tower::ServiceExt;

const READER: &str = "lethe_reader-token-0123";
const ADMIN: &str = "lethe_admin-token-4567";
const AUDITOR: &str = "lethe_auditor-token-89ab";
/// Signs in to the dashboard, sees timelines and may act: `requests:read`, `audit:read` and `admin`.
const OPERATOR: &str = "lethe_operator-token-cdef";
/// Signs in to the dashboard and may approve only.
const APPROVER: &str = "lethe_approver-token-0246";

fn tokens() -> TestConfig {
    TestConfig::new()
        .token("reader", &token_hash(READER), &["requests:read"])
        .token("admin", &token_hash(ADMIN), &["admin"])
        .token("auditor", &token_hash(AUDITOR), &["audit:read"])
        .token(
            "operator",
            &token_hash(OPERATOR),
            &["requests:read", "audit:read", "admin"],
        )
        .token(
            "approver",
            &token_hash(APPROVER),
            &["requests:read", "requests:approve"],
        )
}

fn config_with_tokens() -> Config {
    tokens().build()
}

use page::*;
use workload::*;
