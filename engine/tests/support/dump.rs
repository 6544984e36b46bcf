//! Every byte a test database holds, as text: what a test searches for a planted identifier.

use super::TestStore;

/// Every byte the database holds, as text: a full `pg_dump` of the test schema, or the SQLite
/// file with its WAL.
pub async fn dump(store: &TestStore) -> String {
    match store {
        TestStore::Postgres { schema, url, .. } => {
            let pg_dump = ["/usr/lib/postgresql/15/bin/pg_dump", "pg_dump"]
                .into_iter()
                .find(|p| {
                    std::process::Command::new(p)
                        .arg("--version")
                        .output()
                        .is_ok()
                })
                .expect("pg_dump is installed with Postgres");
            let output = std::process::Command::new(pg_dump)
                .args(["--schema", schema, url])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        TestStore::Sqlite { path, .. } => {
            let mut bytes = std::fs::read(path).unwrap();
            if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                bytes.extend(wal);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}
