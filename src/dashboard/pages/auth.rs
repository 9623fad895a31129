//! Signing in with an API key, and signing out.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::{notice, QueryMap};
use crate::dashboard::error::DashboardError;
use crate::dashboard::form::Form;
use crate::dashboard::session::{
    self, cookie, random_token, safe_next, set_cookie, tokens_match, SignedForm, CSRF_FIELD,
    SESSION_COOKIE, SIGN_IN_COOKIE,
};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;

/// The sign-in page (public). It sets a one-off cookie whose value the form
/// echoes, so a sign-in can only be posted from this page in this browser
/// (no login CSRF).
pub async fn sign_in_page(State(d): State<Dashboard>, Query(query): Query<QueryMap>) -> Response {
    let token = random_token();
    let next = safe_next(query.get("next").map(String::as_str));
    let body = form(&token, next.as_deref(), None, notice(&query));
    with_sign_in_cookie(
        views::respond(StatusCode::OK, body),
        &token,
        d.secure_cookies(),
    )
}

fn with_sign_in_cookie(mut response: Response, token: &str, secure: bool) -> Response {
    if let Ok(value) = HeaderValue::from_str(&session::sign_in_cookie(token, secure)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn form(token: &str, next: Option<&str>, error: Option<&str>, notice: Option<Markup>) -> Markup {
    let body = html! {
        section.sign-in.card {
            h1 { "Sign in to Krafter" }
            @if let Some(n) = notice { (n) }
            p.muted {
                "Use an API key. On first start Krafter wrote an admin key to "
                code { "<storage.path>/admin.key" }
                " (by default " code { "./krafter-data/admin.key" } ")."
            }
            @if let Some(error) = error {
                div.alert role="alert" id="sign-in-error" { (error) }
            }
            form method="post" action="/dashboard/sign-in" {
                input type="hidden" name=(CSRF_FIELD) value=(token);
                @if let Some(next) = next { input type="hidden" name="next" value=(next); }
                label for="key" { "API key" }
                input #key type="password" name="key" required autocomplete="current-password"
                    placeholder="krf_…" spellcheck="false" autofocus
                    aria-describedby=[error.map(|_| "sign-in-error")];
                button.btn.primary type="submit" { "Sign in" }
            }
        }
    };
    views::page("Sign in", None, Nav::None, body)
}

/// Checks the key and starts a session.
pub async fn sign_in(
    State(d): State<Dashboard>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form_data: Form,
) -> Result<Response, DashboardError> {
    let secure = d.secure_cookies();
    let next = safe_next(form_data.get("next"));
    let fresh = random_token();
    let again = |status: StatusCode, message: &str| {
        with_sign_in_cookie(
            views::respond(status, form(&fresh, next.as_deref(), Some(message), None)),
            &fresh,
            secure,
        )
    };
    // Counted before anything is checked, so failures and successes alike
    // use the budget. Requests that did not come over a socket (none in
    // production) have no address to count.
    if let Some(Extension(ConnectInfo(addr))) = peer {
        if let Err(retry_after) = d.sign_in_throttle.attempt(addr.ip()) {
            let mut response = again(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many sign-in attempts from your address. Try again in {retry_after} s."
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Ok(response);
        }
    }
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    let given = form_data.get(CSRF_FIELD).unwrap_or("");
    if expected.is_empty() || !tokens_match(expected, given) {
        return Ok(again(
            StatusCode::FORBIDDEN,
            "This sign-in form expired or did not come from this page. Try again.",
        ));
    }
    let key = form_data.get("key").unwrap_or("").trim();
    let Some((id, caller)) = d.ops.sign_in(key).await? else {
        return Ok(again(
            StatusCode::UNAUTHORIZED,
            "That API key is not valid: it is unknown or was revoked.",
        ));
    };
    tracing::info!(key_id = %caller.key_id.to_string(), "dashboard sign-in");
    let mut response = views::see_other(next.as_deref().unwrap_or("/dashboard/sources"));
    let cookies = [
        session::session_cookie(&id, secure),
        set_cookie(SIGN_IN_COOKIE, "", 0, secure),
    ];
    for c in cookies {
        if let Ok(value) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Ends the session on the server and clears the cookie.
pub async fn sign_out(
    State(d): State<Dashboard>,
    signed: SignedForm,
) -> Result<Response, DashboardError> {
    d.ops.sign_out(&signed.session).await?;
    let mut response = views::see_other("/dashboard/sign-in?notice=signed-out");
    if let Ok(value) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0, d.secure_cookies()))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}
