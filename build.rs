//! Rebuilds the crate when a migration is added or edited: `sqlx::migrate!`
//! embeds the migration folders at compile time, and cargo cannot see files
//! that no source file names. Without this, a new migration would be left out
//! of an incremental build (what `sqlx migrate build-script` generates).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
