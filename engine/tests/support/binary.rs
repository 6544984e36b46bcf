//! The `lethe` binary as tests spawn it: in a directory of the test's own, with the `LETHE_*`
//! environment cleared, and with a master key file (a Postgres database refuses to start
//! without an explicit key). Every test that spawns `lethe` starts from here.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// Settings from the environment that would change what the binary does.
pub const LETHE_ENV: [&str; 6] = [
    "LETHE_DATABASE_URL",
    "LETHE_CONFIG",
    "LETHE_LISTEN",
    "LETHE_MASTER_KEY_FILE",
    "LETHE_KAFKA_BROKERS",
    "RUST_LOG",
];

/// The master key spawned binaries get.
pub const TEST_KEY: [u8; 32] = [0x5e; 32];

/// A file holding `bytes` as a master key, `name` in `dir`.
pub fn write_key(dir: &Path, name: &str, bytes: [u8; 32]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", hex::encode(bytes))).unwrap();
    path
}

/// The test key's file in `dir` (written on first use).
pub fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("test-master.key");
    if !path.exists() {
        write_key(dir, "test-master.key", TEST_KEY);
    }
    path
}

/// `lethe` in `dir` with a clean environment and no master key: what a user gets with no
/// setup (on SQLite, the development key next to the database file).
pub fn lethe_without_key(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lethe"));
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in LETHE_ENV {
        command.env_remove(name);
    }
    command
}

/// `lethe` in `dir` with a clean environment and the test key as `LETHE_MASTER_KEY_FILE`
/// (a test's own `.env(...)` afterwards overrides it).
pub fn lethe(dir: &Path) -> Command {
    let mut command = lethe_without_key(dir);
    command.env("LETHE_MASTER_KEY_FILE", key_file(dir));
    command
}
