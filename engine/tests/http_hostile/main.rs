//! A hostile client against a real server bound to 127.0.0.1, over raw TCP: every route of the
//! OpenAPI document (so a new route is covered without touching this file) gets broken JSON,
//! trailing data, NUL and invalid UTF-8 in the path, query, headers and body, huge and deeply
//! nested bodies, wrong methods and content types; then malformed HTTP. Whatever arrives:
//! never a 5xx, every 4xx is `application/problem+json` whose `status` is the HTTP status
//! (except what ADR 13 documents: hyper's own answers to bytes that are not HTTP, and the
//! dashboard's HTML pages), and the server still answers afterwards. The cases are generated
//! from a fixed seed, so every run sends the same bytes.

#[path = "../hostile/raw.rs"]
mod raw;
#[path = "../support/mod.rs"]
mod support;

mod generated;
mod sweep;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lethe_engine::app::Requests;
use lethe_engine::config::{Config, ConfigDuration};
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use raw::{exchange, request, Reply};
use support::config::{Cleaner, TestConfig};
use support::TestStore;

/// A token holding every scope the routes ask for.
const TOKEN: &str = "hostile-all-scopes";

/// How a server is set up for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// No `[[tokens]]`: auth is off.
    Off,
    /// Tokens configured; the cases carry the all-scopes token.
    Token,
    /// Tokens configured; the cases carry none (so they must be refused before any body).
    Missing,
}

struct Server {
    address: SocketAddr,
    /// A request that exists.
    id: String,
}

fn config(tokens: bool) -> Config {
    let mut config = TestConfig::new()
        .body_idle_timeout("1s")
        .cleaner(Cleaner::manual("billing"));
    if tokens {
        config = config.token(
            "all",
            &token_hash(TOKEN),
            &[
                "requests:write",
                "requests:read",
                "audit:read",
                "admin",
                "cleaner:billing",
            ],
        );
    }
    let mut config = config.build();
    // The sweep is about hostile bytes, not about the database's latency: `/readyz` must say
    // ready, and a loaded CI machine's Postgres can take longer than the 500 ms default
    // (readiness under an outage is the outage tests' subject).
    config.database.ready_timeout = ConfigDuration(Duration::from_secs(30));
    config
}

async fn start(store: &TestStore, tokens: bool) -> Server {
    let database = store.database();
    let key = MasterKey::from_bytes([9; 32]);
    let requests = Requests::new(database.events.clone(), Arc::new(config(tokens)))
        .with_projections(database.projections.clone())
        .with_sealing(key.clone(), database.keys.clone());
    let subject = [("user_id".to_owned(), "hostile-1".to_owned())].into();
    let id = support::due::submitted(&requests, subject)
        .await
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(AppState { requests, key });
    tokio::spawn(lethe_engine::http::serve(
        listener,
        app,
        std::future::pending(),
    ));
    Server { address, id }
}

/// Every (method, path template) of the OpenAPI document.
fn routes() -> Vec<(String, String)> {
    let (_, openapi) = lethe_engine::http::api();
    let document = serde_json::to_value(&openapi).unwrap();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 20, "the document lists the API's routes");
    routes
}

/// What a case may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Anything but a 5xx; an error must be a problem.
    Problem,
    /// This status, as a problem.
    Status(u16),
    /// Bytes hyper cannot parse into a request: its own bare 400/414/431, or a closed
    /// connection (ADR 13).
    Unparseable,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    head: bool,
    expect: Expect,
}

/// Checks one answer; returns a description of what is wrong.
fn verdict(case: &Case, reply: Option<&Reply>, auth: Auth) -> Result<(), String> {
    let Some(reply) = reply else {
        return if case.expect == Expect::Unparseable {
            Ok(())
        } else {
            Err("the connection closed without an answer".to_owned())
        };
    };
    if reply.status >= 500 {
        return Err(format!("answered {}", reply.status));
    }
    if case.expect == Expect::Unparseable && reply.header("content-type").is_none() {
        // hyper's own answer: a bare status line, documented in ADR 13.
        return if [400, 414, 431].contains(&reply.status) && reply.body.is_empty() {
            Ok(())
        } else {
            Err(format!("a bare {} with a body", reply.status))
        };
    }
    if let Expect::Status(status) = case.expect {
        // Without a token, authentication comes first.
        let expected = if auth == Auth::Missing && ![404, 405, 414, 431].contains(&status) {
            reply.status
        } else {
            status
        };
        if reply.status != expected {
            return Err(format!("answered {}, expected {expected}", reply.status));
        }
    }
    if reply.status < 400 {
        return Ok(());
    }
    let content_type = reply.header("content-type").unwrap_or_default();
    let path = case_path(&case.bytes);
    if content_type.starts_with("text/html") && path.starts_with("/dashboard") {
        return Ok(()); // the dashboard's pages for people (ADR 13)
    }
    let path_only = path.split('?').next().unwrap_or_default();
    // The cancel link's page and its form's POST, for the subject in a browser (docs/API.md);
    // a JSON POST there is the API's and answers problems.
    let request_text = String::from_utf8_lossy(&case.bytes).to_ascii_lowercase();
    let form = request_text.contains("content-type: application/x-www-form-urlencoded");
    let cancel_page = (case.bytes.starts_with(b"GET ")
        || case.head
        || (case.bytes.starts_with(b"POST ") && form))
        && path_only.starts_with("/v1/requests/")
        && path_only.ends_with("/cancel");
    if content_type.starts_with("text/html") && cancel_page {
        return Ok(());
    }
    if content_type != "application/problem+json" {
        return Err(format!(
            "{} with content-type {content_type:?}: {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    if case.head {
        return Ok(());
    }
    let problem: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("{} problem is not JSON: {e}", reply.status))?;
    if problem["status"] != reply.status {
        return Err(format!(
            "problem status {} in a {}",
            problem["status"], reply.status
        ));
    }
    if !problem["type"].is_string() || !problem["title"].is_string() {
        return Err(format!("problem without type or title: {problem}"));
    }
    if reply.status == 405 && reply.header("allow").is_none() {
        return Err("405 without Allow".to_owned());
    }
    Ok(())
}

fn case_path(bytes: &[u8]) -> String {
    let line = bytes.split(|b| *b == b'\r').next().unwrap_or_default();
    let target = line.split(|b| *b == b' ').nth(1).unwrap_or_default();
    String::from_utf8_lossy(target).into_owned()
}

/// Bodies no route should take as valid (or, for the last ones, that a route may accept).
fn bodies(rng: &mut StdRng) -> Vec<(&'static str, Vec<u8>)> {
    let deep_array = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(3000), "}".repeat(3000));
    let huge = format!(r#"{{"subject":{{"user_id":"{}"}}}}"#, "x".repeat(80 * 1024));
    let random: Vec<u8> = (0..rng.random_range(1..512))
        .map(|_| rng.random())
        .collect();
    vec![
        ("empty", Vec::new()),
        ("open brace", b"{".to_vec()),
        ("garbage", b"garbage".to_vec()),
        (
            "trailing garbage",
            br#"{"subject":{"a":"b"}}garbage"#.to_vec(),
        ),
        (
            "two objects",
            br#"{"subject":{"a":"b"}}{"subject":{"a":"b"}}"#.to_vec(),
        ),
        ("array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("string", br#""x""#.to_vec()),
        ("deep array", deep_array.into_bytes()),
        ("deep object", deep_object.into_bytes()),
        ("huge", huge.into_bytes()),
        (
            "nul in a value",
            br#"{"subject":{"user_id":"a\u0000b"}}"#.to_vec(),
        ),
        ("raw nul", b"{\"subject\":{\"user_id\":\"a\0b\"}}".to_vec()),
        (
            "invalid utf-8",
            b"{\"subject\":{\"user_id\":\"\xc0\x80\xff\"}}".to_vec(),
        ),
        (
            "lone surrogate",
            br#"{"subject":{"user_id":"\ud800"}}"#.to_vec(),
        ),
        (
            "huge number",
            br#"{"attempt":1e999999,"outcome":"failed"}"#.to_vec(),
        ),
        ("nul reason", br#"{"reason":"a\u0000b"}"#.to_vec()),
        (
            "control by",
            br#"{"by":"1d\u0007","reason":"x\u001b[2J"}"#.to_vec(),
        ),
        (
            "nul detail",
            br#"{"attempt":1,"outcome":"failed","detail":"a\u0000b"}"#.to_vec(),
        ),
        ("random bytes", random),
        (
            "ndjson",
            b"{\"subject\":{\"x\":\"1\"}}\n\xff\n{}\n".to_vec(),
        ),
    ]
}

const CONTENT_TYPES: [&[u8]; 6] = [
    b"application/json",
    b"text/plain",
    b"application/x-www-form-urlencoded",
    b"application/json; charset=utf-16",
    b"\xff\xfe",
    b"multipart/form-data; boundary=x",
];

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FROB",
];

use generated::cases;
