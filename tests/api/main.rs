//! HTTP integration tests: every test starts its own server on a fresh
//! temporary data directory and talks to it over real HTTP.

mod helpers;

mod auth;
mod availability;
mod cache;
mod cluster;
mod concurrency;
mod drain;
mod errors;
mod idempotency;
mod listing;
mod openapi;
mod operations;
mod reservations;
mod resources;
mod restart;
mod shared_keys;
mod support;
mod sync;
