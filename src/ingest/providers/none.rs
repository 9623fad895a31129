//! `none`: no verification, for trying Krafter out or for senders that sign
//! nothing. Every request is accepted; the caller is expected to log a
//! warning (this module does no I/O).

use serde_json::Value;

use super::common::body_event_type;
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The `none` provider: accepts everything. (Not named `None`, which
/// would shadow `Option::None` in this module.)
pub(crate) struct NoVerification;

impl Provider for NoVerification {
    fn label(&self) -> &'static str {
        "None (no verification; testing only)"
    }

    fn setup_hint(&self) -> &'static str {
        "This source verifies nothing: anyone with the URL can send events. Use it for testing only."
    }

    fn verifies(&self) -> bool {
        false
    }

    fn verify(
        &self,
        _config: Option<&GenericHmacConfig>,
        _inbound: &Inbound<'_>,
        _secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        Ok(())
    }

    fn event_type(
        &self,
        _config: Option<&GenericHmacConfig>,
        _inbound: &Inbound<'_>,
        json: Option<&Value>,
    ) -> String {
        event_type(json)
    }

    // No provider event id: without a signature an id would let anyone
    // suppress a real event by sending a forged one first.
}

/// Body `type` if present, else `unknown`.
fn event_type(json: Option<&Value>) -> String {
    body_event_type(json, "type")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_from_body_or_unknown() {
        let json = serde_json::json!({"type": "thing.happened"});
        assert_eq!(event_type(Some(&json)), "thing.happened");
        assert_eq!(event_type(Some(&serde_json::json!({"type": 3}))), "3");
        assert_eq!(
            event_type(Some(&serde_json::json!({"kind": "x"}))),
            "unknown"
        );
        assert_eq!(event_type(Some(&serde_json::json!(["type"]))), "unknown");
        assert_eq!(event_type(None), "unknown");
    }
}
