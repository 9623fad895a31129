//! Dashboard sessions: who is signed in, and the proof that a form came
//! from our own page.
//!
//! A session is made by signing in with an API key (`crate::ops::sessions`
//! stores it and finds it again). Here: the browser side — the session id
//! in an `HttpOnly; SameSite=Strict; Path=/dashboard` cookie (`Secure` over
//! TLS), the CSRF token every state-changing form echoes, and where a
//! sign-in may send the user back to.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use subtle::ConstantTimeEq;

use super::error::DashboardError;
use super::form::Form;
use super::Dashboard;
pub use crate::ops::sessions::{random_token, Session, SESSION_TTL_MS};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "krafter_session";
/// Name of the short-lived cookie that protects the sign-in form itself
/// (there is no session yet to bind a token to).
pub const SIGN_IN_COOKIE: &str = "krafter_sign_in";
/// Name of the hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// How long a sign-in form stays usable.
const SIGN_IN_TTL_SECS: i64 = 3600;

/// Constant-time equality of two tokens, so timing says nothing about how
/// much of a guess was right.
pub fn tokens_match(expected: &str, given: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value with the flags every dashboard cookie carries.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    )
}

/// The session cookie for a new session.
pub fn session_cookie(id: &str, secure: bool) -> String {
    set_cookie(SESSION_COOKIE, id, SESSION_TTL_MS / 1000, secure)
}

/// The cookie that binds a sign-in form to this browser.
pub fn sign_in_cookie(token: &str, secure: bool) -> String {
    set_cookie(SIGN_IN_COOKIE, token, SIGN_IN_TTL_SECS, secure)
}

/// Where to come back to after signing in: only paths inside the
/// dashboard, so the sign-in page cannot be used as an open redirect.
pub fn safe_next(next: Option<&str>) -> Option<String> {
    let next = next?;
    let ok = next.starts_with("/dashboard/")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    ok.then(|| next.to_string())
}

impl FromRequestParts<Dashboard> for Session {
    type Rejection = DashboardError;

    /// A request without a valid session is sent to the sign-in page,
    /// remembering (for GETs) where it was going.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let next = (parts.method == Method::GET)
            .then(|| parts.uri.path_and_query().map(|p| p.as_str().to_string()))
            .flatten();
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(DashboardError::SignIn { next });
        };
        if id.is_empty() || id.len() > 128 {
            return Err(DashboardError::SignIn { next });
        }
        match state.ops.session(id).await? {
            Some(session) => Ok(session),
            None => Err(DashboardError::SignIn { next }),
        }
    }
}

/// A state-changing form post from a signed-in user whose CSRF token
/// matched. Every dashboard POST but sign-in takes this, so none can forget
/// the check.
pub struct SignedForm {
    pub session: Session,
    pub form: Form,
}

impl FromRequest<Dashboard> for SignedForm {
    type Rejection = DashboardError;

    async fn from_request(request: Request, state: &Dashboard) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let form = Form::from_request(Request::from_parts(parts, body), state).await?;
        let given = form.get(CSRF_FIELD).unwrap_or("");
        if !tokens_match(&session.csrf, given) {
            return Err(DashboardError::Csrf);
        }
        Ok(SignedForm { session, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_cookie_safe() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, random_token());
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "ab"));
        assert!(!tokens_match("abc", ""));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; krafter_session=xyz".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "krafter"), None);
    }

    #[test]
    fn cookie_flags() {
        let c = session_cookie("id", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(c.contains("Path=/dashboard") && !c.contains("Secure"));
        assert!(session_cookie("id", true).ends_with("; Secure"));
    }

    #[test]
    fn next_stays_inside_the_dashboard() {
        assert_eq!(
            safe_next(Some("/dashboard/sources?x=1")).as_deref(),
            Some("/dashboard/sources?x=1")
        );
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/dashboard//evil",
            "/api/v1/api-keys",
            "/dashboard/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad}");
        }
    }
}
