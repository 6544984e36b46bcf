//! `sqlx::migrate!` embeds the files under `migrations/` at compile time; without this, adding
//! a migration would not rebuild the crate, and a binary would run without it.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
