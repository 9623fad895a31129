//! `none`: no verification, for trying Krafter out or for senders that sign
//! nothing. Every request is accepted; the caller is expected to log a
//! warning (this module does no I/O).

use serde_json::Value;

use super::common::{body_field, event_type_or_unknown};

/// Body `type` if present, else `unknown`. No provider event id: without a
/// signature an id would let anyone suppress a real event by sending a
/// forged one first.
pub(crate) fn event_type(json: Option<&Value>) -> String {
    event_type_or_unknown(body_field(json, "type").as_deref())
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
