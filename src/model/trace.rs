//! W3C Trace Context (`traceparent`) as Krafter keeps it with an event: the
//! ingest span's trace id, span id and flags, so that every delivery
//! attempt of the event — after a restart, or on another node — joins the
//! trace of the ingest that stored it (SPEC §15).
//!
//! Parsing follows the W3C Trace Context recommendation (level 1): an
//! invalid header is simply not a context (never an error to the sender).
//! This module knows nothing of OpenTelemetry; `crate::telemetry` converts.

use serde::{Deserialize, Serialize};

/// The W3C header that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Vendor data that travels with `traceparent` (same trace only).
pub const TRACESTATE: &str = "tracestate";

/// A span's place in a trace, as `traceparent` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// `trace-flags`; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// Parses one `traceparent` value; `None` when it is not valid.
    ///
    /// Version `00` must be exactly `00-<32 hex>-<16 hex>-<2 hex>`. A later
    /// version is read by its first four fields (what follows must start
    /// with `-`), as the recommendation asks; `ff` is never valid. Hex is
    /// lower-case only, and all-zero ids are invalid.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = hex_byte(&bytes[0..2])?;
        if version == 0xff || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        match (version, bytes.len()) {
            (0, 55) => {}
            (0, _) => return None,
            (_, 55) => {}
            (_, _) if bytes[55] == b'-' => {}
            _ => return None,
        }
        let mut trace_id = [0u8; 16];
        for (i, out) in trace_id.iter_mut().enumerate() {
            *out = hex_byte(&bytes[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, out) in span_id.iter_mut().enumerate() {
            *out = hex_byte(&bytes[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&bytes[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            // A later version's flags are read, but only the bits version
            // 00 defines are kept.
            flags: if version == 0 { flags } else { flags & 0x01 },
        })
    }

    /// The context of a request's headers: its single valid `traceparent`
    /// (two or more `traceparent` headers are no context).
    pub fn from_headers<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<TraceContext> {
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        TraceContext::parse(std::str::from_utf8(first).ok()?)
    }

    /// The `traceparent` stored with an event (its inbound headers), if one
    /// valid header is there: what an event stored with tracing off still
    /// carries.
    pub fn from_stored_headers(headers: &[(String, Vec<u8>)]) -> Option<TraceContext> {
        TraceContext::from_headers(
            headers
                .iter()
                .filter(|(name, _)| name == TRACEPARENT)
                .map(|(_, value)| value.as_slice()),
        )
    }

    /// Version `00` text, as sent in a `traceparent` header.
    pub fn to_traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }

    /// Whether the sender recorded (sampled) this span.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }
}

/// Two lower-case hex digits.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let c = TraceContext::parse(VALID).unwrap();
        assert_eq!(c.trace_id[0], 0x4b);
        assert_eq!(c.trace_id[15], 0x36);
        assert_eq!(c.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(c.flags, 1);
        assert!(c.sampled());
        assert_eq!(c.to_traceparent(), VALID);
    }

    #[test]
    fn invalid_traceparents_are_no_context() {
        for bad in [
            "",
            "garbage",
            // Upper-case hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            // All-zero trace id, span id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff, a non-hex version.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 with more after it, short fields, wrong separators.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            // A later version must be followed by `-` if longer.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_fields() {
        let c = TraceContext::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes-next",
        )
        .unwrap();
        assert_eq!(c.flags, 0x01);
        assert_eq!(
            c.to_traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn two_traceparent_headers_are_no_context() {
        let one = [VALID.as_bytes()];
        assert!(TraceContext::from_headers(one.into_iter()).is_some());
        let two = [VALID.as_bytes(), VALID.as_bytes()];
        assert_eq!(TraceContext::from_headers(two.into_iter()), None);
        assert_eq!(TraceContext::from_headers(std::iter::empty()), None);
        let stored = vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            ("traceparent".to_string(), VALID.as_bytes().to_vec()),
        ];
        assert_eq!(
            TraceContext::from_stored_headers(&stored),
            TraceContext::parse(VALID)
        );
    }
}
