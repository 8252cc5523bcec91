//! Domain types and rules, free of HTTP and SQL: parsed values ("parse, don't
//! validate"), the capacity arithmetic and the slot calendar.

pub mod auth;
pub mod capacity;
pub mod digest;
pub mod quota;
pub mod reservation;
pub mod resource;
pub mod schedule;
pub mod time;
pub mod validation;
pub mod version;
