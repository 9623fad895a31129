//! Event-type filters: `invoice.paid`, `invoice.*`, `*`.
//!
//! One function, shared by ingest (which destinations get a delivery) and
//! replay, so "matches" means the same thing everywhere.

/// Whether `event_type` passes a destination's filter. An empty filter
/// passes everything; otherwise any pattern may match, where `*` stands for
/// any run of characters (including none) and everything else is literal.
pub fn matches(patterns: &[String], event_type: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| glob(p.as_bytes(), event_type.as_bytes()))
}

/// Wildcard match in O(len(pattern) × len(text)) worst case, without
/// recursion (patterns come from users; no exponential blow-up).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last `*` swallow one more character and retry.
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(patterns: &[&str]) -> Vec<String> {
        patterns.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(matches(&[], "invoice.paid"));
        assert!(matches(&[], ""));
    }

    #[test]
    fn exact_patterns_match_only_themselves() {
        let filter = f(&["invoice.paid", "charge.succeeded"]);
        assert!(matches(&filter, "invoice.paid"));
        assert!(matches(&filter, "charge.succeeded"));
        assert!(!matches(&filter, "invoice.paid.extra"));
        assert!(!matches(&filter, "invoice.pai"));
        assert!(!matches(&filter, "Invoice.paid"), "case matters");
    }

    #[test]
    fn star_matches_any_run() {
        assert!(matches(&f(&["invoice.*"]), "invoice.paid"));
        assert!(matches(&f(&["invoice.*"]), "invoice."));
        assert!(!matches(&f(&["invoice.*"]), "invoices.paid"));
        assert!(matches(&f(&["*"]), "anything at all"));
        assert!(matches(&f(&["*.succeeded"]), "payment_intent.succeeded"));
        assert!(!matches(&f(&["*.succeeded"]), "payment_intent.failed"));
        assert!(matches(&f(&["a*b*c"]), "aXXbYYc"));
        assert!(matches(&f(&["a*b*c"]), "abc"));
        assert!(!matches(&f(&["a*b*c"]), "acb"));
        assert!(matches(&f(&["**"]), ""));
        assert!(matches(
            &f(&["customer.*.updated"]),
            "customer.subscription.updated"
        ));
    }

    #[test]
    fn dots_and_regex_characters_are_literal() {
        assert!(!matches(&f(&["invoice.paid"]), "invoiceXpaid"));
        assert!(matches(&f(&["a+b?(c)"]), "a+b?(c)"));
        assert!(!matches(&f(&["a+b"]), "aab"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = f(&["*a*a*a*a*a*a*a*a*a*a*b"]);
        let text = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!matches(&pattern, &text));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
