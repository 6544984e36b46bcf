//! Server-Sent Events over a real socket.

use super::*;

/// The router on a real listener on 127.0.0.1; the server stops when this is dropped.
struct Server {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One SSE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) id: Option<String>,
    event: Option<String>,
    data: String,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// An SSE connection, read frame by frame.
struct SseClient {
    stream: ByteStream,
    buffer: Vec<u8>,
    /// Comment-only frames seen (keep-alives).
    comments: usize,
}

impl SseClient {
    async fn connect(base: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new()
            .get(format!("{base}/v1/events?{query}"))
            .header("accept", EVENT_STREAM);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .expect("the stream opens")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with(EVENT_STREAM), "{content_type}");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        Self {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            comments: 0,
        }
    }

    /// The next message with data, skipping comments; fails at `deadline`.
    async fn next_frame(&mut self, deadline: Instant) -> Frame {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(raw).unwrap();
                if let Some(frame) = parse_frame(&text) {
                    return frame;
                }
                self.comments += 1;
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("an SSE message before the deadline")
                .expect("the stream stays open")
                .unwrap();
            self.buffer.extend_from_slice(&chunk);
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Frame> {
        let deadline = Instant::now() + PATIENCE;
        let mut frames = Vec::with_capacity(n);
        while frames.len() < n {
            frames.push(self.next_frame(deadline).await);
        }
        frames
    }
}

/// Parses one SSE message (its lines, without the blank line ending it); `None` for a message
/// that is only comments.
pub(crate) fn parse_frame(text: &str) -> Option<Frame> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: String::new(),
    };
    let mut data = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => {}
            other => panic!("unexpected SSE field {other:?} in {text:?}"),
        }
    }
    if data.is_empty() && frame.id.is_none() && frame.event.is_none() {
        return None;
    }
    frame.data = data.join("\n");
    Some(frame)
}

/// Checks `frames` present `expected` exactly, in order.
fn assert_frames(frames: &[Frame], expected: &[&RecordedEvent]) {
    assert_eq!(
        frames
            .iter()
            .map(|f| f.id.clone().unwrap())
            .collect::<Vec<_>>(),
        expected.iter().map(|e| id(e)).collect::<Vec<_>>(),
        "ids in order"
    );
    for (frame, event) in frames.iter().zip(expected) {
        assert_eq!(frame.event.as_deref(), Some(event.event_type.as_str()));
        let json: Value = serde_json::from_str(&frame.data).unwrap();
        assert_presents(&json, event);
    }
}

async fn sse_streams_events_as_appended_and_resumes_after_last_event_id(t: TestStore) {
    let feed = Feed::new(t);
    let server = Server::start(feed.app.clone()).await;
    // Some history before the client connects, more while it reads.
    for _ in 0..2 {
        story(feed.store.as_ref()).await;
    }
    let mut client = SseClient::connect(&server.base, "", None).await;
    let store = feed.store.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..3 {
            story(store.as_ref()).await;
        }
    });
    let frames = client.take(15).await;
    writer.await.unwrap();
    let expected = settled(feed.store.as_ref(), 15).await;
    assert_frames(&frames, &expected.iter().collect::<Vec<_>>());

    // The client goes away; more events are appended meanwhile.
    drop(client);
    for _ in 0..2 {
        story(feed.store.as_ref()).await;
    }
    let last_seen = frames.last().unwrap().id.clone().unwrap();
    // Reconnecting with the last id seen continues exactly after it, whatever `after` says.
    let mut client = SseClient::connect(&server.base, "after=0-0", Some(&last_seen)).await;
    let store = feed.store.clone();
    let writer = tokio::spawn(async move { story(store.as_ref()).await });
    let frames = client.take(9).await;
    writer.await.unwrap();
    let expected = settled(feed.store.as_ref(), 24).await;
    assert_frames(&frames, &expected[15..].iter().collect::<Vec<_>>());

    // A sentinel appended last is the very next message: nothing was repeated or held back.
    let sentinel = append_stream(feed.store.as_ref(), &[cancelled()]).await;
    let next = client.take(1).await;
    assert_frames(&next, &[&sentinel[0]]);
}

async fn sse_filters_by_type_and_resumes_after_skipped_events(t: TestStore) {
    let feed = Feed::new(t);
    let server = Server::start(feed.app.clone()).await;
    for _ in 0..3 {
        story(feed.store.as_ref()).await;
    }
    let mut client = SseClient::connect(&server.base, "types=Due&limit=2", None).await;
    let store = feed.store.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..2 {
            story(store.as_ref()).await;
        }
    });
    let frames = client.take(5).await;
    writer.await.unwrap();
    let all = settled(feed.store.as_ref(), 15).await;
    let dues: Vec<&RecordedEvent> = all.iter().filter(|e| e.event_type == "Due").collect();
    assert_frames(&frames, &dues);
    drop(client);

    // Resume after the third Due (the query's `after` is overridden by Last-Event-ID).
    let third = frames[2].id.clone().unwrap();
    let mut client = SseClient::connect(
        &server.base,
        &format!("types=Due&after={}", id(&all[0])),
        Some(&third),
    )
    .await;
    let frames = client.take(2).await;
    assert_frames(&frames, &dues[3..]);
    let sentinel = append_stream(feed.store.as_ref(), &[reminded(), due()]).await;
    let next = client.take(1).await;
    assert_frames(&next, &[&sentinel[1]]);

    // `after` alone (no Last-Event-ID) is a starting point too.
    let mut client = SseClient::connect(
        &server.base,
        &format!("types=Due,Completed&after={}", id(dues[4])),
        None,
    )
    .await;
    let frames = client.take(2).await;
    let completed_last = all
        .iter()
        .rev()
        .find(|e| e.event_type == "Completed")
        .unwrap();
    assert_frames(&frames, &[completed_last, &sentinel[1]]);
}
support::backends!(
    sse_streams_events_as_appended_and_resumes_after_last_event_id,
    sse_filters_by_type_and_resumes_after_skipped_events,
);
