//! The domain types every layer shares: ids, times, records, the provider
//! kinds and the event-type filter.
//!
//! `model` depends on nothing else in the crate, so storage, ingest,
//! delivery, operations, the API and the dashboard can all speak it without
//! depending on each other.

pub mod body_filter;
pub mod filter;
pub mod ids;
pub mod provider;
pub mod records;
pub mod time;
pub mod trace;
