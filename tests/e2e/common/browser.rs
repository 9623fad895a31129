//! A minimal browser for the dashboard tests: it keeps cookies and never
//! follows redirects, so each answer can be checked as sent.

use std::collections::HashMap;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

/// A minimal browser: remembers cookies, never follows redirects, so each
/// answer can be checked as sent.
pub struct Browser {
    /// The client, for requests the helpers below do not make.
    pub http: reqwest::Client,
    base: String,
    /// Cookie name → value, as the server last set them.
    pub cookies: HashMap<String, String>,
}

/// One answer, as the server sent it.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }

    /// The CSRF token embedded in the page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self
            .text
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field in page:\n{}", self.text))
            + marker.len();
        let end = self.text[start..].find('"').expect("closing quote") + start;
        self.text[start..end].to_string()
    }

    pub fn assert_sign_in_redirect(&self) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.text);
        assert!(
            self.location().starts_with("/dashboard/sign-in"),
            "redirected to {}",
            self.location()
        );
    }
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Self::with(base, reqwest::Client::builder())
    }

    pub fn with(base: &str, builder: reqwest::ClientBuilder) -> Browser {
        Browser {
            http: builder
                .redirect(Policy::none())
                .build()
                .expect("http client"),
            base: base.to_string(),
            cookies: HashMap::new(),
        }
    }

    /// The same browser (its cookies) sent to another server: a node
    /// behind the same load balancer.
    pub fn moved_to(mut self, base: &str) -> Browser {
        self.base = base.to_string();
        self
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sends `req` with this browser's cookies and keeps the ones it sets.
    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let headers = resp.headers().clone();
        for value in headers.get_all(SET_COOKIE) {
            let value = value.to_str().expect("ascii cookie");
            let pair = value.split(';').next().unwrap_or("");
            let (name, val) = pair.split_once('=').expect("name=value");
            if value.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), val.to_string());
            }
        }
        let text = resp.text().await.expect("body");
        Page {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{}", self.base, path));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{}", self.base, path)).form(form);
        self.send(req).await
    }

    /// Signs in through the sign-in form and returns the answer.
    pub async fn sign_in(&mut self, key: &str) -> Page {
        let page = self.get("/dashboard/sign-in").await;
        assert_eq!(page.status, StatusCode::OK);
        let token = page.csrf();
        self.post("/dashboard/sign-in", &[("csrf", &token), ("key", key)])
            .await
    }

    /// Signs in and returns this session's CSRF token.
    pub async fn signed_in(&mut self, key: &str) -> String {
        let page = self.sign_in(key).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
        assert_eq!(page.location(), "/dashboard/sources");
        let page = self.get("/dashboard/sources").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        page.csrf()
    }
}
