//! Reading Redis replies: the few shapes the fleet's commands answer with, in RESP2 or RESP3.

use redis::Value;

/// A string reply (bulk, simple or verbatim).
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// An integer reply, or a string of digits.
pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// The items of an array (or set) reply; none for nil.
pub(super) fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// A hash's fields and values as `HGETALL` answers: a map in RESP3, a flat array in RESP2.
pub(super) fn pairs(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        other => items(other)
            .chunks_exact(2)
            .filter_map(|pair| Some((text(&pair[0])?, text(&pair[1])?)))
            .collect(),
    }
}

/// A stream's entries as `XRANGE` and `XREVRANGE` answer: each id with its fields.
pub(super) fn entries(value: &Value) -> Vec<(String, Vec<(String, String)>)> {
    items(value)
        .iter()
        .filter_map(|entry| {
            let [id, fields] = items(entry) else {
                return None;
            };
            Some((text(id)?, pairs(fields)))
        })
        .collect()
}
