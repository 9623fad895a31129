//! The dashboard over plain HTTP (no browser): sessions, cookie flags,
//! CSRF, scopes, sign-out and revocation, security headers, and every page
//! and form against a real server.

use crate::common;

use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::browser::Browser;
use crate::common::TestServer;

async fn source_count(server: &TestServer) -> usize {
    let (status, body) = server.get("/api/v1/webhooks/sources").await;
    assert_eq!(status, StatusCode::OK);
    body["data"].as_array().expect("list").len()
}

#[tokio::test]
async fn pages_need_a_session() {
    let server = TestServer::start().await;
    let mut b = Browser::new(&server.base);
    for path in [
        "/dashboard",
        "/dashboard/sources",
        "/dashboard/sources/new",
        "/dashboard/api-keys",
        "/dashboard/sources/src_01JAAAAAAAAAAAAAAAAAAAAAAA/events",
    ] {
        let page = b.get(path).await;
        if path == "/dashboard" {
            // The home page forwards to the sources page, which asks for a session.
            assert_eq!(page.location(), "/dashboard/sources");
            continue;
        }
        page.assert_sign_in_redirect();
        assert!(
            page.location().contains("next=%2Fdashboard"),
            "comes back afterwards: {}",
            page.location()
        );
    }
    // A made-up session cookie is no session.
    b.cookies
        .insert("krafter_session".into(), "forged-session-id".into());
    b.get("/dashboard/sources").await.assert_sign_in_redirect();
    // Writes without a session change nothing.
    let page = b
        .post(
            "/dashboard/sources",
            &[("name", "x"), ("provider", "none"), ("csrf", "x")],
        )
        .await;
    page.assert_sign_in_redirect();
    assert_eq!(source_count(&server).await, 0);

    // The sign-in page and the assets are public.
    let page = b.get("/dashboard/sign-in").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("name=\"key\""));
    for (asset, kind) in [
        ("dashboard.css", "text/css"),
        ("dashboard.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let page = b.get(&format!("/dashboard/assets/{asset}")).await;
        assert_eq!(page.status, StatusCode::OK, "{asset}");
        let ct = page.headers[CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with(kind), "{asset}: {ct}");
        // Nothing is fetched from anywhere else.
        assert!(!page.text.contains("https://"), "{asset} refers elsewhere");
        assert!(!page.text.contains("@import"), "{asset} imports");
    }
    assert_eq!(
        b.get("/dashboard/assets/nope.js").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.get("/dashboard/no-such-page").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn sign_in_makes_a_hardened_session_stored_only_as_a_hash() {
    let server = TestServer::start().await;
    let mut b = Browser::new(&server.base);

    // A wrong key: no session.
    let page = b.sign_in("krf_not_a_real_key_at_all_0000000000000").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.text.contains("not valid"));
    assert!(page.set_cookie("krafter_session").is_none());

    // A sign-in posted without the sign-in page's token is refused.
    let mut other = Browser::new(&server.base);
    let page = other
        .post(
            "/dashboard/sign-in",
            &[("csrf", "guess"), ("key", &server.admin_key)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.set_cookie("krafter_session").is_none());

    // The right key: a session cookie with every flag.
    let page = b.sign_in(&server.admin_key).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let cookie = page.set_cookie("krafter_session").expect("session cookie");
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let id = b.cookies["krafter_session"].clone();
    assert!(id.len() >= 43, "256-bit id: {id}");
    assert_eq!(
        b.get("/dashboard/sources").await.status,
        StatusCode::OK,
        "signed in"
    );

    // The database holds the id's SHA-256, never the id itself.
    let hash: [u8; 32] = Sha256::digest(id.as_bytes()).into();
    assert!(
        server.stored_contains(&hash).await,
        "the session's hash is stored"
    );
    assert!(
        !server.stored_contains(id.as_bytes()).await,
        "the session id itself is not stored"
    );

    // Sessions survive a restart (they are stored, not in memory).
    let server = server.restart().await;
    let mut b2 = Browser::new(&server.base);
    b2.cookies.insert("krafter_session".into(), id);
    assert_eq!(b2.get("/dashboard/sources").await.status, StatusCode::OK);

    // `next` brings the user back, but only inside the dashboard.
    let mut c = Browser::new(&server.base);
    let page = c.get("/dashboard/sign-in?next=/dashboard/api-keys").await;
    let token = page.csrf();
    let page = c
        .post(
            "/dashboard/sign-in",
            &[
                ("csrf", &token),
                ("key", &server.admin_key),
                ("next", "/dashboard/api-keys"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/dashboard/api-keys");
    let mut c = Browser::new(&server.base);
    let token = c.get("/dashboard/sign-in").await.csrf();
    let page = c
        .post(
            "/dashboard/sign-in",
            &[
                ("csrf", &token),
                ("key", &server.admin_key),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/dashboard/sources");
}

#[tokio::test]
async fn session_cookie_is_secure_over_tls() {
    let (server, cert_pem) = TestServer::start_tls(&["localhost"]).await;
    let port = server.server.as_ref().unwrap().addr().port();
    let ca = reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let mut b = Browser::with(
        &format!("https://localhost:{port}"),
        reqwest::Client::builder().add_root_certificate(ca),
    );
    let page = b.get("/dashboard/sign-in").await;
    let pre = page.set_cookie("krafter_sign_in").expect("sign-in cookie");
    assert!(pre.ends_with("; Secure"), "{pre}");
    let page = b.sign_in(&server.admin_key).await;
    let cookie = page.set_cookie("krafter_session").expect("session cookie");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Behind a TLS-terminating proxy, `server.public_url` tells.
    let proxied =
        TestServer::start_with(|c| c.server.public_url = "https://localhost:8443".into()).await;
    let mut b = Browser::new(&proxied.base);
    let page = b.sign_in(&proxied.admin_key).await;
    let cookie = page.set_cookie("krafter_session").expect("session cookie");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}

#[tokio::test]
async fn state_changing_forms_need_the_sessions_csrf_token() {
    let server = TestServer::start().await;
    let mut b = Browser::new(&server.base);
    let token = b.signed_in(&server.admin_key).await;
    let mut other = Browser::new(&server.base);
    let other_token = other.signed_in(&server.admin_key).await;
    assert_ne!(token, other_token, "tokens are per session");

    let fields = [("name", "Shop"), ("provider", "none")];
    for bad in [None, Some(""), Some("wrong"), Some(other_token.as_str())] {
        let mut form = fields.to_vec();
        if let Some(t) = bad {
            form.push(("csrf", t));
        }
        let page = b.post("/dashboard/sources", &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "csrf {bad:?}");
        assert!(page.text.contains("expired"), "{}", page.text);
    }
    assert_eq!(source_count(&server).await, 0, "nothing was created");

    // Sign-out is a state change too.
    let page = b.post("/dashboard/sign-out", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/dashboard/sources").await.status, StatusCode::OK);

    // A form that is not urlencoded is refused.
    let req = b
        .http
        .post(format!("{}/dashboard/sources", server.base))
        .json(&json!({"name": "x", "provider": "none", "csrf": token}));
    let page = b.send(req).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);

    let mut form = fields.to_vec();
    form.push(("csrf", &token));
    let page = b.post("/dashboard/sources", &form).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    assert!(page.location().starts_with("/dashboard/sources/src_"));
    assert_eq!(source_count(&server).await, 1);
}

#[tokio::test]
async fn a_read_only_key_sees_no_write_controls_and_cannot_write() {
    let server = TestServer::start().await;
    let source = server.create_source("Stripe production").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let (_, read_key) = server.create_key(&["webhooks:read"]).await;

    let mut b = Browser::new(&server.base);
    let token = b.signed_in(&read_key).await;
    let list = b.get("/dashboard/sources").await;
    assert!(list.text.contains("Stripe production"));
    assert!(
        !list.text.contains("New source"),
        "no create button for a read-only key"
    );
    assert!(!list.text.contains("API keys"), "no API keys link");
    let page = b.get(&format!("/dashboard/sources/{sid}")).await;
    assert_eq!(page.status, StatusCode::OK);
    // The only form that posts is sign-out.
    assert_eq!(
        page.text.matches("method=\"post\"").count(),
        1,
        "{}",
        page.text
    );
    assert!(!page.text.contains("Add a destination"));
    assert!(!page.text.contains("Settings"));
    let events = b.get(&format!("/dashboard/sources/{sid}/events")).await;
    assert_eq!(events.status, StatusCode::OK);
    assert!(!events.text.contains("Replay many events"));

    // The server refuses the writes anyway (the API's scope check).
    let page = b
        .post(
            "/dashboard/sources",
            &[("name", "x"), ("provider", "none"), ("csrf", &token)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text.contains("webhooks:write"), "{}", page.text);
    let page = b
        .post(
            &format!("/dashboard/sources/{sid}/delete"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = b
        .post(
            &format!("/dashboard/sources/{sid}/enabled"),
            &[("csrf", &token), ("enabled", "false")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(source_count(&server).await, 1);
    let (_, body) = server.get(&format!("/api/v1/webhooks/sources/{sid}")).await;
    assert_eq!(body["data"]["enabled"], true);
    // And API keys are for admins only.
    assert_eq!(
        b.get("/dashboard/api-keys").await.status,
        StatusCode::FORBIDDEN
    );
    let page = b
        .post(
            "/dashboard/api-keys",
            &[("csrf", &token), ("name", "x"), ("scopes", "admin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server() {
    let server = TestServer::start().await;
    let mut b = Browser::new(&server.base);
    let token = b.signed_in(&server.admin_key).await;
    let id = b.cookies["krafter_session"].clone();

    let page = b.post("/dashboard/sign-out", &[("csrf", &token)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/dashboard/sign-in"));
    let cleared = page.set_cookie("krafter_session").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // Replaying the old cookie does not bring the session back.
    b.cookies.insert("krafter_session".into(), id);
    b.get("/dashboard/sources").await.assert_sign_in_redirect();
}

#[tokio::test]
async fn revoking_a_key_ends_its_sessions() {
    let server = TestServer::start().await;
    let (key_id, key) = server.create_key(&["webhooks:write"]).await;
    let mut b = Browser::new(&server.base);
    b.signed_in(&key).await;
    let (status, _) = server.delete(&format!("/api/v1/api-keys/{key_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    b.get("/dashboard/sources").await.assert_sign_in_redirect();
    // And it can no longer sign in.
    assert_eq!(b.sign_in(&key).await.status, StatusCode::UNAUTHORIZED);

    // Revoking from the dashboard works the same way.
    let (key_id, key) = server.create_key(&["webhooks:read"]).await;
    let mut victim = Browser::new(&server.base);
    victim.signed_in(&key).await;
    let mut admin = Browser::new(&server.base);
    let token = admin.signed_in(&server.admin_key).await;
    let page = admin
        .post(
            &format!("/dashboard/api-keys/{key_id}/revoke"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    victim
        .get("/dashboard/sources")
        .await
        .assert_sign_in_redirect();
}

#[tokio::test]
async fn pages_carry_security_headers_and_stay_out_of_the_api_document() {
    let server = TestServer::start().await;
    let mut b = Browser::new(&server.base);
    b.signed_in(&server.admin_key).await;
    let page = b.get("/dashboard/sources").await;
    let h = |name: &str| page.headers[name].to_str().unwrap().to_string();
    assert!(h("content-security-policy").contains("default-src 'none'"));
    assert!(h("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("cache-control"), "no-store");
    assert!(h("content-type").starts_with("text/html"));
    // No external resource anywhere in a page.
    assert!(!page.text.contains("src=\"http"));
    assert!(!page.text.contains("href=\"http"));

    let (status, doc) = server.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    assert!(
        paths.keys().all(|p| !p.starts_with("/dashboard")),
        "dashboard routes are not API"
    );
}

#[tokio::test]
async fn api_keys_page_creates_a_key_shown_once_with_the_picked_scopes() {
    let server = TestServer::start().await;
    let mut b = Browser::new(&server.base);
    let token = b.signed_in(&server.admin_key).await;
    let page = b.get("/dashboard/api-keys?new").await;
    for scope in ["webhooks:read", "webhooks:write", "admin"] {
        assert!(
            page.text.contains(&format!("value=\"{scope}\"")),
            "scope picker offers {scope}"
        );
    }
    // Refused by the API: shown on the form, nothing made.
    let page = b
        .post("/dashboard/api-keys", &[("csrf", &token), ("name", "ci")])
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.text.contains("give at least one scope"),
        "{}",
        page.text
    );

    let page = b
        .post(
            "/dashboard/api-keys",
            &[
                ("csrf", &token),
                ("name", "ci"),
                ("scopes", "webhooks:read"),
                ("scopes", "webhooks:write"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let marker = "<code id=\"new-key\">";
    let start = page.text.find(marker).expect("key shown") + marker.len();
    let key = &page.text[start..start + page.text[start..].find('<').unwrap()];
    assert!(key.starts_with("krf_"));
    // The scopes picked, no more: it is not an admin key.
    let (status, body) = server
        .call(reqwest::Method::GET, "/api/v1/api-keys", Some(key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/webhooks/sources",
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = server.get("/api/v1/api-keys").await;
    let made = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .expect("listed");
    assert_eq!(made["scopes"], json!(["webhooks:read", "webhooks:write"]));
    let again = b.get("/dashboard/api-keys").await;
    assert!(!again.text.contains(key), "shown once");
}

/// Every page and form, driven as a person would with the keyboard: source
/// create/edit/disable/delete, destination create/edit/disable/rotate/
/// delete, events list with filters and paging, event page, replay, retry,
/// bulk replay.
#[tokio::test]
async fn every_page_and_form_works() {
    let server = TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        c.delivery.retry_schedule = vec![Duration::from_millis(20)];
        c.delivery.timeout = Duration::from_secs(2);
    })
    .await;
    let mut b = Browser::new(&server.base);
    let token = b.signed_in(&server.admin_key).await;
    let csrf = token.as_str();

    // Empty states say what to do next.
    let page = b.get("/dashboard/sources").await;
    assert!(page.text.contains("Create your first source"));
    assert_eq!(b.get("/dashboard/sources/new").await.status, StatusCode::OK);

    // Refused create: the API's message on the form.
    let page = b
        .post(
            "/dashboard/sources",
            &[("csrf", csrf), ("name", "S"), ("provider", "stripe")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text.contains("is required for this provider"));
    // A generic HMAC source with its settings.
    let page = b
        .post(
            "/dashboard/sources",
            &[
                ("csrf", csrf),
                ("name", "Custom"),
                ("provider", "generic_hmac"),
                ("signing_secret", "s3cret"),
                ("signature_header", "X-Sig"),
                ("encoding", "base64"),
                ("event_type_pointer", "/kind"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let custom = page.location().split('?').next().unwrap().to_string();
    let settings = b.get(&format!("{custom}/edit")).await;
    assert!(settings.text.contains("X-Sig") && settings.text.contains("/kind"));

    // A `none` source for the rest.
    let page = b
        .post(
            "/dashboard/sources",
            &[("csrf", csrf), ("name", "Test"), ("provider", "none")],
        )
        .await;
    let src = page.location().split('?').next().unwrap().to_string();
    let sid = src.rsplit('/').next().unwrap().to_string();
    let page = b.get(page.location()).await;
    assert!(page.text.contains("Source created"));
    assert!(page.text.contains("No destinations yet"));
    let (_, api_source) = server.get(&format!("/api/v1/webhooks/sources/{sid}")).await;
    let ingest = api_source["data"]["url"].as_str().unwrap().to_string();
    assert!(page.text.contains(&ingest), "ingest URL shown");
    let events = b.get(&format!("{src}/events")).await;
    assert!(events.text.contains("No events yet") && events.text.contains(&ingest));

    // Rename, disable, enable.
    let page = b
        .post(
            &format!("{src}/edit"),
            &[("csrf", csrf), ("name", "Test 2"), ("retention_days", "7")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let page = b
        .post(
            &format!("{src}/edit"),
            &[("csrf", csrf), ("name", "Test 2"), ("retention_days", "0")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text.contains("between 1 and 3650"));
    b.post(
        &format!("{src}/enabled"),
        &[("csrf", csrf), ("enabled", "false")],
    )
    .await;
    let (_, s) = server.get(&format!("/api/v1/webhooks/sources/{sid}")).await;
    assert_eq!(
        (s["data"]["name"].as_str(), s["data"]["enabled"].as_bool()),
        (Some("Test 2"), Some(false))
    );
    assert_eq!(s["data"]["retention_days"], 7);
    b.post(
        &format!("{src}/enabled"),
        &[("csrf", csrf), ("enabled", "true")],
    )
    .await;

    // Destinations: one that works, one that never answers (a closed port).
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good = format!("http://{}/hook", receiver.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "thanks" });
        let _ = axum::serve(receiver, app).await;
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let bad = format!("http://{closed}/hook");
    let page = b
        .post(
            &format!("{src}/destinations"),
            &[("csrf", csrf), ("url", "not a url"), ("event_filter", "")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text.contains("absolute URL"));
    let mut dest_ids = Vec::new();
    for url in [&good, &bad] {
        let page = b
            .post(
                &format!("{src}/destinations"),
                &[
                    ("csrf", csrf),
                    ("url", url),
                    ("event_filter", "order.*, ping"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert!(page.text.contains("id=\"new-secret\">whsec_"));
        let (_, list) = server
            .get(&format!("/api/v1/webhooks/sources/{sid}/destinations"))
            .await;
        dest_ids.push(list["data"][0]["id"].as_str().unwrap().to_string());
    }
    let (good_id, bad_id) = (dest_ids[0].clone(), dest_ids[1].clone());
    let dst = format!("{src}/destinations/{bad_id}");
    assert_eq!(b.get(&dst).await.status, StatusCode::OK);
    let page = b
        .post(&format!("{dst}/rotate-secret"), &[("csrf", csrf)])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("id=\"new-secret\">whsec_"));
    let page = b
        .post(
            &dst,
            &[
                ("csrf", csrf),
                ("url", &bad),
                ("event_filter", "order.*"),
                ("rate_limit", "5"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let (_, d) = server
        .get(&format!(
            "/api/v1/webhooks/sources/{sid}/destinations/{bad_id}"
        ))
        .await;
    assert_eq!(d["data"]["event_filter"], json!(["order.*"]));
    assert_eq!(d["data"]["rate_limit"], 5);

    // Events through the ingest URL.
    let http = reqwest::Client::new();
    for (i, kind) in ["order.created", "ping", "order.paid"].iter().enumerate() {
        let resp = http
            .post(&ingest)
            .json(&json!({"type": kind, "n": i, "note": "<b>not markup</b>"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let (_, list) = server
        .get(&format!("/api/v1/webhooks/sources/{sid}/events"))
        .await;
    let paid = list["data"][0]["id"].as_str().unwrap().to_string();
    let page = b.get(&format!("{src}/events")).await;
    for kind in ["order.created", "ping", "order.paid"] {
        assert!(page.text.contains(kind));
    }
    let page = b.get(&format!("{src}/events?type=order.*")).await;
    assert!(page.text.contains("order.paid") && !page.text.contains(">ping<"));
    let page = b.get(&format!("{src}/events?after=2999-01-01T00:00")).await;
    assert!(page.text.contains("No events match"));
    let page = b.get(&format!("{src}/events?before=yesterday")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("RFC 3339"), "bad filter explained");
    // Paging: two per page here via the API's limit, so follow the link.
    let (_, first) = server
        .get(&format!("/api/v1/webhooks/sources/{sid}/events?limit=1"))
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let page = b.get(&format!("{src}/events?cursor={cursor}")).await;
    assert!(page.text.contains("← Newest"));
    assert!(!page.text.contains("order.paid"));

    // The failing destination's delivery ends failed; the event page shows why.
    let event_page = format!("{src}/events/{paid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = b.get(&event_page).await;
        if page.text.contains("pill pill-bad") && page.text.contains("HTTP 200") {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries did not settle:\n{}",
            page.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        page.text.contains("&lt;b&gt;not markup&lt;/b&gt;"),
        "body escaped"
    );
    assert!(page.text.contains("connect"), "error kind shown");
    assert!(page.text.contains("thanks"), "response snippet shown");
    let (_, dl) = server
        .get(&format!(
            "/api/v1/webhooks/sources/{sid}/events/{paid}/deliveries"
        ))
        .await;
    let failed = dl["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["status"] == "failed")
        .expect("a failed delivery");
    let failed_id = failed["id"].as_str().unwrap();
    let page = b
        .post(
            &format!("{event_page}/deliveries/{failed_id}/retry"),
            &[("csrf", csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    assert!(b
        .get(page.location())
        .await
        .text
        .contains("immediate attempt"));

    // Replay: nothing ticked is refused with the API's reason; all
    // matching queues two; a ticked one queues one.
    let page = b
        .post(
            &format!("{event_page}/replay"),
            &[("csrf", csrf), ("mode", "chosen")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text.contains("name at least one destination"));
    let page = b
        .post(
            &format!("{event_page}/replay"),
            &[("csrf", csrf), ("mode", "all")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(b
        .get(page.location())
        .await
        .text
        .contains("queued to 2 destinations"));
    let page = b
        .post(
            &format!("{event_page}/replay"),
            &[
                ("csrf", csrf),
                ("mode", "chosen"),
                ("destination_ids", &good_id),
            ],
        )
        .await;
    assert!(b
        .get(page.location())
        .await
        .text
        .contains("queued to 1 destination."));

    // Bulk replay.
    let page = b
        .post(
            &format!("{src}/replay"),
            &[
                ("csrf", csrf),
                ("after", "2000-01-01T00:00"),
                ("type", "ping"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let events_page = b.get(page.location()).await.text;
    assert!(events_page.contains("Bulk replay queued: 1 events, 1 deliveries"));
    // The events page lists the replay job with its progress.
    assert!(events_page.contains("Recent bulk replays"), "{events_page}");
    assert!(events_page.contains("data-replay=\"rpl_"), "{events_page}");
    assert!(events_page.contains("1 / 1 events"), "{events_page}");
    assert!(events_page.contains("data-status=\"completed\""));

    // Disable (reason-free, by hand) and delete a destination; delete sources.
    b.post(
        &format!("{dst}/enabled"),
        &[("csrf", csrf), ("enabled", "false")],
    )
    .await;
    let page = b.get(&src).await;
    assert!(page.text.contains("pill pill-off"));
    assert_eq!(b.get(&format!("{dst}/delete")).await.status, StatusCode::OK);
    b.post(&format!("{dst}/delete"), &[("csrf", csrf)]).await;
    let confirm = b.get(&format!("{src}/delete")).await;
    assert!(confirm.text.contains("cannot be undone"));
    let page = b.post(&format!("{src}/delete"), &[("csrf", csrf)]).await;
    assert_eq!(page.location(), "/dashboard/sources?notice=source-deleted");
    b.post(&format!("{custom}/delete"), &[("csrf", csrf)]).await;
    assert_eq!(source_count(&server).await, 0);
    assert_eq!(b.get(&src).await.status, StatusCode::NOT_FOUND);
    // Ids that are not ids never reach the API.
    assert_eq!(
        b.get("/dashboard/sources/..%2Fapi-keys").await.status,
        StatusCode::NOT_FOUND
    );
}

/// SPEC §17: a stored body of 50,000 nested arrays used to be indented into
/// a page of gigabytes (and abort the server on every view). The page stays
/// bounded and shows the body as received.
#[tokio::test]
async fn a_deeply_nested_body_gives_a_bounded_page() {
    let server = TestServer::start().await;
    let source = server.create_none_source("nested").await;
    let sid = source["id"].as_str().unwrap();
    let body = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let event_id = server
        .ingest_bytes(
            source["slug"].as_str().unwrap(),
            "application/json",
            body.clone().into_bytes(),
        )
        .await;
    let mut b = Browser::new(&server.base);
    b.signed_in(&server.admin_key).await;
    let page = b
        .get(&format!("/dashboard/sources/{sid}/events/{event_id}"))
        .await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "{}",
        &page.text[..200.min(page.text.len())]
    );
    assert!(
        page.text.len() < body.len() + 64 * 1024,
        "page of {} bytes for a {}-byte body",
        page.text.len(),
        body.len()
    );
    assert!(
        page.text.contains(&"[".repeat(1000)),
        "the body is shown as received"
    );
    // The server is still up for the next view.
    let again = b
        .get(&format!("/dashboard/sources/{sid}/events/{event_id}"))
        .await;
    assert_eq!(again.status, StatusCode::OK);
}

/// SPEC §17: sign-in is limited per client address; past
/// `dashboard.sign_in_per_minute` the page answers 429 with `retry-after`,
/// even with a valid key.
#[tokio::test]
async fn sign_in_is_rate_limited_per_client_address() {
    let server = TestServer::start_with(|c| c.dashboard.sign_in_per_minute = 3).await;
    let mut b = Browser::new(&server.base);
    for _ in 0..3 {
        let page = b.sign_in("krf_not_a_real_key_at_all_0000000000000").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let page = b.sign_in(&server.admin_key).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.text);
    let retry: u64 = page.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(page.text.contains("Too many sign-in attempts"));
    assert!(page.set_cookie("krafter_session").is_none());
}

/// Issue #11: a person who opens the server's address lands on the
/// dashboard, not on a JSON 404.
#[tokio::test]
async fn the_root_redirects_to_the_dashboard() {
    let server = TestServer::start().await;
    let mut b = Browser::new(&server.base);
    let page = b.get("/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    assert_eq!(page.location(), "/dashboard");
    // Followed, it ends at the sign-in page.
    let page = b.get(page.location()).await;
    let page = b.get(page.location()).await;
    page.assert_sign_in_redirect();
}

/// Issue #11: the start-up log says where the dashboard is, built from
/// `server.public_url`, next to the "listening" line.
#[test]
fn the_start_up_log_prints_the_dashboard_url() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let public = "http://relay.example.invalid:8443";
    let mut child = common::krafter()
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KRAFTER_DELIVERY__LOOPBACK_ONLY", "true")
        .env("KRAFTER_SERVER__LISTEN", "127.0.0.1:0")
        .env("KRAFTER_SERVER__PUBLIC_URL", public)
        .env("KRAFTER_STORAGE__PATH", dir.path().join("data"))
        .env("KRAFTER_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn krafter");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut listening = false;
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                listening |= line.contains("listening");
                if line.contains(&format!("{public}/dashboard")) {
                    break true;
                }
                seen.push(line);
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no dashboard URL in the log:\n{}", seen.join("\n"));
    assert!(listening, "the URL comes after the listening line");
}

/// The part of an event page about one destination.
fn group_of<'a>(page: &'a str, destination: &str) -> &'a str {
    let start = page
        .find(&format!("data-destination=\"{destination}\""))
        .unwrap_or_else(|| panic!("no group for {destination}:\n{page}"));
    let rest = &page[start..];
    let end = rest.find("</article>").expect("group ends");
    &rest[..end]
}

/// The delivery ids of a group's attempt rows, in page order.
fn attempt_rows(group: &str) -> Vec<String> {
    group
        .split("<tr data-delivery-attempt=\"")
        .skip(1)
        .map(|row| row.split('"').next().unwrap().to_string())
        .collect()
}

/// Issue #11: an event replayed several times to a destination shows one
/// table per destination holding every attempt of every delivery, newest
/// first with its delivery id; a pending delivery waiting for its next
/// retry has "Retry now", which sends it at once.
#[tokio::test]
async fn an_event_page_groups_attempts_per_destination_and_retries_pending_now() {
    use common::receiver::{Receiver, Reply};
    let server = TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        c.delivery.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    // /a always accepts; /b refuses its first request only.
    let receiver = Receiver::start(|r| {
        if r.path == "/b" && r.path_index == 0 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let source = server.create_none_source("grouped").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let a = server
        .create_destination(&sid, json!({"url": receiver.url("/a")}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = server
        .create_destination(&sid, json!({"url": receiver.url("/b")}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let evt = server
        .ingest_json(&slug, &json!({"type": "order.paid"}))
        .await;
    let api = format!("/api/v1/webhooks/sources/{sid}/events/{evt}");
    // Three replays to /a, one after the other.
    for n in 1..=3 {
        receiver
            .wait_for_path("/a", n, Duration::from_secs(10))
            .await;
        let (status, body) = server
            .post(&format!("{api}/replay"), json!({"destination_ids": [a]}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    receiver
        .wait_for_path("/a", 4, Duration::from_secs(10))
        .await;
    let list = common::poll(Duration::from_secs(10), "deliveries settle", || async {
        let (_, body) = server.get(&format!("{api}/deliveries")).await;
        let list = body["data"].as_array().cloned().unwrap_or_default();
        let settled = list.iter().all(|d| {
            d["status"] == "succeeded"
                || (d["status"] == "pending" && d["attempts"].as_array().unwrap().len() == 1)
        });
        (list.len() == 5 && settled).then_some(list)
    })
    .await;
    let mut to_a: Vec<String> = list
        .iter()
        .filter(|d| d["destination_id"] == a.as_str())
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    to_a.sort();
    to_a.reverse(); // ids are time-sortable: newest first
    let pending = list
        .iter()
        .find(|d| d["destination_id"] == b.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut browser = Browser::new(&server.base);
    let csrf = browser.signed_in(&server.admin_key).await;
    let event_page = format!("/dashboard/sources/{sid}/events/{evt}");
    let page = browser.get(&event_page).await;
    assert_eq!(page.status, StatusCode::OK);
    // One table per destination, not one per delivery.
    assert_eq!(page.text.matches("<table class=\"attempts\"").count(), 2);
    let group_a = group_of(&page.text, &a);
    assert_eq!(attempt_rows(group_a), to_a, "every attempt, newest first");
    assert_eq!(group_a.matches("<table").count(), 1);
    assert!(
        !group_a.contains("Retry now"),
        "succeeded: nothing to retry"
    );
    let group_b = group_of(&page.text, &b);
    assert_eq!(attempt_rows(group_b), vec![pending.clone()]);
    assert!(group_b.contains("next attempt"), "{group_b}");
    let retry = format!("{event_page}/deliveries/{pending}/retry");
    assert!(
        group_b.contains(&format!("action=\"{retry}\"")),
        "a pending delivery can be retried now:\n{group_b}"
    );

    // Retry now: sent within seconds instead of in an hour.
    let answer = browser.post(&retry, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let hits = receiver
        .wait_for_path("/b", 2, Duration::from_secs(10))
        .await;
    assert_eq!(hits[1].header("krafter-attempt"), Some("2"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = browser.get(answer.location()).await;
        if group_of(&page.text, &b).contains("data-status=\"succeeded\"") {
            break page;
        }
        assert!(Instant::now() < deadline, "retry not shown:\n{}", page.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(page.text.contains("immediate attempt"));
    assert_eq!(
        attempt_rows(group_of(&page.text, &b)),
        vec![pending.clone(), pending.clone()]
    );
}

/// Issue #11: one page with every source's events, newest first, and a
/// search box that finds an event by Krafter's id or the provider's id.
#[tokio::test]
async fn all_events_page_lists_every_source_and_finds_by_either_id() {
    let server = TestServer::start().await;
    let secret = "whsec_dashboard_search";
    let (status, stripe) = server
        .post(
            "/api/v1/webhooks/sources",
            json!({"name": "Stripe live", "provider": "stripe", "signing_secret": secret}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stripe}");
    let stripe_id = stripe["data"]["id"].as_str().unwrap().to_string();
    let plain = server.create_none_source("Plain one").await;
    let plain_id = plain["id"].as_str().unwrap().to_string();
    let plain_slug = plain["slug"].as_str().unwrap().to_string();

    let first = server
        .ingest_json(&plain_slug, &json!({"type": "plain.first"}))
        .await;
    let body = json!({"id": "evt_1NxDashSearch", "type": "invoice.paid"}).to_string();
    let resp = reqwest::Client::new()
        .post(stripe["data"]["url"].as_str().unwrap())
        .header("content-type", "application/json")
        .header("stripe-signature", common::stripe_signature(secret, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let paid = resp.json::<serde_json::Value>().await.unwrap()["data"]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let last = server
        .ingest_json(&plain_slug, &json!({"type": "plain.last"}))
        .await;

    let mut b = Browser::new(&server.base);
    b.get("/dashboard/events").await.assert_sign_in_redirect();
    b.signed_in(&server.admin_key).await;
    let page = b.get("/dashboard/events").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page
        .text
        .contains("href=\"/dashboard/events\" aria-current=\"page\""));
    // Newest first, across both sources, with names and provider ids.
    let at = |id: &str| page.text.find(&format!("data-event=\"{id}\"")).unwrap();
    assert!(
        at(&last) < at(&paid) && at(&paid) < at(&first),
        "newest first"
    );
    assert!(page.text.contains("Stripe live") && page.text.contains("Plain one"));
    assert!(page.text.contains("evt_1NxDashSearch"));
    assert!(page.text.contains(&format!(
        "href=\"/dashboard/sources/{stripe_id}/events/{paid}\""
    )));
    assert!(page.text.contains(&format!(
        "href=\"/dashboard/sources/{plain_id}/events/{first}\""
    )));

    // By the provider's id.
    let page = b.get("/dashboard/events?q=evt_1NxDashSearch").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains(&format!("data-event=\"{paid}\"")));
    assert_eq!(page.text.matches("data-event=").count(), 1, "{}", page.text);
    // By Krafter's id (spaces around a pasted id are ignored).
    let page = b.get(&format!("/dashboard/events?q=+{first}+")).await;
    assert!(page.text.contains(&format!("data-event=\"{first}\"")));
    assert_eq!(page.text.matches("data-event=").count(), 1);
    // Nothing found, and a search the API refuses, both say so.
    let page = b.get("/dashboard/events?q=evt_1NxNope").await;
    assert!(page.text.contains("No event found"));
    let long = "x".repeat(1100);
    let page = b.get(&format!("/dashboard/events?q={long}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("1 to 1024 characters"), "{}", page.text);
}

/// Issue #11: "Send a test event" on a signed (Stripe) source: the event is
/// stored, shown, and delivered to the destination even though its filter
/// would not match; a read-only key sees no button and cannot send one.
#[tokio::test]
async fn a_source_page_sends_a_test_event() {
    use common::receiver::Receiver;
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let receiver = Receiver::ok().await;
    let (status, source) = server
        .post(
            "/api/v1/webhooks/sources",
            json!({"name": "Stripe live", "provider": "stripe", "signing_secret": "whsec_x"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let sid = source["data"]["id"].as_str().unwrap().to_string();
    server
        .create_destination(
            &sid,
            json!({"url": receiver.url("/hook"), "event_filter": ["invoice.*"]}),
        )
        .await;

    let mut b = Browser::new(&server.base);
    let csrf = b.signed_in(&server.admin_key).await;
    let src = format!("/dashboard/sources/{sid}");
    let page = b.get(&src).await;
    let action = format!("action=\"{src}/test-event\"");
    assert!(page.text.contains(&action), "{}", page.text);
    assert!(page.text.contains("Send a test event"));
    // The events tab's empty state offers it too.
    assert!(b.get(&format!("{src}/events")).await.text.contains(&action));

    let answer = b
        .post(&format!("{src}/test-event"), &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    assert!(
        answer.location().starts_with(&format!("{src}/events/evt_")),
        "{}",
        answer.location()
    );
    let evt = answer.location()[src.len() + 8..]
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let page = b.get(answer.location()).await;
    assert!(page.text.contains("Test event stored"));
    assert!(page.text.contains("krafter.test"));
    let hits = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].header("webhook-id"), Some(evt.as_str()));
    assert_eq!(hits[0].header("krafter-event-type"), Some("krafter.test"));

    // Read-only: no button; a forged post is refused and stores nothing.
    let (_, read_key) = server.create_key(&["webhooks:read"]).await;
    let mut r = Browser::new(&server.base);
    let read_csrf = r.signed_in(&read_key).await;
    assert!(!r.get(&src).await.text.contains(&action));
    let page = r
        .post(&format!("{src}/test-event"), &[("csrf", &read_csrf)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text);
    let (_, list) = server
        .get(&format!("/api/v1/webhooks/sources/{sid}/events"))
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}
