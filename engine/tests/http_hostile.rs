//! A hostile client against a real server bound to 127.0.0.1, over raw TCP: every route of the
//! OpenAPI document (so a new route is covered without touching this file) gets broken JSON,
//! trailing data, NUL and invalid UTF-8 in the path, query, headers and body, huge and deeply
//! nested bodies, wrong methods and content types; then malformed HTTP. Whatever arrives:
//! never a 5xx, every 4xx is `application/problem+json` whose `status` is the HTTP status
//! (except what ADR 13 documents: hyper's own answers to bytes that are not HTTP, and the
//! dashboard's HTML pages), and the server still answers afterwards. The cases are generated
//! from a fixed seed, so every run sends the same bytes.

#[path = "hostile/raw.rs"]
mod raw;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use lethe_engine::app::{Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use raw::{exchange, request, Reply};
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
    let mut text = String::from(
        "[api]\nbody_idle_timeout = \"1s\"\n[[cleaners]]\nname = \"billing\"\nkind = \"manual\"\n",
    );
    if tokens {
        text.push_str(&format!(
            "[[tokens]]\nname = \"all\"\nsha256 = \"{}\"\nscopes = [\"requests:write\", \
             \"requests:read\", \"audit:read\", \"admin\", \"cleaner:billing\"]\n",
            token_hash(TOKEN)
        ));
    }
    Config::parse(&text).unwrap()
}

async fn start(store: &TestStore, tokens: bool) -> Server {
    let database = store.database();
    let key = MasterKey::from_bytes([9; 32]);
    let requests = Requests::new(database.events.clone(), Arc::new(config(tokens)))
        .with_read_models(database.read_models.clone())
        .with_sealing(key.clone(), database.keys.clone());
    let submission = Submission {
        subject: [("user_id".to_owned(), "hostile-1".to_owned())].into(),
        ..Submission::default()
    };
    let id = requests
        .submit(submission, None, "test")
        .await
        .unwrap()
        .loaded
        .request
        .id
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

fn cases(server: &Server, auth: Auth, rng: &mut StdRng) -> Vec<Case> {
    let token = format!("Bearer {TOKEN}");
    let auth_header: Vec<(&str, &[u8])> = match auth {
        Auth::Token => vec![("Authorization", token.as_bytes())],
        Auth::Off | Auth::Missing => Vec::new(),
    };
    let mut cases = Vec::new();
    let mut push = |name: String,
                    method: &str,
                    target: Vec<u8>,
                    headers: Vec<(&str, &[u8])>,
                    body: &[u8],
                    expect| {
        let mut all = auth_header.clone();
        all.extend(headers);
        cases.push(Case {
            name: format!("{method} {name}"),
            bytes: request(method, &target, &all, body),
            head: method == "HEAD",
            expect,
        });
    };
    let routes = routes();
    for (method, template) in &routes {
        let path = template
            .replace("{id}", &server.id)
            .replace("{name}", "billing");
        let target = |suffix: &str| format!("{path}{suffix}").into_bytes();
        // Bodies, each with a content type drawn from the seed; a route that reads no body
        // gets a sample of them.
        let reads_body = method != "GET";
        for (name, body) in bodies(rng) {
            if !reads_body && !rng.random_ratio(1, 4) {
                continue;
            }
            let content_type = CONTENT_TYPES[rng.random_range(0..CONTENT_TYPES.len())];
            push(
                format!("{path} body {name}"),
                method,
                target(""),
                vec![("Content-Type", content_type)],
                &body,
                Expect::Problem,
            );
        }
        // Methods the path does not serve.
        for other in METHODS {
            let served = routes.iter().any(|(m, t)| m == other && t == template)
                || (other == "GET" && template == "/v1/requests");
            if !served {
                push(
                    format!("{path} wrong method"),
                    other,
                    target(""),
                    vec![],
                    b"",
                    Expect::Status(405),
                );
            }
        }
        // The query string: NUL, overlong and invalid UTF-8, in values and names.
        for (name, query) in [
            ("nul value", "?jurisdiction=%00"),
            ("overlong value", "?jurisdiction=%C0%80"),
            ("invalid name", "?%FF=1"),
            ("nul token", "?token=a%00b"),
            ("control", "?status=%1B%5B2J"),
            ("nul cursor", "?cursor=%00&limit=1"),
        ] {
            push(
                format!("{path} query {name}"),
                method,
                target(query),
                vec![],
                b"",
                Expect::Status(400),
            );
        }
        push(
            format!("{path} raw byte in query"),
            method,
            target("?a=\u{e9}"),
            vec![],
            b"",
            Expect::Problem,
        );
        push(
            format!("{path} long query"),
            method,
            target(&format!("?a={}", "b".repeat(9000))),
            vec![],
            b"",
            Expect::Status(414),
        );
        // Headers.
        let many: Vec<(String, Vec<u8>)> = (0..150)
            .map(|i| (format!("X-Many-{i}"), b"1".to_vec()))
            .collect();
        let many_refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        push(
            format!("{path} 150 headers"),
            method,
            target(""),
            many_refs,
            b"",
            Expect::Status(431),
        );
        let big = vec![b'a'; 40 * 1024];
        push(
            format!("{path} 40 KiB header"),
            method,
            target(""),
            vec![("X-Big", &big)],
            b"",
            Expect::Status(431),
        );
        push(
            format!("{path} obs-text idempotency key"),
            method,
            target(""),
            vec![("Idempotency-Key", b"\xff\xfe")],
            b"",
            Expect::Problem,
        );
        push(
            format!("{path} long idempotency key"),
            method,
            target(""),
            vec![("Idempotency-Key", &[b'k'; 300])],
            b"",
            Expect::Problem,
        );
        push(
            format!("{path} obs-text token"),
            method,
            target(""),
            vec![("Authorization", b"Bearer \xff")],
            b"",
            Expect::Problem,
        );
        push(
            format!("{path} basic auth"),
            method,
            target(""),
            vec![("Authorization", b"Basic eDp5")],
            b"",
            Expect::Problem,
        );
        push(
            format!("{path} nul in a header"),
            method,
            target(""),
            vec![("X-Nul", b"a\0b")],
            b"",
            Expect::Unparseable,
        );
        push(
            format!("{path} bad last-event-id"),
            method,
            target(""),
            vec![("Last-Event-ID", b"\xff")],
            b"",
            Expect::Problem,
        );
        push(
            format!("{path} huge declared length"),
            method,
            target(""),
            vec![("Content-Length", b"10000000000")],
            b"",
            Expect::Problem,
        );
        push(
            format!("{path} expect continue"),
            method,
            target(""),
            vec![("Expect", b"100-continue")],
            b"{}",
            Expect::Problem,
        );
        push(
            format!("{path} bad chunked"),
            method,
            target(""),
            vec![("Transfer-Encoding", b"chunked")],
            b"zz\r\n{}\r\n0\r\n\r\n",
            Expect::Problem,
        );
        // The path's parameters: NUL, overlong UTF-8, too long, dot segments.
        if template.contains('{') {
            for (name, value) in [
                ("nul", "%00"),
                ("overlong", "%C0%80"),
                ("long", &"9".repeat(400)),
                ("dots", "%2e%2e"),
                ("emoji", "%F0%9F%92%A5"),
            ] {
                let bad = template.replace("{id}", value).replace("{name}", value);
                push(
                    format!("{bad} path {name}"),
                    method,
                    bad.clone().into_bytes(),
                    vec![],
                    b"",
                    Expect::Problem,
                );
            }
        }
        push(
            format!("{path} HEAD"),
            "HEAD",
            target(""),
            vec![],
            b"",
            Expect::Problem,
        );
    }
    // Routes that do not exist.
    for target in [
        "/",
        "/v2/requests",
        "/v1/requests/",
        "/v1/requests:bulk/x",
        "/.env",
        "/v1/requests/a/b/c/d",
    ] {
        push(
            format!("{target} unknown"),
            "GET",
            target.as_bytes().to_vec(),
            vec![],
            b"",
            Expect::Status(404),
        );
    }
    cases
}

/// Bytes that are not HTTP/1.1 at all.
fn malformed() -> Vec<Case> {
    let unparseable: [&[u8]; 18] = [
        b"GET /healthz?a=\xff HTTP/1.1\r\n\r\n",
        b"GET /v1/requests/\xc0\x80 HTTP/1.1\r\n\r\n",
        b"garbage\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n: empty\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n Host: folded\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"G\0T /healthz HTTP/1.1\r\n\r\n",
        b"GET /he\x7flthz HTTP/1.1\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\n\r\n",
    ];
    let mut cases: Vec<Case> = unparseable
        .iter()
        .map(|bytes| Case {
            name: format!("malformed {:?}", String::from_utf8_lossy(bytes)),
            bytes: bytes.to_vec(),
            head: false,
            expect: Expect::Unparseable,
        })
        .collect();
    let mut huge_header = b"GET /healthz HTTP/1.1\r\nX-Huge: ".to_vec();
    huge_header.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    huge_header.extend_from_slice(b"\r\n\r\n");
    cases.push(Case {
        name: "malformed 1 MiB header".to_owned(),
        bytes: huge_header,
        head: false,
        expect: Expect::Unparseable,
    });
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70 * 1024));
    cases.push(Case {
        name: "malformed 70 KiB target".to_owned(),
        bytes: long_target.into_bytes(),
        head: false,
        expect: Expect::Unparseable,
    });
    // Parsed by hyper, so Lethe's to answer.
    for (text, status) in [
        ("GET /healthz HTTP/1.1\n\n", 200),
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        ("get /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 405),
        (
            "GET http://example.com/healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
            200,
        ),
        ("GET * HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
        ("OPTIONS * HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
        (
            "GET /healthz?a=%C0 HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /healthz?a=%G0 HTTP/1.1\r\nConnection: close\r\n\r\n",
            200,
        ),
    ] {
        cases.push(Case {
            name: format!("parsed {text:?}"),
            bytes: text.as_bytes().to_vec(),
            head: false,
            expect: Expect::Status(status),
        });
    }
    cases
}

async fn sweep(store: TestStore, auth: Auth) {
    let server = start(&store, auth != Auth::Off).await;
    let mut rng = StdRng::seed_from_u64(0x1e7e);
    let mut all = cases(&server, auth, &mut rng);
    all.extend(malformed());
    assert!(all.len() >= 500, "only {} cases", all.len());
    // A few connections at a time; each case's verdict is its own, so the order of answers
    // does not matter.
    let address = server.address;
    let failures: Vec<String> = futures::stream::iter(&all)
        .map(|case| async move {
            let reply = exchange(address, &case.bytes, case.head).await;
            verdict(case, reply.as_ref(), auth)
                .err()
                .map(|wrong| format!("{}: {wrong}", case.name))
        })
        .buffer_unordered(8)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {} cases went wrong ({auth:?}):\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    // Still serving, and still right.
    let reply = exchange(
        server.address,
        &request("GET", b"/healthz", &[], b""),
        false,
    )
    .await
    .expect("an answer after the sweep");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"ok");
}

async fn hostile_clients_without_auth(store: TestStore) {
    sweep(store, Auth::Off).await;
}

async fn hostile_clients_with_a_token(store: TestStore) {
    sweep(store, Auth::Token).await;
}

async fn hostile_clients_without_a_token(store: TestStore) {
    sweep(store, Auth::Missing).await;
}

macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::support::postgres().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::support::sqlite().await).await;
                }
            )*
        }
    };
}

on_both!(
    hostile_clients_without_auth,
    hostile_clients_with_a_token,
    hostile_clients_without_a_token,
);
