//! Inbound webhooks: `POST /in/{slug}` (SPEC §7–§8).

pub mod providers;
pub mod route;
