//! Bulk NDJSON intake: one result per non-blank line, in order, naming the line and field of
//! each error; valid lines are accepted even when others fail; the body is streamed.

mod support;

use std::sync::Arc;

use lethe_engine::app::{RequestError, Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::EventStore;
use support::TestStore;

async fn serve(store: &TestStore) -> (String, Arc<dyn EventStore>) {
    let (events, _) = store.stores();
    let app = router(AppState {
        requests: Requests::new(events.clone(), Arc::new(Config::default())),
        key: MasterKey::from_bytes([5; 32]),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, events)
}

fn results(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn mixed_lines_fail_alone(store: TestStore) {
    let (base, events) = serve(&store).await;
    let long = "x".repeat(70 * 1024);
    let body = [
        r#"{"subject":{"user_id":"1"}}"#.to_owned(),
        "not json".to_owned(),
        r#"{"subject":{}}"#.to_owned(),
        String::new(),
        r#"{"subject":{"user_id":"2"},"external_id":"crm-1"}"#.to_owned(),
        r#"{"subject":{"user_id":"2"},"external_id":"crm-1"}"#.to_owned(),
        format!(r#"{{"subject":{{"user_id":"{long}"}}}}"#),
        r#"{"subject":{"user_id":"3"},"colour":"red"}"#.to_owned(),
        r#"{"subject":{"email":"a@example.com"},"jurisdiction":"ccpa"}"#.to_owned(),
    ]
    .join("\n");
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/requests:bulk"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines = results(&response.text().await.unwrap());
    let numbers: Vec<u64> = lines.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 5, 6, 7, 8, 9],
        "one result per non-blank line, in order"
    );
    assert!(lines[0]["id"].is_string() && lines[0]["created"] == true);
    assert_eq!(lines[1]["error"]["field"], "body");
    assert_eq!(lines[2]["error"]["field"], "subject");
    assert_eq!(
        lines[4]["id"], lines[3]["id"],
        "the same external_id returns the first request"
    );
    assert_eq!(
        lines[3]["created"], true,
        "the first line with the id creates"
    );
    assert_eq!(lines[4]["created"], false);
    assert_eq!(lines[5]["error"]["field"], "line");
    assert_eq!(lines[6]["error"]["field"], "colour");
    assert_eq!(lines[7]["created"], true);
    let streams = events.list_streams(None, 100).await.unwrap().len();
    assert_eq!(
        streams, 3,
        "exactly the three valid, distinct submissions were accepted"
    );
}

async fn a_streamed_body_of_thousands_of_lines(store: TestStore) {
    const LINES: usize = 1000;
    let (base, events) = serve(&store).await;
    // The body is produced chunk by chunk, as a client streaming a large file would.
    let chunks = futures::stream::iter((0..LINES / 100).map(|chunk| {
        let text: String = (0..100)
            .map(|i| {
                format!(
                    "{{\"subject\":{{\"user_id\":\"bulk-{}\"}}}}\n",
                    chunk * 100 + i
                )
            })
            .collect();
        Ok::<_, std::io::Error>(text)
    }));
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/requests:bulk"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let lines = results(&response.text().await.unwrap());
    assert_eq!(lines.len(), LINES);
    assert!(lines
        .iter()
        .enumerate()
        .all(|(i, l)| l["line"] == i + 1 && l["created"] == true));
    let mut count = 0;
    let mut after = None;
    loop {
        let page = events.list_streams(after, 1000).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        count += page.len();
    }
    assert_eq!(count, LINES);
}

/// With sealing, a subject listed twice makes one request: whether the lines share a chunk
/// (submitted together) or not, and whether the identifiers match in full or in part.
async fn a_subject_listed_twice_makes_one_request(store: TestStore) {
    const FILLER: usize = 600;
    let database = store.database();
    let app = router(AppState {
        requests: Requests::new(database.events.clone(), Arc::new(Config::default()))
            .with_sealing(MasterKey::from_bytes([6; 32]), database.keys.clone()),
        key: MasterKey::from_bytes([5; 32]),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut body = vec![
        r#"{"subject":{"user_id":"twice"}}"#.to_owned(),
        r#"{"subject":{"user_id":"other"}}"#.to_owned(),
        r#"{"subject":{"user_id":"twice"}}"#.to_owned(),
        r#"{"subject":{"user_id":"twice","email":"t@example.com"}}"#.to_owned(),
    ];
    body.extend((0..FILLER).map(|i| format!(r#"{{"subject":{{"user_id":"filler-{i}"}}}}"#)));
    // More than a chunk later: submitted in another transaction, found by the lookup.
    body.push(r#"{"subject":{"user_id":"twice"}}"#.to_owned());
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/requests:bulk"))
        .body(body.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let lines = results(&response.text().await.unwrap());
    assert_eq!(lines.len(), FILLER + 5);
    let first = &lines[0]["id"];
    assert_eq!(lines[0]["created"], true);
    assert_eq!(lines[1]["created"], true);
    assert_ne!(&lines[1]["id"], first);
    for repeat in [2, 3, FILLER + 4] {
        assert_eq!(&lines[repeat]["id"], first, "line {}", repeat + 1);
        assert_eq!(lines[repeat]["created"], false, "line {}", repeat + 1);
    }
    let mut count = 0;
    let mut after = None;
    loop {
        let page = database.events.list_streams(after, 1000).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        count += page.len();
    }
    assert_eq!(count, FILLER + 2);
}

/// Bulk intake looks up a chunk while the chunks before it are still being written, when the
/// lookup cannot see their requests: a subject that such a chunk records is recognised from
/// that chunk's blind indexes, and makes no second request. The interleaving is fixed here:
/// the second chunk is resolved before the first is written.
async fn a_subject_of_a_chunk_not_yet_written_makes_no_second_request(store: TestStore) {
    let database = store.database();
    let requests = Requests::new(database.events.clone(), Arc::new(Config::default()))
        .with_sealing(MasterKey::from_bytes([6; 32]), database.keys.clone());
    let submission = |user: &str| {
        let mut subject = std::collections::BTreeMap::new();
        subject.insert("user_id".to_owned(), user.to_owned());
        (
            Submission {
                subject,
                ..Submission::default()
            },
            None,
        )
    };
    let first = requests.prepare(vec![submission("a"), submission("b")], "test");
    let second = requests.prepare(vec![submission("c"), submission("b")], "test");

    let first = requests.resolve(first, &[]).await;
    let unwritten = [Arc::new(first.new_subjects())];
    let second = requests.resolve(second, &unwritten).await;
    let first = requests.write(first).await.finish(|_| None);
    assert_eq!(
        first.new_subjects.len(),
        2,
        "the first chunk created a and b"
    );
    let second = requests.write(second).await;
    let second: Vec<_> = second
        .finish(|index| {
            let at = *first.new_subjects.get(index)?;
            first.results[at].as_ref().ok().map(|s| &s.loaded)
        })
        .results
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let first: Vec<_> = first.results.into_iter().map(Result::unwrap).collect();

    assert!(first.iter().all(|s| s.created));
    assert!(second[0].created, "c is new");
    assert!(!second[1].created, "b was recorded by the first chunk");
    assert_eq!(second[1].loaded.request.id, first[1].loaded.request.id);
    let streams = database.events.list_streams(None, 100).await.unwrap();
    assert_eq!(streams.len(), 3, "a, b and c: one request each");

    // Without the first chunk's answer (its write failed), the repeat fails too, rather than
    // making a second request.
    let lost = requests
        .resolve(requests.prepare(vec![submission("d")], "test"), &[])
        .await;
    let pending = [Arc::new(lost.new_subjects())];
    drop(lost);
    let again = requests.prepare(vec![submission("d")], "test");
    let again = requests.resolve(again, &pending).await;
    let answers = requests.write(again).await.finish(|_| None).results;
    assert!(matches!(answers[0], Err(RequestError::Contended)));
    let streams = database.events.list_streams(None, 100).await.unwrap();
    assert_eq!(streams.len(), 3, "nothing written for d");
}

support::backends!(
    mixed_lines_fail_alone,
    a_streamed_body_of_thousands_of_lines,
    a_subject_listed_twice_makes_one_request,
    a_subject_of_a_chunk_not_yet_written_makes_no_second_request,
);
