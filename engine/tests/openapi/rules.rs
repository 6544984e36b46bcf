//! Every pattern of the document is the rule the server enforces, on samples around it.

use super::*;

/// Draws `count` strings from `strategy`, the same ones every run.
fn samples(strategy: impl Strategy<Value = String>, count: usize) -> Vec<String> {
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Strings made of `pieces`, up to `max` of them.
fn made_of(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(pieces), 0..=max).prop_map(|p| p.concat())
}

/// Characters at the edges of the text rules: white space that is and is not a control
/// character, control characters that are not white space, look-alikes of both.
const TEXT: &[&str] = &[
    "a", "Z", "0", "é", "😀", " ", "\t", "\n", "\u{b}", "\u{1c}", "\u{85}", "\u{a0}", "\u{2028}",
    "\u{3000}", "\u{feff}", "\u{200b}", "\u{7f}", "\u{0}", "\u{9f}", ",", "_", "-",
];

fn regex(doc: &Value, pointer: &str) -> regex::Regex {
    let pattern = doc
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no pattern at {pointer}"));
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 26)
        .build()
        .unwrap_or_else(|e| panic!("{pointer}: {e}"))
}

/// The length limit beside a pattern, in characters.
fn max_length(doc: &Value, pointer: &str) -> usize {
    doc.pointer(pointer)
        .and_then(Value::as_u64)
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap())
}

/// Asserts that the server refuses `value` (400 naming `field`) exactly when the document's
/// rule does not admit it.
fn check(field: &str, value: &str, admitted: bool, status: StatusCode, problem: &Value) {
    let refused = status == StatusCode::BAD_REQUEST && problem["field"].as_str() == Some(field);
    assert_eq!(
        admitted,
        !refused,
        "{field} = {value:?}: the document {} it, the server answered {status} {problem}",
        if admitted { "admits" } else { "refuses" }
    );
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn the_submission_rules_are_the_server_rules() {
    let (app, _store) = app(false).await;
    let doc = document(&app).await;
    let body = "/components/schemas/SubmitBody/properties";
    let submit = |body: Value| {
        Request::post("/v1/requests")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let long = |n: usize, c: &str| c.repeat(n);
    // Each field with the values at its length limit, then generated ones.
    let fields: [(&str, &str, usize); 4] = [
        ("source", "source", 128),
        ("reason", "reason", 1024),
        ("external_id", "external_id", 256),
        ("tags[0]", "tags/items", 64),
    ];
    for (field, at, limit) in fields {
        let pattern = regex(&doc, &format!("{body}/{at}/pattern"));
        let mut values = samples(made_of(TEXT, 8), 150);
        for c in ["a", "é", "😀"] {
            values.push(long(limit, c));
            values.push(long(limit + 1, c));
            values.push(format!("\u{85} {}\t", long(limit, c)));
        }
        for value in values {
            let mut json = json!({"subject": {"user_id": "1"}});
            if field == "tags[0]" {
                json["tags"] = json!([value]);
            } else {
                json[field] = json!(value);
            }
            let (status, _, problem) = send(&app, submit(json)).await;
            check(field, &value, pattern.is_match(&value), status, &problem);
        }
    }
    let values_at = format!("{body}/subject/additionalProperties");
    let pattern = regex(&doc, &format!("{values_at}/pattern"));
    let max = max_length(&doc, &format!("{values_at}/maxLength"));
    let mut values = samples(made_of(TEXT, 8), 150);
    values.extend([
        long(256, "😀"),
        long(257, "a"),
        format!(" {} ", long(254, "é")),
    ]);
    for value in values {
        let (status, _, problem) = send(&app, submit(json!({"subject": {"email": value}}))).await;
        let admitted = pattern.is_match(&value) && value.chars().count() <= max;
        check("subject.email", &value, admitted, status, &problem);
    }
    let kinds = regex(&doc, &format!("{body}/subject/propertyNames/pattern"));
    let kind_pieces: &[&str] = &["a", "z", "0", "_", "-", "A", "é", " ", "$"];
    let mut values = samples(made_of(kind_pieces, 34), 150);
    values.extend([long(32, "k"), long(33, "k")]);
    for kind in values {
        let (status, _, problem) = send(&app, submit(json!({"subject": {&kind: "x"}}))).await;
        let refused = status == StatusCode::BAD_REQUEST
            && problem["field"]
                .as_str()
                .is_some_and(|f| f == "subject" || f.starts_with("subject."));
        assert_eq!(
            kinds.is_match(&kind),
            !refused,
            "kind {kind:?}: {status} {problem}"
        );
    }
    let key = regex(
        &doc,
        "/paths/~1v1~1requests/post/parameters/0/schema/pattern",
    );
    let key_pieces: &[&str] = &[" ", "\t", "a", "~", "!", "k"];
    let mut keys = samples(made_of(key_pieces, 6), 100);
    keys.extend([
        long(255, "k"),
        long(256, "k"),
        format!("\t {} ", long(255, "k")),
    ]);
    for key_value in keys {
        let request = Request::post("/v1/requests")
            .header("idempotency-key", &key_value)
            .body(Body::from(json!({"subject": {"user_id": "2"}}).to_string()))
            .unwrap();
        let (status, _, problem) = send(&app, request).await;
        check(
            "Idempotency-Key",
            &key_value,
            key.is_match(&key_value),
            status,
            &problem,
        );
    }
}

#[tokio::test]
async fn the_rules_of_operations_and_the_feed_are_the_server_rules() {
    let (app, _store) = app(false).await;
    let doc = document(&app).await;
    let (status, _, submitted) = send(
        &app,
        Request::post("/v1/requests")
            .body(Body::from(r#"{"subject": {"user_id": "7"}}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = submitted["id"].as_str().unwrap().to_owned();

    extend_by_matches(&app, &doc, &id).await;
    reasons_match(&app, &doc, &id).await;
    cleaner_names_match(&app, &doc).await;
    feed_parameters_match(&app, &doc).await;
}

/// `by` of an extension: the pattern against what the server accepts.
async fn extend_by_matches(app: &axum::Router, doc: &Value, id: &str) {
    let span = regex(doc, "/components/schemas/ExtendBody/properties/by/pattern");
    let span_pieces: &[&str] = &[
        "1", "0", "12", "007", " ", "\t", "\u{a0}", "d", "day", "days", "month", "months", "x",
        "+", "é",
    ];
    let mut spans = samples(made_of(span_pieces, 6), 200);
    spans.extend(
        [
            "4294967295d",
            "4294967296d",
            "04294967295 days",
            "1 month 15 days",
        ]
        .map(String::from),
    );
    for by in spans {
        let request = Request::post(format!("/v1/requests/{id}/extend"))
            .body(Body::from(
                json!({"by": by, "reason": "complex"}).to_string(),
            ))
            .unwrap();
        let (status, _, problem) = send(app, request).await;
        check("by", &by, span.is_match(&by), status, &problem);
    }
}

/// `reason` of a hold (required) and of a release (optional).
async fn reasons_match(app: &axum::Router, doc: &Value, id: &str) {
    let reason = "/components/schemas/RequiredReasonBody/properties/reason/pattern";
    let required = regex(doc, reason);
    let optional = regex(
        doc,
        "/components/schemas/ReasonBody/properties/reason/pattern",
    );
    let mut reasons = samples(made_of(TEXT, 8), 150);
    reasons.extend([
        "a".repeat(1024),
        "é".repeat(1025),
        format!("\u{85}{}\t", "😀".repeat(1024)),
    ]);
    for value in reasons {
        for (operation, pattern) in [("hold", &required), ("release", &optional)] {
            let request = Request::post(format!("/v1/requests/{id}/{operation}"))
                .body(Body::from(json!({"reason": value}).to_string()))
                .unwrap();
            let (status, _, problem) = send(app, request).await;
            check("reason", &value, pattern.is_match(&value), status, &problem);
        }
    }
}

/// A cleaner's name in the path of a retry.
async fn cleaner_names_match(app: &axum::Router, doc: &Value) {
    let name = regex(
        doc,
        "/paths/~1v1~1requests~1{id}~1cleaners~1{name}~1retry/post/parameters/1/schema/pattern",
    );
    let name_pieces: &[&str] = &["a", "z", "0", "_", "-", "B", " ", "é", "."];
    let mut names = samples(made_of(name_pieces, 66), 150);
    names.extend([
        format!("a{}", "b".repeat(63)),
        format!("a{}", "b".repeat(64)),
    ]);
    for cleaner in names {
        let unknown = uuid::Uuid::now_v7();
        let uri = format!("/v1/requests/{unknown}/cleaners/{}/retry", encode(&cleaner));
        let (status, _, problem) = send(app, Request::post(uri).body(Body::empty()).unwrap()).await;
        check("name", &cleaner, name.is_match(&cleaner), status, &problem);
    }
}

/// The feed's `after`, `Last-Event-ID` and `types`.
async fn feed_parameters_match(app: &axum::Router, doc: &Value) {
    let feed = "/paths/~1v1~1events/get/parameters";
    let after = regex(doc, &format!("{feed}/0/schema/pattern"));
    let types = regex(doc, &format!("{feed}/1/schema/pattern"));
    let last_event_id = regex(doc, &format!("{feed}/4/schema/pattern"));
    let checkpoint_pieces: &[&str] = &[
        "0",
        "1",
        "42",
        "-",
        "+",
        " ",
        "\t",
        "a",
        "00",
        "9223372036854775807",
        "9223372036854775808",
        "\u{a0}",
    ];
    let mut checkpoints = samples(made_of(checkpoint_pieces, 5), 200);
    checkpoints.extend(["0--0", "-0-1", "+1-+2", "1-9223372036854775807"].map(String::from));
    for value in &checkpoints {
        let uri = format!("/v1/events?after={}", encode(value));
        let (status, _, problem) = send(app, Request::get(uri).body(Body::empty()).unwrap()).await;
        check("after", value, after.is_match(value), status, &problem);
        if value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
            let request = Request::get("/v1/events")
                .header("last-event-id", value.as_str())
                .body(Body::empty())
                .unwrap();
            let (status, _, problem) = send(app, request).await;
            check(
                "Last-Event-ID",
                value,
                last_event_id.is_match(value),
                status,
                &problem,
            );
        }
    }
    let type_pieces: &[&str] = &[
        "Due",
        "Completed",
        "Received",
        ",",
        " ",
        "\u{a0}",
        "due",
        "x",
    ];
    for value in samples(made_of(type_pieces, 5), 150) {
        let uri = format!("/v1/events?types={}", encode(&value));
        let (status, _, problem) = send(app, Request::get(uri).body(Body::empty()).unwrap()).await;
        check("types", &value, types.is_match(&value), status, &problem);
    }
}
