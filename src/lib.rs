//! Krafter: a self-hosted webhook relay.
//!
//! Providers POST to `/in/{slug}`; Krafter verifies, stores durably (in one
//! redb file by default, behind the backend-neutral `store::Store`) and fans
//! out to the user's destinations. The library holds everything so tests
//! and benchmarks can run the real server in-process. The layers and the
//! path of one webhook through them: `docs/ARCHITECTURE.md`.

pub mod alerts;
pub mod api;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod delivery;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod replay;
pub mod server;
pub mod stats;
pub mod store;
pub mod telemetry;
