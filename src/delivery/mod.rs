//! Outgoing deliveries.

pub mod ssrf;
