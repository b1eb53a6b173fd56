//! Summary counts (OPERATIONS.md §3): the whitelist, the strict boundary
//! parser and the tolerant normalizer.
//!
//! Two entry points on purpose:
//! - [`SummaryCounts::from_input`] is for counts arriving from outside the
//!   writer path (a family reporting counts, an API body): any key outside the
//!   whitelist, or any value that is not a non-negative integer, is an error
//!   naming the key.
//! - [`normalize`] is for counts read back from storage or legacy JSON: it
//!   keeps what is valid and returns what it dropped, so the caller can log it.
//!
//! `total` and `processed` are the only source of a percentage; the other keys
//! are outcome counters and never drive progress (see [`crate::progress`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A whitelisted count key. Adding a key means adding it here, nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CountKey {
    Total,
    Processed,
    Succeeded,
    Failed,
    Skipped,
    Created,
    Updated,
}

impl CountKey {
    pub const ALL: [CountKey; 7] = [
        CountKey::Total,
        CountKey::Processed,
        CountKey::Succeeded,
        CountKey::Failed,
        CountKey::Skipped,
        CountKey::Created,
        CountKey::Updated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CountKey::Total => "total",
            CountKey::Processed => "processed",
            CountKey::Succeeded => "succeeded",
            CountKey::Failed => "failed",
            CountKey::Skipped => "skipped",
            CountKey::Created => "created",
            CountKey::Updated => "updated",
        }
    }

    pub fn parse(s: &str) -> Option<CountKey> {
        CountKey::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for CountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why counts at the boundary were refused. Each names the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountsError {
    #[error(
        "count key `{0}` is not allowed (allowed: total, processed, succeeded, failed, skipped, created, updated)"
    )]
    UnknownKey(String),
    #[error("count `{0}` must be a non-negative integer")]
    NotNonNegativeInteger(String),
    #[error("counts must be a JSON object")]
    NotAnObject,
    #[error("count `processed` ({processed}) exceeds `total` ({total})")]
    ProcessedExceedsTotal { processed: u64, total: u64 },
}

/// Whitelisted counts; an absent key is unknown, never zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryCounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
}

impl SummaryCounts {
    pub fn get(&self, key: CountKey) -> Option<u64> {
        match key {
            CountKey::Total => self.total,
            CountKey::Processed => self.processed,
            CountKey::Succeeded => self.succeeded,
            CountKey::Failed => self.failed,
            CountKey::Skipped => self.skipped,
            CountKey::Created => self.created,
            CountKey::Updated => self.updated,
        }
    }

    pub fn set(&mut self, key: CountKey, value: Option<u64>) {
        let slot = match key {
            CountKey::Total => &mut self.total,
            CountKey::Processed => &mut self.processed,
            CountKey::Succeeded => &mut self.succeeded,
            CountKey::Failed => &mut self.failed,
            CountKey::Skipped => &mut self.skipped,
            CountKey::Created => &mut self.created,
            CountKey::Updated => &mut self.updated,
        };
        *slot = value;
    }

    /// Strict parse of counts arriving from outside the writer path.
    pub fn from_input(value: &Value) -> Result<SummaryCounts, CountsError> {
        let map = value.as_object().ok_or(CountsError::NotAnObject)?;
        let mut counts = SummaryCounts::default();
        for (key, v) in map {
            let k = CountKey::parse(key).ok_or_else(|| CountsError::UnknownKey(key.clone()))?;
            let n = v
                .as_u64()
                .ok_or_else(|| CountsError::NotNonNegativeInteger(key.clone()))?;
            counts.set(k, Some(n));
        }
        counts.check_processed_within_total()?;
        Ok(counts)
    }

    /// `processed <= total` whenever both are known.
    pub fn check_processed_within_total(&self) -> Result<(), CountsError> {
        match (self.processed, self.total) {
            (Some(processed), Some(total)) if processed > total => {
                Err(CountsError::ProcessedExceedsTotal { processed, total })
            }
            _ => Ok(()),
        }
    }

    /// Sum of the per-unit outcome counters (succeeded + failed + skipped).
    pub fn unit_outcomes_sum(&self) -> u64 {
        self.succeeded.unwrap_or(0) + self.failed.unwrap_or(0) + self.skipped.unwrap_or(0)
    }
}

/// A key or value the normalizer dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedCount {
    pub key: String,
    pub reason: &'static str,
}

/// Tolerant normalization: keeps whitelisted non-negative integers, drops
/// everything else and reports it. Never fails.
pub fn normalize(value: &Value) -> (SummaryCounts, Vec<DroppedCount>) {
    let mut counts = SummaryCounts::default();
    let mut dropped = Vec::new();
    let empty = Map::new();
    let map = match value {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => {
            dropped.push(DroppedCount {
                key: "<root>".into(),
                reason: "not an object",
            });
            &empty
        }
    };
    for (key, v) in map {
        match (CountKey::parse(key), v.as_u64()) {
            (Some(k), Some(n)) => counts.set(k, Some(n)),
            (None, _) => dropped.push(DroppedCount {
                key: key.clone(),
                reason: "unknown key",
            }),
            (Some(_), None) => dropped.push(DroppedCount {
                key: key.clone(),
                reason: "not a non-negative integer",
            }),
        }
    }
    (counts, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalizer_keeps_whitelisted_integers() {
        let (c, dropped) = normalize(&json!({"total": 12, "processed": 5, "succeeded": 4, "failed": 1}));
        assert!(dropped.is_empty());
        assert_eq!(c.total, Some(12));
        assert_eq!(c.processed, Some(5));
        assert_eq!(c.unit_outcomes_sum(), 5);
        assert_eq!(c.skipped, None, "absent stays unknown, not zero");
    }

    #[test]
    fn normalizer_drops_unknown_and_non_numeric_and_reports_them() {
        let (c, mut dropped) = normalize(&json!({
            "total": 3, "bogus": 1, "processed": "2", "failed": -1, "skipped": 1.5, "created": null
        }));
        dropped.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            c,
            SummaryCounts {
                total: Some(3),
                ..Default::default()
            }
        );
        let keys: Vec<_> = dropped.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["bogus", "created", "failed", "processed", "skipped"]);
        assert_eq!(dropped[0].reason, "unknown key");
        assert_eq!(dropped[1].reason, "not a non-negative integer");
    }

    #[test]
    fn normalizer_tolerates_non_objects() {
        assert_eq!(normalize(&Value::Null), (SummaryCounts::default(), vec![]));
        let (c, dropped) = normalize(&json!([1, 2]));
        assert_eq!(c, SummaryCounts::default());
        assert_eq!(dropped.len(), 1);
    }

    #[test]
    fn boundary_rejects_unknown_key_by_name() {
        let err = SummaryCounts::from_input(&json!({"total": 1, "percent": 50})).unwrap_err();
        assert_eq!(err, CountsError::UnknownKey("percent".into()));
        assert!(err.to_string().contains("`percent`"));
    }

    #[test]
    fn boundary_rejects_non_numeric_by_name() {
        for bad in [json!("3"), json!(-3), json!(2.5), json!(null), json!(true)] {
            let err = SummaryCounts::from_input(&json!({ "created": bad })).unwrap_err();
            assert_eq!(err, CountsError::NotNonNegativeInteger("created".into()));
        }
        assert_eq!(
            SummaryCounts::from_input(&json!(7)),
            Err(CountsError::NotAnObject)
        );
    }

    #[test]
    fn boundary_rejects_processed_past_total() {
        let err = SummaryCounts::from_input(&json!({"total": 2, "processed": 3})).unwrap_err();
        assert_eq!(
            err,
            CountsError::ProcessedExceedsTotal {
                processed: 3,
                total: 2
            }
        );
    }

    #[test]
    fn serialization_omits_unknown_counts() {
        let c = SummaryCounts {
            total: Some(0),
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"total":0}"#);
    }
}
