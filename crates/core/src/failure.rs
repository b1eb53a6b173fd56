//! A recorded failure of a run or of one of its units (OPERATIONS.md §2).

use serde::{Deserialize, Serialize};

/// `{code, message, unit?}`. Codes are stable snake_case so that scripts and
/// reconciliation can match on them; messages are for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Failure {
    /// Builds a failure. Panics on a code that is not snake_case: codes are
    /// compile-time constants of the families, so a bad one is a programming
    /// error, not input.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        assert!(is_stable_code(code), "failure code `{code}` is not snake_case");
        Failure {
            code: code.to_owned(),
            message: message.into(),
            unit: None,
        }
    }

    pub fn for_unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }
}

/// A stable code: lowercase ASCII letters, digits and single underscores,
/// starting with a letter.
pub fn is_stable_code(code: &str) -> bool {
    let mut chars = code.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !code.contains("__")
        && !code.ends_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case() {
        assert!(is_stable_code("provider_permission_missing"));
        assert!(is_stable_code("http_429"));
        assert!(!is_stable_code("Permission"));
        assert!(!is_stable_code("a__b"));
        assert!(!is_stable_code("_a"));
        assert!(!is_stable_code("a-b"));
        assert!(!is_stable_code(""));
    }

    #[test]
    fn unit_is_omitted_when_absent() {
        let f = Failure::new("x", "m");
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"code":"x","message":"m"}"#
        );
    }
}
