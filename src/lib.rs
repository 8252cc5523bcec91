//! Reservoir: an offline-first reservation service.
//!
//! Every write is committed to a local SQLite file by a single writer task
//! (group commit) and answered at once; reads come from a read-only pool.
//! [`launch`] runs the whole service on a listener until `shutdown` resolves,
//! so the binary, the integration tests and the benches run the same code.

pub mod cache;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod store;
pub mod sync;

mod app;
pub mod shutdown;
pub mod telemetry;

pub use app::{App, Service, launch};
pub use config::Config;
