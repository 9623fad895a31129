//! Inbound webhooks: `POST /in/{slug}`.

pub mod providers;
