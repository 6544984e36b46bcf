//! `lethe report`: the annual report from the command line, as a table, JSON and CSV; a bad
//! year or jurisdiction is named. (Its figures, on a log with back-dated histories:
//! `engine/tests/dashboard/annual.rs`.)

use chrono::Datelike;

use super::*;

#[tokio::test]
async fn report_shows_the_year_per_jurisdiction() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run(dir, &["submit", "--subject", "user_id=r1"]).await.ok();
    let ccpa = [
        "submit",
        "--subject",
        "user_id=r2",
        "--jurisdiction",
        "ccpa",
    ];
    let id = submitted_id(&run(dir, &ccpa).await.ok()).to_string();
    run(dir, &["cancel", &id, "--reason", "withdrawn"])
        .await
        .ok();
    let year = Utc::now().year().to_string();

    let json = run(dir, &["report", "--year", &year, "--format", "json"])
        .await
        .ok()
        .json();
    assert_eq!(json["year"].to_string(), year);
    let by_name = |name: &str| {
        json["jurisdictions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["jurisdiction"] == name)
            .unwrap_or_else(|| panic!("no {name}: {json}"))
            .clone()
    };
    assert_eq!(
        (
            by_name("gdpr")["received"].clone(),
            by_name("gdpr")["open"].clone()
        ),
        (1.into(), 1.into())
    );
    assert_eq!(by_name("ccpa")["cancelled"], 1);
    assert_eq!(by_name("ccpa")["median_days_to_respond"], Value::Null);

    let csv = run(
        dir,
        &[
            "report",
            "--year",
            &year,
            "--jurisdiction",
            "ccpa",
            "--format",
            "csv",
        ],
    )
    .await
    .ok();
    assert_eq!(
        csv.stdout.lines().nth(1),
        Some(format!("{year},ccpa,1,0,0,0,1,0,,").as_str()),
        "{csv:?}"
    );
    let table = run(dir, &["report", "--year", &year]).await.ok();
    assert!(
        table.stdout.lines().any(|l| l.starts_with("gdpr")),
        "{table:?}"
    );

    let refused = run(dir, &["report", "--year", "1969"]).await.expect(1);
    assert!(refused.stderr.contains("year"), "{refused:?}");
    let refused = run(dir, &["report", "--year", &year, "--jurisdiction", "CCPA"])
        .await
        .expect(1);
    assert!(refused.stderr.contains("jurisdiction"), "{refused:?}");
}
