//! Which inbound request headers belong to the webhook and which to the
//! connection it came over. Ingest stores only the former and delivery
//! forwards only those, so both sides share this one rule.

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The sender's credentials and the proxies it passed through: they are
/// about who sent the request to Krafter, not part of the webhook, and
/// storing or forwarding them would hand a sender's secrets to every
/// destination and every reader of the event (SPEC §17).
const SENDER_ONLY: [&str; 6] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "host",
];

/// Whether a header is hop-by-hop.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Whether a destination may not set this header itself (SPEC §13):
/// hop-by-hop names, `host`, `content-length`, `content-type`,
/// `user-agent`, `webhook-*` and `krafter-*` (lower-case name), and the
/// W3C trace context (`traceparent`, `tracestate`), which with tracing on
/// names the attempt's span (SPEC §15) and must not be overridden.
pub fn is_refused_destination_header(name: &str) -> bool {
    is_hop_by_hop(name)
        || matches!(
            name,
            "host"
                | "content-length"
                | "content-type"
                | "user-agent"
                | "traceparent"
                | "tracestate"
        )
        || name.starts_with("webhook-")
        || name.starts_with("krafter-")
}

/// Whether an inbound header (lower-case name) is kept with an event: not
/// hop-by-hop, not the sender's credentials or proxy hops. `connection_listed`
/// holds the names the request's `Connection` header declared hop-by-hop.
pub fn is_kept_with_event(name: &str, connection_listed: &[String]) -> bool {
    !(is_hop_by_hop(name)
        || SENDER_ONLY.contains(&name)
        || name.starts_with("x-forwarded-")
        || connection_listed.iter().any(|l| l == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_proxy_hops_and_hop_by_hop_headers_are_not_kept() {
        for name in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "host",
            "connection",
            "transfer-encoding",
        ] {
            assert!(!is_kept_with_event(name, &[]), "{name}");
        }
        assert!(!is_kept_with_event("x-custom", &["x-custom".to_string()]));
        for name in [
            "stripe-signature",
            "content-type",
            "x-github-event",
            "x-forwarded",
        ] {
            assert!(is_kept_with_event(name, &[]), "{name}");
        }
    }
}
