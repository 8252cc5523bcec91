//! Persistence. `sqlite` is the local store every request is answered from;
//! later backends (the central PostgreSQL) sit beside it.

pub mod postgres;
pub mod sqlite;
