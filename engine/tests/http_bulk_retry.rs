//! Bulk intake against stalls and retries, on a real server and both backends: an upload that
//! stops sending is answered for every line it sent, then cut short with a last line saying
//! so; an upload retried with the same `Idempotency-Key` answers each line with the request
//! its first upload made.

#[path = "hostile/raw.rs"]
mod raw;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use serde_json::Value;
use support::TestStore;

async fn serve(store: &TestStore, config: &str) -> SocketAddr {
    let (events, _) = store.stores();
    let app = router(AppState {
        requests: Requests::new(events, Arc::new(Config::parse(config).unwrap())),
        key: MasterKey::from_bytes([5; 32]),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(lethe_engine::http::serve(
        listener,
        app,
        std::future::pending(),
    ));
    address
}

fn results(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn streams(store: &TestStore) -> usize {
    let (events, _) = store.stores();
    events.list_streams(None, 1000).await.unwrap().len()
}

async fn a_stalled_upload_is_answered_then_cut_short(store: TestStore) {
    let address = serve(&store, "[api]\nbody_idle_timeout = \"300ms\"\n").await;
    // Two whole lines and the start of a third, then nothing: the connection stays open.
    let sent = "{\"subject\":{\"user_id\":\"s1\"}}\n{\"subject\":{}}\n\n\
                {\"subject\":{\"user_id\":\"s2\"}}\n{\"subject\":{\"user";
    let mut bytes =
        b"POST /v1/requests:bulk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(format!("{:x}\r\n{sent}\r\n", sent.len()).as_bytes());
    // The answer ends by itself (within the raw client's deadline) although the body never does.
    let reply = raw::exchange(address, &bytes, false)
        .await
        .expect("an answer");
    assert_eq!(reply.status, 200);
    let lines = results(&reply.body);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[0]["created"], true);
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["error"]["field"], "subject");
    assert_eq!(lines[2]["line"], 4);
    assert_eq!(lines[2]["created"], true);
    let last = &lines[3];
    assert!(
        last.get("line").is_none(),
        "the last line is about the body"
    );
    assert_eq!(last["error"]["type"], "urn:lethe:problem:body-stalled");
    assert_eq!(last["error"]["status"], 408);
    assert!(last["error"]["detail"]
        .as_str()
        .unwrap()
        .contains("unfinished line"));
    assert_eq!(
        streams(&store).await,
        2,
        "the unfinished line was not taken"
    );
}

async fn a_retried_upload_answers_each_line_with_its_first_request(store: TestStore) {
    let address = serve(&store, "").await;
    let base = format!("http://{address}");
    let body = "{\"subject\":{\"user_id\":\"r1\"}}\n{\"subject\":{}}\n{\"subject\":{\"user_id\":\"r2\"}}\n";
    let upload = |key: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/v1/requests:bulk"))
            .body(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            results(&response.bytes().await.unwrap())
        }
    };
    let first = upload(Some("batch-1")).await;
    assert_eq!(first[0]["created"], true);
    assert_eq!(first[1]["error"]["field"], "subject");
    assert_eq!(first[2]["created"], true);
    assert_eq!(streams(&store).await, 2);

    let retry = upload(Some("batch-1")).await;
    for line in [0, 2] {
        assert_eq!(retry[line]["id"], first[line]["id"], "line {}", line + 1);
        assert_eq!(retry[line]["created"], false);
    }
    assert_eq!(
        retry[1]["error"]["field"], "subject",
        "a bad line stays bad"
    );
    assert_eq!(streams(&store).await, 2, "nothing new for a retry");

    // Another key, or none, is another upload (this instance does not seal subjects, so the
    // same subjects make new requests).
    let other = upload(Some("batch-2")).await;
    assert_eq!(other[0]["created"], true);
    assert_ne!(other[0]["id"], first[0]["id"]);
    let unkeyed = upload(None).await;
    assert_eq!(unkeyed[2]["created"], true);
    assert_eq!(streams(&store).await, 6);

    // A single submission's key is its own: the same key does not reach a bulk line.
    let single = reqwest::Client::new()
        .post(format!("{base}/v1/requests"))
        .header("Idempotency-Key", "batch-1")
        .body("{\"subject\":{\"user_id\":\"r1\"}}")
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 201);

    // A bad key is refused before any line is read.
    let bad = reqwest::Client::new()
        .post(format!("{base}/v1/requests:bulk"))
        .header("Idempotency-Key", "k".repeat(300))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["field"], "Idempotency-Key");
    assert_eq!(streams(&store).await, 7);
}

support::backends!(
    a_stalled_upload_is_answered_then_cut_short,
    a_retried_upload_answers_each_line_with_its_first_request,
);
