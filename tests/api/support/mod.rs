//! Test infrastructure beyond the HTTP helpers: PostgreSQL servers and
//! databases for the sync tests.

pub mod postgres;
pub mod proxy;
pub mod redis;
