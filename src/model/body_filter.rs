//! Body filters (SPEC §13 `body_filter`): a JSON object matched against an
//! event's JSON body, in addition to the event-type filter.
//!
//! One matcher, called by ingest on both storage backends and by replay,
//! so "matches" means the same thing everywhere; one validator, called when
//! a destination is created or changed, so a stored filter is always one
//! the matcher understands.
//!
//! The language: a scalar (or array) matches an equal value; an object
//! matches when every key matches — a `$`-key is an operator applied to the
//! value at hand, any other key looks up that field (a missing field is
//! "absent"). When the value at hand is an array and the condition is not
//! an operator object, any element may match (`{"tags": "vip"}` matches
//! `{"tags": ["new", "vip"]}`). A body that is not JSON never matches.

use std::cell::OnceCell;

use serde_json::Value;

use super::ids::DestinationId;
use super::records::DestinationRecord;

/// Deepest nesting of a filter (objects and operator lists).
pub const MAX_DEPTH: usize = 16;
/// Longest filter, as compact JSON text.
pub const MAX_BYTES: usize = 8 * 1024;

/// Why a filter is refused: the path of the bad part (`body_filter.amount.$gt`)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

/// An event body, parsed as JSON at most once however many destinations
/// look at it.
pub struct Body<'a> {
    raw: &'a [u8],
    parsed: OnceCell<Option<Value>>,
}

impl<'a> Body<'a> {
    /// Wraps raw body bytes; nothing is parsed until a filter asks.
    pub fn new(raw: &'a [u8]) -> Body<'a> {
        Body {
            raw,
            parsed: OnceCell::new(),
        }
    }

    fn json(&self) -> Option<&Value> {
        self.parsed
            .get_or_init(|| serde_json::from_slice(self.raw).ok())
            .as_ref()
    }
}

/// A destination as fan-out matches it: its id, its event-type filter and
/// its body filter parsed once — a stored filter is JSON text, and parsing
/// it for every event it is matched against would repeat the same work
/// inside the storage writer.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: DestinationId,
    event_filter: Vec<String>,
    /// `None`: no body filter. `Some(None)`: a stored filter that no longer
    /// parses, which matches nothing rather than everything.
    body_filter: Option<Option<Value>>,
}

impl Target {
    /// The filters of `destination`, ready to match.
    pub fn of(destination: &DestinationRecord) -> Target {
        Target {
            id: destination.id,
            event_filter: destination.event_filter.clone(),
            body_filter: destination
                .options
                .body_filter
                .as_deref()
                .map(|text| serde_json::from_str(text).ok()),
        }
    }

    /// Whether an event (its type and body) gets a delivery here: the
    /// event-type filter and, when there is one, the body filter.
    pub fn accepts(&self, event_type: &str, body: &Body) -> bool {
        super::filter::matches(&self.event_filter, event_type)
            && match &self.body_filter {
                None => true,
                Some(filter) => matches_parsed(filter.as_ref(), body),
            }
    }
}

/// [`Target::accepts`] for a destination matched once (replay).
pub fn destination_accepts(destination: &DestinationRecord, event_type: &str, body: &Body) -> bool {
    Target::of(destination).accepts(event_type, body)
}

/// Whether `body` matches a stored filter (compact JSON text). A filter that
/// no longer parses matches nothing rather than everything.
#[cfg(test)]
fn matches_text(filter: &str, body: &Body) -> bool {
    matches_parsed(serde_json::from_str::<Value>(filter).ok().as_ref(), body)
}

fn matches_parsed(filter: Option<&Value>, body: &Body) -> bool {
    match (filter, body.json()) {
        (Some(filter), Some(json)) => matches(filter, json),
        _ => false,
    }
}

/// Whether a JSON `value` matches `filter` (validated with [`validate`]).
pub fn matches(filter: &Value, value: &Value) -> bool {
    cond(filter, Some(value))
}

/// Matches one condition against a value that may be absent.
fn cond(filter: &Value, value: Option<&Value>) -> bool {
    match filter {
        Value::Object(map) => {
            let is_operator_object = map.keys().any(|k| k.starts_with('$'));
            if !is_operator_object && !map.is_empty() {
                if let Some(Value::Array(items)) = value {
                    return items.iter().any(|item| fields(map, Some(item)));
                }
            }
            fields(map, value)
        }
        scalar => match value {
            Some(Value::Array(items)) if !scalar.is_array() => {
                items.iter().any(|item| item == scalar)
            }
            Some(v) => v == scalar,
            None => false,
        },
    }
}

/// Every key of an object condition: operators on `value`, fields below it.
fn fields(map: &serde_json::Map<String, Value>, value: Option<&Value>) -> bool {
    map.iter().all(|(key, operand)| {
        if key.starts_with('$') {
            operator(key, operand, value)
        } else {
            let field = match value {
                Some(Value::Object(obj)) => obj.get(key),
                _ => None,
            };
            cond(operand, field)
        }
    })
}

fn operator(name: &str, operand: &Value, value: Option<&Value>) -> bool {
    match name {
        "$eq" => value == Some(operand),
        "$neq" => value != Some(operand),
        "$gt" => compare(value, operand).is_some_and(|o| o.is_gt()),
        "$gte" => compare(value, operand).is_some_and(|o| o.is_ge()),
        "$lt" => compare(value, operand).is_some_and(|o| o.is_lt()),
        "$lte" => compare(value, operand).is_some_and(|o| o.is_le()),
        "$in" => value.is_some_and(|v| in_list(operand, v)),
        "$nin" => !value.is_some_and(|v| in_list(operand, v)),
        "$exist" => operand.as_bool() == Some(value.is_some_and(|v| !v.is_null())),
        "$startsWith" => text_pair(value, operand).is_some_and(|(v, o)| v.starts_with(o)),
        "$endsWith" => text_pair(value, operand).is_some_and(|(v, o)| v.ends_with(o)),
        "$contains" => match value {
            Some(Value::String(v)) => operand.as_str().is_some_and(|o| v.contains(o)),
            Some(Value::Array(items)) => items.iter().any(|item| item == operand),
            _ => false,
        },
        "$and" => operand
            .as_array()
            .is_some_and(|all| all.iter().all(|f| cond(f, value))),
        "$or" => operand
            .as_array()
            .is_some_and(|any| any.iter().any(|f| cond(f, value))),
        "$not" => !cond(operand, value),
        // Refused by `validate`; an unknown operator matches nothing.
        _ => false,
    }
}

/// Numbers compare as numbers, strings as strings; anything else (or an
/// absent value) does not compare.
fn compare(value: Option<&Value>, operand: &Value) -> Option<std::cmp::Ordering> {
    match (value?, operand) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn in_list(list: &Value, value: &Value) -> bool {
    list.as_array().is_some_and(|items| items.contains(value))
}

fn text_pair<'v>(value: Option<&'v Value>, operand: &'v Value) -> Option<(&'v str, &'v str)> {
    Some((value?.as_str()?, operand.as_str()?))
}

/// Checks a filter given by a user; `Err` names the path of the first bad
/// part, starting with `body_filter`. Returns the compact text to store.
pub fn validate(filter: &Value) -> Result<String, FilterError> {
    let root = "body_filter".to_string();
    if !filter.is_object() {
        return Err(FilterError {
            path: root,
            message: "must be a JSON object".into(),
        });
    }
    // Size first: the walk below copies each path, so it must only ever
    // see a small filter.
    let text = filter.to_string();
    if text.len() > MAX_BYTES {
        return Err(FilterError {
            path: root,
            message: format!("must be at most {MAX_BYTES} bytes as JSON"),
        });
    }
    check(filter, &root, 0)?;
    Ok(text)
}

fn fail(path: &str, message: impl Into<String>) -> Result<(), FilterError> {
    Err(FilterError {
        path: path.to_string(),
        message: message.into(),
    })
}

fn check(filter: &Value, path: &str, depth: usize) -> Result<(), FilterError> {
    if depth > MAX_DEPTH {
        return fail(path, format!("nests deeper than {MAX_DEPTH} levels"));
    }
    let Value::Object(map) = filter else {
        // A scalar or array: matched by equality.
        return Ok(());
    };
    for (key, operand) in map {
        let here = format!("{path}.{key}");
        if !key.starts_with('$') {
            if key.is_empty() {
                return fail(&here, "field names must not be empty");
            }
            check(operand, &here, depth + 1)?;
            continue;
        }
        match key.as_str() {
            "$eq" | "$neq" => {}
            "$gt" | "$gte" | "$lt" | "$lte" => {
                if !(operand.is_number() || operand.is_string()) {
                    return fail(&here, "must be a number or a string");
                }
            }
            "$in" | "$nin" => {
                if !operand.is_array() {
                    return fail(&here, "must be an array of values");
                }
            }
            "$exist" => {
                if !operand.is_boolean() {
                    return fail(&here, "must be true or false");
                }
            }
            "$startsWith" | "$endsWith" => {
                if !operand.is_string() {
                    return fail(&here, "must be a string");
                }
            }
            "$contains" => {
                if operand.is_object() || operand.is_array() {
                    return fail(&here, "must be a string, number, boolean or null");
                }
            }
            "$and" | "$or" => {
                let Some(items) = operand.as_array().filter(|a| !a.is_empty()) else {
                    return fail(&here, "must be a non-empty array of conditions");
                };
                for (i, item) in items.iter().enumerate() {
                    check(item, &format!("{here}[{i}]"), depth + 1)?;
                }
            }
            "$not" => check(operand, &here, depth + 1)?,
            _ => {
                return fail(
                    &here,
                    "is not an operator ($eq $neq $gt $gte $lt $lte $in $nin $exist $startsWith $endsWith $contains $and $or $not)",
                )
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check_table(filter: Value, cases: &[(&str, bool)]) {
        validate(&filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        let text = filter.to_string();
        for (body, expected) in cases {
            let got = matches_text(&text, &Body::new(body.as_bytes()));
            assert_eq!(got, *expected, "filter {filter} on body {body}");
        }
    }

    #[test]
    fn every_operator_matches_as_documented() {
        let table: Vec<(Value, Vec<(&str, bool)>)> = vec![
            (
                json!({"type": "invoice.paid"}),
                vec![
                    (r#"{"type":"invoice.paid"}"#, true),
                    (r#"{"type":"invoice.failed"}"#, false),
                    (r#"{"other":1}"#, false),
                ],
            ),
            (
                json!({"data": {"customer": {"id": "cus_1"}}}),
                vec![
                    (r#"{"data":{"customer":{"id":"cus_1","x":2}}}"#, true),
                    (r#"{"data":{"customer":{"id":"cus_2"}}}"#, false),
                    (r#"{"data":{"customer":"cus_1"}}"#, false),
                    (r#"{"data":null}"#, false),
                ],
            ),
            (
                json!({"amount": {"$eq": 10}}),
                vec![
                    (r#"{"amount":10}"#, true),
                    (r#"{"amount":10.0}"#, false),
                    (r#"{"amount":"10"}"#, false),
                ],
            ),
            (
                json!({"status": {"$neq": "void"}}),
                vec![
                    (r#"{"status":"paid"}"#, true),
                    (r#"{"status":"void"}"#, false),
                    (r#"{}"#, true),
                ],
            ),
            (
                json!({"amount": {"$gt": 100}}),
                vec![
                    (r#"{"amount":101}"#, true),
                    (r#"{"amount":100.5}"#, true),
                    (r#"{"amount":100}"#, false),
                    (r#"{"amount":"101"}"#, false),
                    (r#"{}"#, false),
                ],
            ),
            (
                json!({"amount": {"$gte": 100}}),
                vec![(r#"{"amount":100}"#, true), (r#"{"amount":99}"#, false)],
            ),
            (
                json!({"amount": {"$lt": 0}}),
                vec![(r#"{"amount":-1}"#, true), (r#"{"amount":0}"#, false)],
            ),
            (
                json!({"amount": {"$lte": 0}}),
                vec![(r#"{"amount":0}"#, true), (r#"{"amount":1}"#, false)],
            ),
            (
                json!({"created": {"$gte": "2026-01-01", "$lt": "2027-01-01"}}),
                vec![
                    (r#"{"created":"2026-06-30T10:00:00Z"}"#, true),
                    (r#"{"created":"2025-12-31"}"#, false),
                    (r#"{"created":"2027-01-01"}"#, false),
                ],
            ),
            (
                json!({"currency": {"$in": ["eur", "usd"]}}),
                vec![
                    (r#"{"currency":"eur"}"#, true),
                    (r#"{"currency":"gbp"}"#, false),
                    (r#"{}"#, false),
                ],
            ),
            (
                json!({"currency": {"$nin": ["eur", "usd"]}}),
                vec![
                    (r#"{"currency":"gbp"}"#, true),
                    (r#"{"currency":"usd"}"#, false),
                    (r#"{}"#, true),
                ],
            ),
            (
                json!({"refund": {"$exist": true}}),
                vec![
                    (r#"{"refund":{"id":1}}"#, true),
                    (r#"{"refund":false}"#, true),
                    (r#"{"refund":null}"#, false),
                    (r#"{}"#, false),
                ],
            ),
            (
                json!({"refund": {"$exist": false}}),
                vec![(r#"{}"#, true), (r#"{"refund":1}"#, false)],
            ),
            (
                json!({"email": {"$startsWith": "ops@"}}),
                vec![
                    (r#"{"email":"ops@example.invalid"}"#, true),
                    (r#"{"email":"dev@example.invalid"}"#, false),
                    (r#"{"email":7}"#, false),
                ],
            ),
            (
                json!({"email": {"$endsWith": ".invalid"}}),
                vec![
                    (r#"{"email":"ops@example.invalid"}"#, true),
                    (r#"{"email":"ops@example.com"}"#, false),
                ],
            ),
            (
                json!({"note": {"$contains": "urgent"}}),
                vec![
                    (r#"{"note":"this is urgent!"}"#, true),
                    (r#"{"note":"later"}"#, false),
                ],
            ),
            (
                json!({"tags": {"$contains": "vip"}}),
                vec![
                    (r#"{"tags":["new","vip"]}"#, true),
                    (r#"{"tags":["new"]}"#, false),
                    (r#"{}"#, false),
                ],
            ),
            (
                json!({"tags": "vip"}),
                vec![
                    (r#"{"tags":["new","vip"]}"#, true),
                    (r#"{"tags":"vip"}"#, true),
                    (r#"{"tags":["x"]}"#, false),
                ],
            ),
            (
                json!({"items": {"sku": "a"}}),
                vec![
                    (r#"{"items":[{"sku":"b"},{"sku":"a"}]}"#, true),
                    (r#"{"items":[{"sku":"b"}]}"#, false),
                ],
            ),
            (
                json!({"$and": [{"a": 1}, {"b": {"$gt": 1}}]}),
                vec![
                    (r#"{"a":1,"b":2}"#, true),
                    (r#"{"a":1,"b":1}"#, false),
                    (r#"{"b":2}"#, false),
                ],
            ),
            (
                json!({"$or": [{"a": 1}, {"b": 1}]}),
                vec![
                    (r#"{"a":1}"#, true),
                    (r#"{"b":1}"#, true),
                    (r#"{"a":2,"b":2}"#, false),
                ],
            ),
            (
                json!({"status": {"$not": {"$in": ["void", "draft"]}}}),
                vec![
                    (r#"{"status":"paid"}"#, true),
                    (r#"{"status":"draft"}"#, false),
                ],
            ),
            (
                json!({"$not": {"livemode": false}}),
                vec![
                    (r#"{"livemode":true}"#, true),
                    (r#"{"livemode":false}"#, false),
                ],
            ),
            (json!({}), vec![(r#"{"any":1}"#, true), ("[]", true)]),
        ];
        for (filter, cases) in table {
            check_table(filter, &cases);
        }
    }

    #[test]
    fn a_body_that_is_not_json_never_matches() {
        for filter in [
            json!({}),
            json!({"a": {"$exist": false}}),
            json!({"a": {"$neq": 1}}),
        ] {
            let text = validate(&filter).unwrap();
            for body in ["", "a=1&b=2", "{not json", "\u{0}\u{1}"] {
                assert!(
                    !matches_text(&text, &Body::new(body.as_bytes())),
                    "{filter} on {body:?}"
                );
            }
            assert!(!matches_text(&text, &Body::new(&[0xff, 0xfe, 0x7b])));
        }
    }

    #[test]
    fn invalid_filters_name_their_path() {
        let cases = [
            (json!([1]), "body_filter"),
            (json!("x"), "body_filter"),
            (json!({"amount": {"$gt": [1]}}), "body_filter.amount.$gt"),
            (json!({"amount": {"$gte": true}}), "body_filter.amount.$gte"),
            (json!({"a": {"b": {"$in": 3}}}), "body_filter.a.b.$in"),
            (json!({"a": {"$nin": "x"}}), "body_filter.a.$nin"),
            (json!({"a": {"$exist": "yes"}}), "body_filter.a.$exist"),
            (
                json!({"a": {"$startsWith": 1}}),
                "body_filter.a.$startsWith",
            ),
            (json!({"a": {"$endsWith": null}}), "body_filter.a.$endsWith"),
            (
                json!({"a": {"$contains": {"x": 1}}}),
                "body_filter.a.$contains",
            ),
            (json!({"$and": []}), "body_filter.$and"),
            (json!({"$or": {"a": 1}}), "body_filter.$or"),
            (
                json!({"$or": [{"a": 1}, {"b": {"$regex": "x"}}]}),
                "body_filter.$or[1].b.$regex",
            ),
            (
                json!({"a": {"$not": {"$bogus": 1}}}),
                "body_filter.a.$not.$bogus",
            ),
            (json!({"": 1}), "body_filter."),
        ];
        for (filter, path) in cases {
            let err = validate(&filter).unwrap_err();
            assert_eq!(err.path, path, "{filter}: {err}");
        }
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "a": deep });
        }
        assert!(validate(&deep).is_err());
        let big = json!({ "a": { "$in": vec!["x".repeat(100); 200] } });
        assert_eq!(validate(&big).unwrap_err().path, "body_filter");
    }
}
