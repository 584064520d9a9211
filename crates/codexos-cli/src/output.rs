//! Small helpers for printing JSON answers as text.

use serde_json::Value;

/// A JSON value as a person reads it: strings bare, null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}
