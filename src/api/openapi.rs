//! Makes the generated OpenAPI document exact where utoipa's attributes
//! cannot say what the server does (issue #10): the error statuses each
//! operation can answer, request bodies the server accepts absent, and
//! rules that tie one field to another (a source's `signing_secret` and
//! `provider_config` depend on its `provider`).
//!
//! Error statuses are derived from how an operation is served, so they stay
//! true as handlers change: a bearer key means 401/403, a path parameter
//! means 400 (undecodable) and 404, a query string means 400, a JSON body
//! means 400/413/415/422 (see `extract.rs`), and a write means 503 while
//! storage refuses writes. `tests/fuzz/schemathesis.sh` checks the result
//! against the running server.

use serde_json::{json, Map, Value};

/// Every error this module documents, with the SPEC §3 code it carries.
const ERRORS: [(&str, &str); 9] = [
    ("400", "bad_request: malformed JSON, query string or path"),
    ("401", "unauthorized: no, unknown or revoked API key"),
    ("403", "forbidden: the API key lacks the needed scope"),
    ("404", "not_found: no such resource"),
    (
        "409",
        "conflict: the resource is not in a state that allows this",
    ),
    (
        "413",
        "payload_too_large: the body is over server.max_body_bytes",
    ),
    (
        "415",
        "unsupported_media_type: send content-type: application/json",
    ),
    (
        "422",
        "validation_failed: a field is invalid; `details` names it",
    ),
    (
        "503",
        "unavailable: storage is not accepting writes; retry shortly",
    ),
];

/// Applies every refinement to a document serialised by utoipa.
pub fn refine(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            refine_operation(path, method, op);
        }
    }
    refine_schemas(doc);
}

fn refine_operation(path: &str, method: &str, op: &mut Value) {
    // utoipa names operations after their handler (`list`, `get`, ...),
    // which repeats across modules; operation ids must be unique.
    let tag = op["tags"][0].as_str().unwrap_or("api").replace('-', "_");
    if let Some(id) = op["operationId"].as_str() {
        let unique = format!("{tag}_{id}");
        op["operationId"] = Value::String(unique);
    }
    match (method, path) {
        ("post", "/in/{slug}") => {
            // Any content type, or no body at all: the provider's bytes are
            // stored as they came.
            op["requestBody"] = json!({
                "description": "the provider's payload, stored byte for byte; may be empty",
                "required": false,
                "content": {"*/*": {"schema": {}}}
            });
            // Slack, Zoom, Twitch and Discord sources answer their
            // handshakes instead of storing them.
            op["responses"]["200"]["content"] = json!({
                "application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Data_Accepted"},
                    {"type": "object", "required": ["challenge"], "additionalProperties": false,
                     "properties": {"challenge": {}},
                     "description": "Slack `url_verification` handshake"},
                    {"type": "object", "required": ["plainToken", "encryptedToken"],
                     "additionalProperties": false,
                     "properties": {"plainToken": {"type": "string"},
                                    "encryptedToken": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                     "description": "Zoom `endpoint.url_validation` handshake"},
                    {"type": "object", "required": ["type"], "additionalProperties": false,
                     "properties": {"type": {"const": 1}},
                     "description": "Discord interactions PING answer"}
                ]}},
                "text/plain": {"schema": {"type": "string",
                    "description": "Slack `ssl_check` handshake (empty), or Twitch \
                        `webhook_callback_verification` (the raw challenge)"}}
            });
        }
        ("post", p) if p.ends_with("/events/{event_id}/replay") => {
            // No body (or only whitespace) replays to the matching
            // destinations; a body must be a JSON object, never `null`.
            op["requestBody"]["required"] = Value::Bool(false);
            op["requestBody"]["content"]["application/json"]["schema"] =
                json!({"$ref": "#/components/schemas/ReplayRequest"});
        }
        _ => {}
    }
    // (`get_mut`: indexing a missing key mutably would insert a `null`.)
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for param in params.iter_mut().filter(|p| p["in"] == "path") {
            let name = param["name"].as_str().unwrap_or_default();
            if let Some(pattern) = path_pattern(path, name) {
                param["schema"]["pattern"] = Value::String(pattern);
            }
        }
    }
    let secured = op["security"]
        .as_array()
        .is_some_and(|s| s.iter().any(|req| req.get("bearer").is_some()));
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has_in = |place: &str| params.iter().any(|p| p["in"] == place);
    let json_body = op["requestBody"]["content"]
        .get("application/json")
        .is_some();
    let mut statuses: Vec<&str> = Vec::new();
    if secured {
        statuses.extend(["401", "403"]);
        if method != "get" {
            statuses.push("503");
        }
    }
    if has_in("path") {
        statuses.extend(["400", "404"]);
    }
    if has_in("query") {
        statuses.push("400");
    }
    if json_body {
        statuses.extend(["400", "413", "415", "422"]);
    }
    let Some(responses) = op["responses"].as_object_mut() else {
        return;
    };
    responses.remove("4XX");
    for status in statuses {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(status));
    }
    // Every error answer, also those a handler lists itself, carries the
    // envelope and the headers the server adds.
    for (status, response) in responses.iter_mut() {
        if status.starts_with('4') || status.starts_with('5') {
            if response.get("content").is_none() {
                *response = error_response(status);
            }
            if response["description"].as_str().is_none_or(str::is_empty) {
                response["description"] = Value::String(describe(status));
            }
            add_error_headers(status, response);
        }
    }
    sort_responses(responses);
}

/// The shape of a path parameter's id. Anything else is answered 404,
/// like an id of the right shape that names nothing.
fn path_pattern(path: &str, name: &str) -> Option<String> {
    let prefix = match name {
        "slug" => return Some("^wh_[0-9A-Za-z]{8}$".to_string()),
        "source_id" => "src_",
        "id" if path.contains("{source_id}") => "dst_",
        "id" if path.starts_with("/api/v1/webhooks/sources/") => "src_",
        "id" if path.starts_with("/api/v1/api-keys/") => "key_",
        "event_id" => "evt_",
        "delivery_id" => "dlv_",
        _ => return None,
    };
    Some(format!("^{prefix}{ULID}$"))
}

/// A ULID as the ids' suffix spells it (either case, at most 2^128 - 1).
const ULID: &str = "[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}";

fn describe(status: &str) -> String {
    ERRORS
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| "error".to_string())
}

fn error_response(status: &str) -> Value {
    json!({
        "description": describe(status),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    })
}

fn add_error_headers(status: &str, response: &mut Value) {
    let header = match status {
        "401" => (
            "WWW-Authenticate",
            "`Bearer` (not sent for ingest's invalid_signature)",
            false,
        ),
        "503" => ("Retry-After", "seconds to wait before retrying", true),
        _ => return,
    };
    let (name, description, required) = header;
    response["headers"] = json!({
        name: {"description": description, "required": required, "schema": {"type": "string"}}
    });
}

fn sort_responses(responses: &mut Map<String, Value>) {
    let mut entries: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    responses.extend(entries);
}

/// Cross-field rules of a source's body (SPEC §5, §8).
fn refine_schemas(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Some(create) = schemas.get_mut("CreateSource") {
        create["allOf"] = json!([
            // Every provider but `none` needs a secret.
            {"if": {"properties": {"provider": {"not": {"const": "none"}}}},
             "then": {"required": ["signing_secret"],
                      "properties": {"signing_secret": {"type": "string", "minLength": 1}}}},
            // `generic_hmac` needs its settings; no other provider takes any.
            {"if": {"properties": {"provider": {"const": "generic_hmac"}}},
             "then": {"required": ["provider_config"],
                      "properties": {"provider_config": {"$ref": "#/components/schemas/GenericHmacConfig"}}},
             "else": {"properties": {"provider_config": {"type": "null"}}}},
            // Standard Webhooks secrets are `whsec_` + base64.
            {"if": {"properties": {"provider": {"enum": ["standard_webhooks", "svix"]}}},
             "then": {"properties": {"signing_secret": {"type": "string", "pattern": STANDARD_WEBHOOKS_SECRET}}}},
            // Discord and SendGrid sources hold the provider's public key.
            {"if": {"properties": {"provider": {"const": "discord"}}},
             "then": {"properties": {"signing_secret": {"type": "string", "pattern": DISCORD_PUBLIC_KEY,
                "description": "the application's Ed25519 public key, hex"}}}},
            {"if": {"properties": {"provider": {"const": "sendgrid"}}},
             "then": {"properties": {"signing_secret": {"type": "string", "pattern": SENDGRID_PUBLIC_KEY,
                "description": "the Event Webhook's verification key: base64 DER SubjectPublicKeyInfo of a P-256 point"}}}}
        ]);
    }
}

/// What `standard_webhooks::decode_secret` accepts: an optional `whsec_`,
/// then standard base64 of at least one byte, padding optional, unused
/// trailing bits zero.
pub const STANDARD_WEBHOOKS_SECRET: &str = concat!(
    "^(whsec_)?(?:(?:[A-Za-z0-9+/]{4})+",
    "(?:[A-Za-z0-9+/][AQgw](?:==)?|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=?)?",
    "|(?:[A-Za-z0-9+/][AQgw](?:==)?|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=?))$"
);

/// What `discord`'s `validate_secret` accepts: 32 bytes in hex.
pub const DISCORD_PUBLIC_KEY: &str = "^[0-9A-Fa-f]{64}$";

/// What `sendgrid`'s `validate_secret` accepts: standard padded base64 of
/// the 27-byte DER header of an uncompressed P-256 SubjectPublicKeyInfo
/// (`MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE`) and 64 bytes of coordinates.
pub const SENDGRID_PUBLIC_KEY: &str =
    "^MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE[A-Za-z0-9+/]{85}[AQgw]==$";

#[cfg(test)]
mod tests {
    use super::*;

    /// The `signing_secret` patterns the document states accept exactly
    /// what the providers' `validate_secret` accepts, so a client (or the
    /// schema fuzzer) that follows the document is never refused.
    #[test]
    fn secret_patterns_agree_with_the_providers() {
        use crate::ingest::providers;
        use crate::model::provider::ProviderKind;
        let fixtures: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/providers/signed.json"))
                .unwrap();
        let sendgrid = fixtures["sendgrid"]["public_key"].as_str().unwrap();
        let discord = fixtures["discord"]["public_key"].as_str().unwrap();
        let mut samples: Vec<String> = vec![
            String::new(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            "whsec_".into(),
            "whsec_not base64!".into(),
            discord.into(),
            discord.to_uppercase(),
            format!("{discord}\n"),
            format!(" {discord}"),
            discord[..63].into(),
            format!("{discord}0"),
            "0200000000000000000000000000000000000000000000000000000000000000".into(),
            sendgrid.into(),
            format!("{sendgrid}\n"),
            sendgrid.trim_end_matches('=').into(),
            sendgrid[..120].into(),
            format!("-----BEGIN PUBLIC KEY-----\n{sendgrid}\n-----END PUBLIC KEY-----"),
            fixtures["sendgrid"]["other_public_key"]
                .as_str()
                .unwrap()
                .into(),
            format!("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE{}AA==", "A".repeat(84)),
            format!("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE{}AB==", "A".repeat(84)),
            "MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=".into(),
        ];
        // Every last character of the SendGrid key, valid or not.
        let stem = &sendgrid[..121];
        for c in ('A'..='Z')
            .chain('a'..='z')
            .chain('0'..='9')
            .chain(['+', '/'])
        {
            samples.push(format!("{stem}{c}=="));
        }
        let rules: [(&[ProviderKind], &str); 3] = [
            (
                &[ProviderKind::StandardWebhooks, ProviderKind::Svix],
                STANDARD_WEBHOOKS_SECRET,
            ),
            (&[ProviderKind::Discord], DISCORD_PUBLIC_KEY),
            (&[ProviderKind::Sendgrid], SENDGRID_PUBLIC_KEY),
        ];
        for (kinds, pattern) in rules {
            let re = regex::Regex::new(pattern).unwrap();
            for kind in kinds {
                let provider = providers::get(*kind);
                for sample in &samples {
                    assert_eq!(
                        re.is_match(sample),
                        provider.validate_secret(sample.as_bytes()).is_ok(),
                        "{kind:?} {sample:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn four_xx_becomes_the_statuses_the_extractors_answer() {
        let mut op = json!({
            "tags": ["sources"],
            "operationId": "update",
            "parameters": [{"name": "id", "in": "path", "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/json": {"schema": {}}}},
            "security": [{"bearer": []}],
            "responses": {"200": {"description": "ok"}, "4XX": {"description": ""}}
        });
        refine_operation("/api/v1/webhooks/sources/{id}", "patch", &mut op);
        let statuses: Vec<&str> = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            statuses,
            ["200", "400", "401", "403", "404", "413", "415", "422", "503"]
        );
        assert_eq!(op["operationId"], "sources_update");
        assert_eq!(
            op["parameters"][0]["schema"]["pattern"],
            format!("^src_{ULID}$")
        );
        assert_eq!(
            op["responses"]["503"]["headers"]["Retry-After"]["required"],
            true
        );
    }
}

/// Schema-only types: the shapes of strings that the handlers take as
/// plain `String`s, so the document can say what the server accepts.
pub mod shapes {
    use serde::{Deserialize, Serialize};
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    use utoipa::ToSchema;

    /// An API key scope.
    #[derive(Serialize, Deserialize, ToSchema)]
    pub enum ScopeName {
        #[serde(rename = "webhooks:read")]
        Read,
        #[serde(rename = "webhooks:write")]
        Write,
        #[serde(rename = "admin")]
        Admin,
    }

    /// An event-type pattern: exact, or `*` for any run of characters;
    /// 1 to 256 characters, no control characters.
    pub struct EventPattern;

    impl utoipa::PartialSchema for EventPattern {
        fn schema() -> RefOr<Schema> {
            string(Some(1), Some(256), "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")
        }
    }
    impl ToSchema for EventPattern {}

    /// A destination id (`dst_` + 26 base32 characters).
    pub struct DestinationId;

    impl utoipa::PartialSchema for DestinationId {
        fn schema() -> RefOr<Schema> {
            string(None, None, "^dst_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
        }
    }
    impl ToSchema for DestinationId {}

    fn string(min: Option<usize>, max: Option<usize>, pattern: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(min)
            .max_length(max)
            .pattern(Some(pattern))
            .into()
    }

    /// A delivery's state (SPEC §9).
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum DeliveryStatusName {
        Pending,
        Succeeded,
        Failed,
        Cancelled,
    }

    /// The only status filter of a bulk replay.
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum BulkReplayStatus {
        Failed,
    }
}
