//! `lethe coverage`, and the same inventory where `serve` shows it: its start-up warnings,
//! `GET /v1/coverage` and the dashboard's panel. A planted gap of each kind is found; a
//! covered inventory reports none.

use super::*;

/// Cleaners with narrow settings, and stores with one planted gap of each kind.
const GAPS: &str = r#"
[[cleaners]]
name = "orders-db"
kind = "manual"
identifiers = ["user_id"]
match = { jurisdictions = ["gdpr"] }

[[cleaners]]
name = "newsletter"
kind = "manual"
identifiers = ["email"]
match = { sources = ["web", "app"] }

[[stores]]
name = "orders"
owner = "payments team"
description = "orders and invoices"
identifiers = ["user_id", "phone"]
cleaners = ["orders-db"]

[[stores]]
name = "mailing-list"
identifiers = ["email"]
cleaners = ["newsletter"]

[[stores]]
name = "spreadsheets"
identifiers = ["email"]
"#;

/// The gaps `GAPS` plants, as `GET /v1/coverage` and `lethe coverage --json` give them.
fn planted() -> Value {
    serde_json::json!([
        {"kind": "identifier_not_received", "store": "orders", "identifier": "phone"},
        {"kind": "jurisdiction_not_routed", "store": "orders", "jurisdiction": "ccpa"},
        {"kind": "source_not_routed", "store": "mailing-list", "source": null},
        {"kind": "no_cleaner", "store": "spreadsheets"},
    ])
}

#[tokio::test]
async fn coverage_names_a_planted_gap_of_each_kind_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lethe.toml"), GAPS).unwrap();
    let text = run(dir.path(), &["coverage"]).await.expect(1);
    for line in [
        "3 stores declared",
        "orders  cleaners: orders-db  owner: payments team",
        "spreadsheets  cleaners: none",
        "4 gaps",
        "store orders: holds phone identifiers, and none of its cleaners receives them",
        "store orders: none of its cleaners is routed ccpa requests",
        "store mailing-list: none of its cleaners is routed requests without a source",
        "store spreadsheets: no cleaner erases it",
    ] {
        assert!(text.stdout.contains(line), "no {line:?} in {text:?}");
    }
    let json = run(dir.path(), &["coverage", "--json"]).await.expect(1);
    assert_eq!(json.json()["gaps"], planted(), "{json:?}");
    assert_eq!(json.json()["stores"][0]["owner"], "payments team");
    assert!(
        !dir.path().join("lethe-data").exists(),
        "coverage reads no database"
    );
}

#[tokio::test]
async fn a_covered_inventory_reports_no_gap_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let covered = GAPS
        .replace("identifiers = [\"user_id\"]\n", "")
        .replace("match = { jurisdictions = [\"gdpr\"] }\n", "")
        .replace("match = { sources = [\"web\", \"app\"] }\n", "")
        .replace(
            "name = \"spreadsheets\"\nidentifiers = [\"email\"]\n",
            "name = \"spreadsheets\"\nidentifiers = [\"email\"]\ncleaners = [\"newsletter\"]\n",
        );
    std::fs::write(dir.path().join("lethe.toml"), &covered).unwrap();
    let text = run(dir.path(), &["coverage"]).await.ok();
    assert!(text.stdout.contains("3 stores declared"), "{text:?}");
    assert!(text.stdout.contains("no gaps"), "{text:?}");
    let json = run(dir.path(), &["coverage", "--json"]).await.ok();
    assert_eq!(json.json()["gaps"], serde_json::json!([]), "{json:?}");
}

#[tokio::test]
async fn a_store_naming_unknown_cleaners_is_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{GAPS}\n[[stores]]\nname = \"crm\"\ncleaners = [\"crm-api\", \"orders-db\", \"crm-files\"]\n");
    std::fs::write(dir.path().join("lethe.toml"), text).unwrap();
    let refused = run(dir.path(), &["coverage"]).await.expect(1);
    assert!(
        refused
            .stderr
            .contains("stores[3].cleaners: not configured cleaners: crm-api, crm-files"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn serve_warns_of_each_gap_and_shows_them_over_http_and_on_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lethe.toml"), GAPS).unwrap();
    let server = Server::start(dir.path()).await;
    let log = server.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("coverage gap"))
        .collect();
    assert_eq!(warnings.len(), 4, "one warning per gap:\n{log}");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("store spreadsheets: no cleaner erases it")),
        "{log}"
    );
    let client = http_client();
    let answer = client.get(server.url("/v1/coverage")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["gaps"], planted());
    assert_eq!(body["stores"].as_array().unwrap().len(), 3);
    let page = client
        .get(server.url("/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-gaps=\"4\">(4 gaps in 3 declared stores)"),
        "{page}"
    );
    for (kind, store) in [
        ("identifier_not_received", "orders"),
        ("jurisdiction_not_routed", "orders"),
        ("source_not_routed", "mailing-list"),
        ("no_cleaner", "spreadsheets"),
    ] {
        assert!(
            page.contains(&format!("data-gap=\"{kind}\" data-store=\"{store}\"")),
            "no {kind} gap of {store} on the page"
        );
    }
    server.kill().await;
}
