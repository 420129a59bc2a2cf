//! Typed fields of a message body. A field of the wrong type is a malformed request (error
//! 12), never a guess: `"region_id": "7"` is not region 7, and a key that is an object is
//! not stored under its JSON text. An optional field that is absent or `null` is absent.

use super::{enc, Fail};
use serde_json::Value;

/// The field `name`, which must be present.
pub(super) fn field<'a>(body: &'a Value, name: &str) -> Result<&'a Value, Fail> {
    body.get(name)
        .ok_or_else(|| Fail(12, format!("missing field {name:?}")))
}

/// The optional field `name` (`null` counts as absent).
fn optional<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

/// A key (a number or a string) as the bytes it is stored under: its JSON text.
pub(super) fn key(body: &Value, name: &str) -> Result<Vec<u8>, Fail> {
    as_key(field(body, name)?, name)
}

/// An optional key.
pub(super) fn opt_key(body: &Value, name: &str) -> Result<Option<Vec<u8>>, Fail> {
    optional(body, name).map(|v| as_key(v, name)).transpose()
}

fn as_key(v: &Value, name: &str) -> Result<Vec<u8>, Fail> {
    match v {
        Value::Number(_) | Value::String(_) => Ok(enc(v)),
        other => Err(Fail(
            12,
            format!("{name} must be a number or a string, got {}", kind(other)),
        )),
    }
}

/// A non-negative integer.
pub(super) fn num(body: &Value, name: &str) -> Result<u64, Fail> {
    as_num(field(body, name)?, name)
}

/// An optional non-negative integer.
pub(super) fn opt_num(body: &Value, name: &str) -> Result<Option<u64>, Fail> {
    optional(body, name).map(|v| as_num(v, name)).transpose()
}

fn as_num(v: &Value, name: &str) -> Result<u64, Fail> {
    v.as_u64().ok_or_else(|| {
        Fail(
            12,
            format!("{name} must be a non-negative integer, got {}", kind(v)),
        )
    })
}

/// An optional boolean.
pub(super) fn opt_bool(body: &Value, name: &str) -> Result<Option<bool>, Fail> {
    optional(body, name)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| Fail(12, format!("{name} must be a boolean, got {}", kind(v))))
        })
        .transpose()
}

/// A string.
pub(super) fn text<'a>(body: &'a Value, name: &str) -> Result<&'a str, Fail> {
    let v = field(body, name)?;
    v.as_str()
        .ok_or_else(|| Fail(12, format!("{name} must be a string, got {}", kind(v))))
}

/// A list of strings (every element must be one).
pub(super) fn strings(v: &Value, name: &str) -> Result<Vec<String>, Fail> {
    let list = v
        .as_array()
        .ok_or_else(|| Fail(12, format!("{name} must be a list, got {}", kind(v))))?;
    list.iter()
        .map(|e| {
            e.as_str().map(str::to_string).ok_or_else(|| {
                Fail(
                    12,
                    format!("{name} must hold strings only, got {}", kind(e)),
                )
            })
        })
        .collect()
}

/// An optional list of strings.
pub(super) fn opt_strings(body: &Value, name: &str) -> Result<Option<Vec<String>>, Fail> {
    optional(body, name).map(|v| strings(v, name)).transpose()
}

/// The JSON type of `v`, for error texts.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_are_malformed_not_guessed() {
        let body = json!({"key": {"a": 1}, "region_id": "7", "flag": "true", "ids": ["n1", 2]});
        for r in [
            key(&body, "key").map(|_| ()),
            opt_num(&body, "region_id").map(|_| ()),
            opt_bool(&body, "flag").map(|_| ()),
            opt_strings(&body, "ids").map(|_| ()),
        ] {
            assert!(matches!(r, Err(Fail(12, _))));
        }
        let body = json!({"key": 3, "region_id": 7, "flag": true, "none": null});
        assert_eq!(key(&body, "key").ok(), Some(b"3".to_vec()));
        assert_eq!(opt_num(&body, "region_id").ok(), Some(Some(7)));
        assert_eq!(opt_bool(&body, "flag").ok(), Some(Some(true)));
        assert_eq!(opt_num(&body, "none").ok(), Some(None));
        assert!(matches!(key(&body, "none"), Err(Fail(12, _))));
    }
}
