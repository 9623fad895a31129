//! HTML form bodies (`application/x-www-form-urlencoded`).
//!
//! Kept as the ordered list of pairs a browser sends, because checkbox
//! groups (scopes, destinations to replay to) repeat a name, which
//! struct-based form decoders cannot express.

use axum::extract::{FromRequest, Request};
use axum::http::header;

use super::error::DashboardError;
use super::Dashboard;

/// Largest form body read; dashboard forms are small.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// A decoded form.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Decodes a urlencoded body.
    pub fn parse(body: &[u8]) -> Form {
        Form {
            pairs: url::form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed; empty counts as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// Every value of `name`, in order (ticked checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl FromRequest<Dashboard> for Form {
    type Rejection = DashboardError;

    async fn from_request(request: Request, _: &Dashboard) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(DashboardError::BadRequest(
                "send this form from the dashboard page (urlencoded)".into(),
            ));
        }
        let bytes = axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES)
            .await
            .map_err(|_| DashboardError::BadRequest("the form is too large".into()))?;
        Ok(Form::parse(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_and_decoding() {
        let f = Form::parse(b"scope=webhooks%3Aread&scope=admin&name=+ci+&empty=");
        assert_eq!(f.all("scope"), vec!["webhooks:read", "admin"]);
        assert_eq!(f.get("scope"), Some("webhooks:read"));
        assert_eq!(f.text("name").as_deref(), Some("ci"));
        assert_eq!(f.text("empty"), None);
        assert_eq!(f.get("missing"), None);
    }
}
