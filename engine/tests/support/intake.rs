//! Clients that submit erasure requests over HTTP while the server behind the address may be
//! killed at any moment: a submission that gets no answer (the connection dropped, the
//! response cut short) is sent again, unchanged, until it is answered. Single submissions
//! carry an `Idempotency-Key`, bulk lines an `external_id`, so a retry may only ever name the
//! request the first try created.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

/// How long one submission (with all its retries) may take.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// The pause between two tries of a submission that got no answer.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What a client saw for one submission: every id it was answered with and the status of
/// each answer (201: created; 200: an earlier request; for a bulk line as its `created` says),
/// and how many tries went unanswered.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub ids: Vec<String>,
    pub statuses: Vec<u16>,
    pub unanswered: usize,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The subject of submission `index`; single and bulk submissions use disjoint indexes.
pub fn subject(index: usize) -> serde_json::Value {
    serde_json::json!({"user_id": format!("http-{index}"), "email": format!("http-{index}@example.com")})
}

/// The `Idempotency-Key` of single submission `index`.
pub fn key(index: usize) -> String {
    format!("crash-key-{index}")
}

/// The `external_id` of bulk line `index`.
pub fn external_id(index: usize) -> String {
    format!("crash-bulk-{index}")
}

/// Submits each of `indexes` with `POST /v1/requests` through `base`, `concurrency` at a time
/// (each worker pausing `pause` after each answer), and retries each until it is answered;
/// returns what each got, by index. A 4xx answer
/// (never expected here) or a retry answered with another request fails the caller's checks,
/// not this loop.
pub async fn singles(
    base: String,
    indexes: Vec<usize>,
    concurrency: usize,
    pause: Duration,
) -> BTreeMap<usize, Answers> {
    let http = client();
    let url = format!("{base}/v1/requests");
    futures::stream::iter(indexes)
        .map(|index| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = serde_json::json!({"subject": subject(index), "jurisdiction": "gdpr"});
                let deadline = Instant::now() + ANSWER_DEADLINE;
                let mut answers = Answers::default();
                loop {
                    let answer = http
                        .post(&url)
                        .header("idempotency-key", key(index))
                        .json(&body)
                        .send()
                        .await;
                    let answered = match answer {
                        Ok(response) if !response.status().is_server_error() => {
                            let status = response.status().as_u16();
                            match response.json::<serde_json::Value>().await {
                                Ok(view) => Some((status, view["id"].as_str().map(str::to_owned))),
                                Err(_) => None,
                            }
                        }
                        _ => None,
                    };
                    match answered {
                        Some((status, id)) => {
                            answers.statuses.push(status);
                            answers.ids.extend(id);
                            tokio::time::sleep(pause).await;
                            return (index, answers);
                        }
                        None => answers.unanswered += 1,
                    }
                    assert!(
                        Instant::now() < deadline,
                        "submission {index} got no answer within {ANSWER_DEADLINE:?} \
                         ({} tries)",
                        answers.unanswered
                    );
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Submits the lines `indexes` with `POST /v1/requests:bulk` through `base`, `chunk` lines per
/// call, one call at a time with `pause` between calls. A call whose answer stops short (the server died while writing)
/// is made again with the same lines; every line's answers are kept, from every try.
pub async fn bulk(
    base: String,
    indexes: Vec<usize>,
    chunk: usize,
    pause: Duration,
) -> BTreeMap<usize, Answers> {
    let http = client();
    let url = format!("{base}/v1/requests:bulk");
    let mut all: BTreeMap<usize, Answers> = BTreeMap::new();
    for lines in indexes.chunks(chunk) {
        let body: String = lines
            .iter()
            .map(|&index| {
                let line = serde_json::json!({
                    "subject": subject(index),
                    "jurisdiction": "gdpr",
                    "external_id": external_id(index),
                });
                format!("{line}\n")
            })
            .collect();
        let deadline = Instant::now() + ANSWER_DEADLINE;
        loop {
            let answered = bulk_call(&http, &url, &body).await;
            // Lines answered before the answer stopped short count as answered.
            let mut seen = std::collections::BTreeSet::new();
            for result in &answered {
                let Some(line) = result["line"].as_u64() else {
                    continue;
                };
                let index = lines[usize::try_from(line).unwrap() - 1];
                // A server error (503: the database did not answer in time, nothing was
                // recorded) is sent again, as a single submission's is and as the API says.
                if result["error"]["status"].as_u64().is_some_and(|s| s >= 500) {
                    continue;
                }
                seen.insert(index);
                let answers = all.entry(index).or_default();
                // As for a single submission: 201 made the request, 200 found it.
                let created = result["created"].as_bool() == Some(true);
                answers.statuses.push(if created { 201 } else { 200 });
                match result["id"].as_str() {
                    Some(id) => answers.ids.push(id.to_owned()),
                    None => panic!("bulk line {index} was refused: {result}"),
                }
            }
            if seen.len() == lines.len() {
                tokio::time::sleep(pause).await;
                break;
            }
            for index in lines.iter().filter(|index| !seen.contains(*index)) {
                all.entry(*index).or_default().unanswered += 1;
            }
            assert!(
                Instant::now() < deadline,
                "bulk lines {lines:?} got no full answer within {ANSWER_DEADLINE:?}"
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    all
}

/// One bulk call: the answer lines that arrived whole before the answer ended or broke off.
async fn bulk_call(http: &reqwest::Client, url: &str, body: &str) -> Vec<serde_json::Value> {
    let Ok(response) = http
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(body.to_owned())
        .send()
        .await
    else {
        return Vec::new();
    };
    if !response.status().is_success() {
        return Vec::new();
    }
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut results = Vec::new();
    while let Some(Ok(bytes)) = stream.next().await {
        buffer.extend_from_slice(&bytes);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) {
                results.push(value);
            }
        }
    }
    results
}
