//! Tenant secrets given to an execution, and keeping their values off the
//! timeline and away from the model: every value found in a tool's output
//! (or anything else recorded) is replaced by `[secret:NAME]`.
//!
//! One pass finds every value at once (Aho-Corasick, leftmost-first, the
//! longest values first). Markers already in the text are matched too and
//! kept as they are, so redacting twice changes nothing.

use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use secrecy::{ExposeSecret, SecretString};

/// A proper prefix of a value shorter than this, left at the end of an
/// output the sandbox cut, is kept: it tells next to nothing, and cutting
/// every trailing character that starts some value would be noise.
const MIN_CUT_PREFIX_BYTES: usize = 3;

/// What the tool calls of an execution get from the tenant's secrets: the
/// environment variables the manifest's `[secrets]` names, and a redactor
/// for every secret the execution opened (those and the model's key).
#[derive(Clone, Default)]
pub struct ExecutionSecrets {
    /// `(variable, value)` for the environment of shell commands and stdio
    /// MCP servers.
    pub env: Vec<(String, SecretString)>,
    pub redactor: Redactor,
}

impl fmt::Debug for ExecutionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutionSecrets")
            .field("env", &self.env.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .field("redactor", &self.redactor)
            .finish()
    }
}

/// Replaces secret values with `[secret:NAME]`. Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// `None` if the automaton could not be built: values are then
    /// replaced one after the other, slower but just as thorough.
    matcher: Option<AhoCorasick>,
    /// By pattern: what replaces a match.
    replacements: Vec<String>,
    /// `(name, value)`, for the cut ends.
    values: Vec<(String, SecretString)>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> =
            self.inner.iter().flat_map(|inner| inner.values.iter().map(|(name, _)| name.as_str())).collect();
        f.debug_tuple("Redactor").field(&names).finish()
    }
}

impl Redactor {
    /// A redactor for these `(name, value)` pairs; empty values are skipped.
    pub fn new(secrets: &[(String, SecretString)]) -> Self {
        let mut values: Vec<(String, SecretString)> =
            secrets.iter().filter(|(_, value)| !value.expose_secret().is_empty()).cloned().collect();
        if values.is_empty() {
            return Self::default();
        }
        // Longest first: a value that contains another is replaced whole.
        values.sort_by_key(|(_, value)| std::cmp::Reverse(value.expose_secret().len()));
        let mut patterns: Vec<String> = Vec::new();
        let mut replacements = Vec::new();
        let mut names: Vec<&str> = values.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let marker = marker(name);
            patterns.push(marker.clone());
            replacements.push(marker);
        }
        for (name, value) in &values {
            patterns.push(value.expose_secret().to_owned());
            replacements.push(marker(name));
        }
        let matcher = AhoCorasick::builder().match_kind(MatchKind::LeftmostFirst).build(&patterns).ok();
        Self { inner: Some(Arc::new(Inner { matcher, replacements, values })) }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// `text` with every value replaced by its marker.
    pub fn redact(&self, text: &str) -> String {
        match self.inner.as_deref() {
            None => text.to_owned(),
            Some(Inner { matcher: Some(matcher), replacements, .. }) => matcher.replace_all(text, replacements),
            Some(Inner { matcher: None, values, .. }) => {
                let mut text = text.to_owned();
                for (name, value) in values {
                    text = text.replace(value.expose_secret(), &marker(name));
                }
                text
            }
        }
    }

    /// Like `redact`, for text that was cut short: a value cut in two at
    /// the end is replaced too.
    pub fn redact_cut(&self, text: &str) -> String {
        let mut redacted = self.redact(text);
        let Some(inner) = &self.inner else { return redacted };
        let longest_cut = inner
            .values
            .iter()
            .filter_map(|(name, value)| {
                let value = value.expose_secret().as_bytes();
                (MIN_CUT_PREFIX_BYTES..value.len())
                    .rev()
                    .find(|&len| redacted.as_bytes().ends_with(&value[..len]))
                    .map(|len| (len, name))
            })
            .max_by_key(|(len, _)| *len);
        if let Some((len, name)) = longest_cut {
            let start = redacted.len() - len;
            if redacted.is_char_boundary(start) {
                redacted.truncate(start);
                redacted.push_str(&marker(name));
            }
        }
        redacted
    }

    /// Redacts every string of a JSON value, keys included.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(text) => {
                let redacted = self.redact(text);
                if redacted != *text {
                    *text = redacted;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|item| self.redact_json(item)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    self.redact_json(&mut item);
                    map.insert(self.redact(&key), item);
                }
            }
            _ => {}
        }
    }
}

fn marker(name: &str) -> String {
    format!("[secret:{name}]")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn redactor(pairs: &[(&str, &str)]) -> Redactor {
        let secrets: Vec<(String, SecretString)> =
            pairs.iter().map(|(name, value)| ((*name).to_owned(), SecretString::from(*value))).collect();
        Redactor::new(&secrets)
    }

    #[test]
    fn values_become_markers() {
        let redactor = redactor(&[("GH_TOKEN", "ghp_abc123"), ("KEY", "sk-1")]);
        assert_eq!(
            redactor.redact("token=ghp_abc123\nkey sk-1, again ghp_abc123"),
            "token=[secret:GH_TOKEN]\nkey [secret:KEY], again [secret:GH_TOKEN]"
        );
        assert_eq!(redactor.redact("nothing here"), "nothing here");
        assert!(Redactor::default().is_empty());
        assert_eq!(Redactor::default().redact("ghp_abc123"), "ghp_abc123");
        assert!(!format!("{redactor:?}").contains("ghp_abc123"));
    }

    #[test]
    fn the_longest_value_wins_and_redacting_twice_changes_nothing() {
        let redactor = redactor(&[("SHORT", "abc"), ("LONG", "abcdef"), ("WORD", "secret")]);
        let once = redactor.redact("abcdef abc secret");
        assert_eq!(once, "[secret:LONG] [secret:SHORT] [secret:WORD]");
        assert_eq!(redactor.redact(&once), once);
    }

    #[test]
    fn a_value_cut_at_the_end_is_redacted() {
        let redactor = redactor(&[("TOKEN", "ghp_0123456789")]);
        assert_eq!(redactor.redact_cut("out: ghp_01234"), "out: [secret:TOKEN]");
        assert_eq!(redactor.redact_cut("out: gh"), "out: gh");
        assert_eq!(redactor.redact_cut("ghp_0123456789 x"), "[secret:TOKEN] x");
    }

    #[test]
    fn json_strings_and_keys_are_redacted() {
        let redactor = redactor(&[("T", "s3cr3t")]);
        let mut value = serde_json::json!({"output": "is s3cr3t", "list": ["s3cr3t", 1], "s3cr3t": true});
        redactor.redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"output": "is [secret:T]", "list": ["[secret:T]", 1], "[secret:T]": true})
        );
    }

    proptest::proptest! {
        /// Whatever surrounds it, no value survives redaction.
        #[test]
        fn no_value_survives(prefix in "[a-z\n ]{0,40}", suffix in "[a-z\n ]{0,40}", value in "[0-9]{4,20}") {
            let redactor = redactor(&[("V", value.as_str())]);
            let redacted = redactor.redact(&format!("{prefix}{value}{suffix}{value}"));
            proptest::prop_assert!(!redacted.contains(&value), "{redacted}");
        }
    }
}
