//! Inbound webhooks: `POST /in/{slug}` (SPEC §7–§8).

pub mod filter;
pub mod providers;
pub mod route;
