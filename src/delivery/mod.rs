//! Outgoing deliveries (SPEC §9): per-destination lanes over the durable
//! queue, Standard Webhooks signing, an SSRF-guarded pooled HTTPS client,
//! retries with jitter, auto-disable.

pub mod client;
pub mod engine;
pub mod mtls;
pub mod oauth;
pub mod resolve;
pub mod retry;
pub mod signer;
pub mod ssrf;
pub mod worker;
