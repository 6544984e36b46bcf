//! `lethe audit verify-export`: an export, copied away from the database, verifies from the
//! file alone (with no database reachable), and every alteration an auditor could meet is
//! named with its line, request and position: each field the hash chain covers changed in
//! turn, a line removed, two lines swapped; in JSONL and in CSV.

use lethe_engine::app::verify_export::{verify_export, ExportFinding};

use super::*;

/// A database URL nothing answers at: the check must not need one.
const NO_DATABASE: &str = "postgres://postgres@127.0.0.1:1/nowhere";

/// Four requests with one to three events each, exported from a database in `dir`.
async fn export(dir: &Path, format: &str) -> String {
    let mut ids = Vec::new();
    for n in 0..4 {
        let user = format!("user_id=verify-{n}");
        ids.push(submitted_id(&run(dir, &["submit", "--subject", &user]).await.ok()).to_string());
    }
    run(dir, &["hold", &ids[1], "--reason", "audit"]).await.ok();
    run(dir, &["release", &ids[1]]).await.ok();
    run(dir, &["cancel", &ids[2], "--reason", "asked"])
        .await
        .ok();
    let today = Utc::now().date_naive().to_string();
    run(
        dir,
        &[
            "audit", "export", "--from", &today, "--to", &today, "--format", format,
        ],
    )
    .await
    .ok()
    .stdout
}

/// An export in `format` (named `label` by the check), verified with no database.
async fn exported_and_verified(format: &str, label: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = export(dir.path(), format).await;
    let ok = verify_alone(&text).await.ok();
    assert!(
        ok.stdout
            .contains(&format!("ok: 4 requests, 7 events ({label})")),
        "{ok:?}"
    );
    text
}

/// `lethe audit verify-export FILE` run in an empty directory of its own, the database
/// pointing nowhere.
async fn verify_alone(file_text: &str) -> Run {
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("copy.export");
    std::fs::write(&file, file_text).unwrap();
    let run = run_with_env(
        elsewhere.path(),
        &["audit", "verify-export", file.to_str().unwrap()],
        &[("LETHE_DATABASE_URL", NO_DATABASE)],
    )
    .await;
    assert!(
        !elsewhere.path().join("lethe-data").exists(),
        "the check created a database: {run:?}"
    );
    run
}

fn check(text: &str) -> Vec<ExportFinding> {
    verify_export(text.as_bytes()).unwrap().findings
}

/// The values a tamperer might write in place of `value`.
fn altered(field: &str, value: &Value) -> Value {
    match field {
        "schema_version" | "version" => Value::from(value.as_i64().unwrap() + 1),
        "recorded_at" => Value::String((time(value) + TimeDelta::seconds(1)).to_rfc3339()),
        "event_id" | "correlation_id" | "causation_id" | "request_id" => {
            Value::String(uuid::Uuid::now_v7().to_string())
        }
        "data" => {
            let mut data = value.clone();
            data["forged"] = Value::Bool(true);
            data
        }
        "prev_hash" | "hash" => Value::String(
            value
                .as_str()
                .unwrap()
                .replace(|c: char| c.is_ascii_digit(), "f"),
        ),
        _ => Value::String(format!("{}x", value.as_str().unwrap_or("forged"))),
    }
}

/// Each event field the chain covers, as the JSONL and CSV exports name it.
const EVENT_FIELDS: [&str; 12] = [
    "version",
    "type",
    "schema_version",
    "recorded_at",
    "actor",
    "event_id",
    "command_id",
    "correlation_id",
    "causation_id",
    "data",
    "prev_hash",
    "hash",
];

#[tokio::test]
async fn a_jsonl_export_verifies_alone_and_names_every_alteration() {
    let jsonl = exported_and_verified("jsonl", "JSONL").await;
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let write = |lines: &[Value]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    // The held and released request, line 2: its second event.
    let held = &lines[1];
    let (id, event) = (held["request_id"].as_str().unwrap(), &held["events"][1]);
    let position = event["position"].as_i64().unwrap();
    for field in EVENT_FIELDS {
        let mut changed = lines.clone();
        changed[1]["events"][1][field] = altered(field, &event[field]);
        let findings = check(&write(&changed));
        let version = if field == "version" { 3 } else { 2 };
        assert_eq!(
            findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "line 2: request {id} at version {version} (position {position}): {}",
                findings[0].problem
            )],
            "{field} altered"
        );
    }
    // The request id, which every event's hash covers: the line names the id it now carries.
    let mut changed = lines.clone();
    changed[1]["request_id"] = altered("request_id", &held["request_id"]);
    let forged = changed[1]["request_id"].as_str().unwrap().to_owned();
    let findings = check(&write(&changed));
    let first_event = held["events"][0]["position"].as_i64().unwrap();
    assert!(
        findings.iter().any(|f| f.line == 2
            && f.request_id.map(|r| r.to_string()) == Some(forged.clone())
            && f.event.map(|e| e.1) == Some(first_event)),
        "{findings:?}"
    );

    lines_removed_or_moved_are_named(&lines);

    // The command line names what the check found, and exits 1.
    let mut changed = lines.clone();
    changed[1]["events"][1]["actor"] = Value::String("token:someone-else".to_owned());
    let failed = verify_alone(&write(&changed)).await.expect(1);
    assert!(
        failed.stdout.contains(&format!(
            "FAILED: line 2: request {id} at version 2 (position {position}): hash does not match"
        )),
        "{failed:?}"
    );
}

/// A JSONL export's lines, or a request's events, removed or swapped.
fn lines_removed_or_moved_are_named(lines: &[Value]) {
    let write = |lines: &[Value]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let id = lines[1]["request_id"].as_str().unwrap();
    let position = lines[1]["events"][1]["position"].as_i64().unwrap();
    // A line removed: its neighbours name it.
    let mut removed = lines.to_vec();
    removed.remove(1);
    let findings = check(&write(&removed));
    assert!(
        !findings.is_empty()
            && findings
                .iter()
                .all(|f| f.problem.contains(id) && f.line == 2),
        "{findings:?}"
    );
    // The last line removed: the new last names it.
    let last = lines[3]["request_id"].as_str().unwrap();
    let findings = check(&write(&lines[..3]));
    assert!(
        findings.len() == 1 && findings[0].line == 3 && findings[0].problem.contains(last),
        "{findings:?}"
    );
    // Two lines swapped: both are named.
    let mut swapped = lines.to_vec();
    swapped.swap(1, 2);
    let findings = check(&write(&swapped));
    for (line, request) in [(2, &lines[2]), (3, &lines[1])] {
        assert!(
            findings.iter().any(|f| f.line == line
                && f.request_id.map(|r| r.to_string()).as_deref()
                    == request["request_id"].as_str()),
            "line {line}: {findings:?}"
        );
    }
    // A request's last event removed: its recorded head names where its chain ends now.
    let mut shortened = lines.to_vec();
    shortened[1]["events"].as_array_mut().unwrap().pop();
    let findings = check(&write(&shortened));
    assert!(
        findings.len() == 1
            && findings[0].line == 2
            && findings[0].event == Some((2, position))
            && findings[0].problem.contains("head records version 3"),
        "{findings:?}"
    );
    // Two events of a request swapped.
    let mut reordered = lines.to_vec();
    reordered[1]["events"].as_array_mut().unwrap().swap(0, 1);
    let findings = check(&write(&reordered));
    assert!(
        findings.len() == 1 && findings[0].line == 2 && findings[0].request_id.is_some(),
        "{findings:?}"
    );
}

#[tokio::test]
async fn a_csv_export_verifies_alone_and_names_every_alteration() {
    let csv_text = exported_and_verified("csv", "CSV").await;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let write = |rows: &[csv::StringRecord]| {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&header).unwrap();
        for row in rows {
            writer.write_record(row).unwrap();
        }
        String::from_utf8(writer.into_inner().unwrap()).unwrap()
    };
    // Rows 2-4 (lines 3-5) are the held and released request's three events.
    let (id, position) = (&rows[1][0], rows[2][column("position")].to_owned());
    assert_eq!(&rows[3][0], id, "{csv_text}");
    for field in EVENT_FIELDS.into_iter().chain(["request_id"]) {
        let cell = &rows[2][column(field)];
        let value = match field {
            "data" => serde_json::from_str(cell).unwrap(),
            "version" | "schema_version" => Value::from(cell.parse::<i64>().unwrap()),
            _ => Value::String(cell.to_owned()),
        };
        let text = match altered(field, &value) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let mut changed = rows.clone();
        changed[2] = changed[2]
            .iter()
            .enumerate()
            .map(|(i, c)| if i == column(field) { text.as_str() } else { c })
            .collect();
        let findings = check(&write(&changed));
        assert!(
            findings
                .iter()
                .any(|f| f.line == 4 && f.event.map(|e| e.1.to_string()) == Some(position.clone())),
            "{field} altered: {findings:?}"
        );
    }
    // An event's row removed: the last of its request (the head names it), then one in the
    // middle, then the one row of a request (its neighbours name it).
    for (removed, line) in [(3, 4), (2, 4)] {
        let mut fewer = rows.clone();
        fewer.remove(removed);
        let findings = check(&write(&fewer));
        assert!(
            findings.len() == 1
                && findings[0].line == line
                && findings[0].request_id.map(|r| r.to_string()).as_deref() == Some(id),
            "row {removed} removed: {findings:?}"
        );
    }
    let only = rows[0][0].to_owned();
    let findings = check(&write(&rows[1..]));
    assert!(
        findings.len() == 1 && findings[0].line == 2 && findings[0].problem.contains(&only),
        "{findings:?}"
    );
    // Two rows swapped, within a request and across two.
    for (a, b, line) in [(1, 2, 3), (3, 4, 5)] {
        let mut swapped = rows.clone();
        swapped.swap(a, b);
        let findings = check(&write(&swapped));
        assert!(
            findings.iter().any(|f| f.line == line),
            "rows {a} and {b} swapped: {findings:?}"
        );
    }
}

#[tokio::test]
async fn verify_export_names_a_file_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run_with_env(
        dir.path(),
        &["audit", "verify-export", "no-such.jsonl"],
        &[("LETHE_DATABASE_URL", NO_DATABASE)],
    )
    .await
    .expect(1);
    assert!(missing.stderr.contains("no-such.jsonl"), "{missing:?}");
    let not_an_export = verify_alone("name,age\nada,36\n").await.expect(1);
    assert!(
        not_an_export.stderr.contains("no column \"request_id\""),
        "{not_an_export:?}"
    );
    let garbage = verify_alone("{\"request_id\": 7}\n").await.expect(1);
    assert!(
        garbage
            .stdout
            .contains("FAILED: line 1: not a request of an export"),
        "{garbage:?}"
    );
}
