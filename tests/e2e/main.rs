//! Krafter's end-to-end tests as one test binary: each capability is a
//! module here, all sharing the helpers in [`common`]. One binary links the
//! server once instead of once per file; run one capability with
//! `cargo test --test e2e <module>::` (for example `dashboard_browser`).
//!
//! Everything runs in one process, so no test may change process-wide
//! state another could see (environment variables, the current directory,
//! a global subscriber or crypto provider): servers are configured through
//! their `Config` and spawned binaries through their own environment.

mod common;

mod alerts;
mod api_errors;
mod api_keys;
mod audit_log;
mod cli;
mod dashboard;
mod dashboard_browser;
mod delivery;
mod delivery_options;
mod destinations;
mod durability;
mod events;
mod events_stream;
mod first_hour;
mod hardening;
mod ingest;
mod ingest_providers;
mod openapi;
mod operations;
mod overview;
mod quickstart;
mod replay_jobs;
mod server;
mod several_nodes;
mod sources;
mod tracing;
