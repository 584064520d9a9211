//! A policy bundle as a tenant submits it: Rego modules by name, and data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The most modules a bundle holds.
pub const MAX_MODULES: usize = 64;
/// The largest module, in bytes.
pub const MAX_MODULE_BYTES: usize = 256 * 1024;
/// The most all modules together may hold, in bytes.
pub const MAX_MODULES_TOTAL_BYTES: usize = 1024 * 1024;
/// The largest data document, in bytes of JSON.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Rego modules by name (`main.rego`, `lib/paths.rego`) and the data
/// document the policy reads as `data` (a JSON object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub modules: BTreeMap<String, String>,
    #[serde(default = "empty_object")]
    pub data: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// A bundle that cannot be compiled as given, before Rego is even read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("a policy needs at least one module")]
    NoModules,
    #[error("a policy has at most {MAX_MODULES} modules ({0} given)")]
    TooManyModules(usize),
    #[error(
        "module name '{0}' is not valid: 1 to 128 characters of letters, digits, '.', '_', '-' and '/', ending in .rego, without '..' or a leading '/'"
    )]
    ModuleName(String),
    #[error("module {name} is {bytes} bytes; a module is at most {MAX_MODULE_BYTES}")]
    ModuleTooLarge { name: String, bytes: usize },
    #[error("the modules hold {0} bytes together; at most {MAX_MODULES_TOTAL_BYTES}")]
    ModulesTooLarge(usize),
    #[error("data must be a JSON object")]
    DataNotObject,
    #[error("data is {0} bytes of JSON; at most {MAX_DATA_BYTES}")]
    DataTooLarge(usize),
    #[error("data must not have a top-level key 'codexos': that is where the policy's own rules live")]
    DataShadowsRules,
}

impl Bundle {
    /// The bundle CodexOS ships: the default policy and no data.
    pub fn builtin_default() -> Bundle {
        let mut modules = BTreeMap::new();
        modules.insert(crate::DEFAULT_MODULE_NAME.to_owned(), crate::DEFAULT_POLICY.to_owned());
        Bundle { modules, data: empty_object() }
    }

    /// Checks the bundle's shape and sizes (not its Rego).
    pub fn check(&self) -> Result<(), BundleError> {
        if self.modules.is_empty() {
            return Err(BundleError::NoModules);
        }
        if self.modules.len() > MAX_MODULES {
            return Err(BundleError::TooManyModules(self.modules.len()));
        }
        let mut total = 0;
        for (name, source) in &self.modules {
            if !valid_module_name(name) {
                return Err(BundleError::ModuleName(name.chars().take(160).collect()));
            }
            if source.len() > MAX_MODULE_BYTES {
                return Err(BundleError::ModuleTooLarge { name: name.clone(), bytes: source.len() });
            }
            total += source.len();
        }
        if total > MAX_MODULES_TOTAL_BYTES {
            return Err(BundleError::ModulesTooLarge(total));
        }
        let Some(data) = self.data.as_object() else { return Err(BundleError::DataNotObject) };
        let bytes = self.data.to_string().len();
        if bytes > MAX_DATA_BYTES {
            return Err(BundleError::DataTooLarge(bytes));
        }
        if data.contains_key("codexos") {
            return Err(BundleError::DataShadowsRules);
        }
        Ok(())
    }

    /// SHA-256 (hex) of the bundle's canonical JSON (keys sorted, no
    /// spaces): the same modules and data always give the same digest.
    pub fn sha256(&self) -> String {
        let mut canonical = String::new();
        canonical.push_str("{\"data\":");
        write_canonical(&self.data, &mut canonical);
        canonical.push_str(",\"modules\":{");
        for (index, (name, source)) in self.modules.iter().enumerate() {
            if index > 0 {
                canonical.push(',');
            }
            write_canonical(&serde_json::Value::String(name.clone()), &mut canonical);
            canonical.push(':');
            write_canonical(&serde_json::Value::String(source.clone()), &mut canonical);
        }
        canonical.push_str("}}");
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn valid_module_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.ends_with(".rego")
        && !name.starts_with('/')
        && !name.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// JSON with object keys sorted, whatever order the map keeps them in.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bundle(modules: &[(&str, &str)], data: serde_json::Value) -> Bundle {
        Bundle {
            modules: modules.iter().map(|(name, source)| ((*name).to_owned(), (*source).to_owned())).collect(),
            data,
        }
    }

    #[test]
    fn shapes_and_sizes_are_checked() {
        let ok = bundle(&[("main.rego", "package codexos")], json!({}));
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(bundle(&[], json!({})).check(), Err(BundleError::NoModules));
        for name in ["", "main", "/abs.rego", "../up.rego", "a//b.rego", "sp ace.rego", "./x.rego"] {
            assert!(matches!(bundle(&[(name, "")], json!({})).check(), Err(BundleError::ModuleName(_))), "{name}");
        }
        assert_eq!(bundle(&[("lib/paths.rego", "")], json!({})).check(), Ok(()));
        assert_eq!(bundle(&[("a.rego", "")], json!([1])).check(), Err(BundleError::DataNotObject));
        assert_eq!(bundle(&[("a.rego", "")], json!({"codexos": {}})).check(), Err(BundleError::DataShadowsRules));
        let big = "#".repeat(MAX_MODULE_BYTES + 1);
        assert!(matches!(bundle(&[("a.rego", &big)], json!({})).check(), Err(BundleError::ModuleTooLarge { .. })));
        let data = json!({ "blob": "x".repeat(MAX_DATA_BYTES) });
        assert!(matches!(bundle(&[("a.rego", "")], data).check(), Err(BundleError::DataTooLarge(_))));
    }

    #[test]
    fn the_digest_ignores_key_order() {
        let one: Bundle = serde_json::from_str(
            r#"{"modules": {"a.rego": "x", "b.rego": "y"}, "data": {"k": 1, "j": [2, {"z": 1, "a": 2}]}}"#,
        )
        .unwrap();
        let two: Bundle = serde_json::from_str(
            r#"{"data": {"j": [2, {"a": 2, "z": 1}], "k": 1}, "modules": {"b.rego": "y", "a.rego": "x"}}"#,
        )
        .unwrap();
        assert_eq!(one.sha256(), two.sha256());
        let three = Bundle { data: json!({"k": 2}), ..one.clone() };
        assert_ne!(one.sha256(), three.sha256());
    }
}
