//! The result of reading a stale run's proof (OPERATIONS.md §8), and the
//! record written into `context.reconciliation` when it is applied.

use crate::{Outcome, RunStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an adapter concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Succeeded,
    PartiallySucceeded,
    Blocked,
    Failed,
    /// The proof does not allow a decision now; nothing is applied.
    NotReconciled,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::PartiallySucceeded => "partially_succeeded",
            Verdict::Blocked => "blocked",
            Verdict::Failed => "failed",
            Verdict::NotReconciled => "not_reconciled",
        }
    }

    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Verdict::Succeeded => Some(Outcome::Succeeded),
            Verdict::PartiallySucceeded => Some(Outcome::PartiallySucceeded),
            Verdict::Blocked => Some(Outcome::Blocked),
            Verdict::Failed => Some(Outcome::Failed),
            Verdict::NotReconciled => None,
        }
    }

    pub fn from_outcome(o: Outcome) -> Verdict {
        match o {
            Outcome::Succeeded => Verdict::Succeeded,
            Outcome::PartiallySucceeded => Verdict::PartiallySucceeded,
            Outcome::Blocked => Verdict::Blocked,
            Outcome::Failed | Outcome::Cancelled => Verdict::Failed,
            Outcome::Pending => Verdict::NotReconciled,
        }
    }
}

/// An adapter's answer: verdict, stable reason code, one line for the
/// operator, and the artifact the verdict rests on, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterResult {
    pub verdict: Verdict,
    pub reason_code: String,
    pub explanation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_artifact: Option<Value>,
    /// How many of the run's units the proof shows done, in all (recorded
    /// ones included), when the proof can tell: the closing write counts the
    /// unrecorded ones it covers as `succeeded`, the rest as `failed`
    /// (OPERATIONS.md §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_succeeded: Option<u64>,
}

impl AdapterResult {
    pub fn new(verdict: Verdict, reason_code: &str, explanation: impl Into<String>) -> AdapterResult {
        assert!(
            crate::failure::is_stable_code(reason_code),
            "reason code `{reason_code}` is not snake_case"
        );
        AdapterResult {
            verdict,
            reason_code: reason_code.to_owned(),
            explanation: explanation.into(),
            related_artifact: None,
            units_succeeded: None,
        }
    }

    pub fn with_artifact(mut self, artifact: Value) -> AdapterResult {
        self.related_artifact = Some(artifact);
        self
    }

    /// The proof shows `n` of the run's units done, in all.
    pub fn with_units_succeeded(mut self, n: u64) -> AdapterResult {
        self.units_succeeded = Some(n);
        self
    }

    /// The generic fail-closed result for types without an adapter.
    pub fn stale_no_proof(what: &str) -> AdapterResult {
        AdapterResult::new(
            Verdict::Failed,
            "stale_no_proof",
            format!("{what} went stale and has no proof of its work, so it is closed as failed"),
        )
    }
}

/// `context.reconciliation`, as recorded on the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconciliationRecord {
    pub adapter: String,
    pub reason_code: String,
    pub explanation: String,
    pub previous_status: RunStatus,
    pub previous_outcome: Outcome,
    pub related_artifact: Option<Value>,
    /// RFC 3339.
    pub reconciled_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_map_to_terminal_outcomes() {
        assert_eq!(
            Verdict::PartiallySucceeded.outcome(),
            Some(Outcome::PartiallySucceeded)
        );
        assert_eq!(Verdict::NotReconciled.outcome(), None);
        for v in [Verdict::PartiallySucceeded, Verdict::NotReconciled] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str(), "one spelling");
        }
        assert_eq!(AdapterResult::stale_no_proof("x").reason_code, "stale_no_proof");
        assert_eq!(AdapterResult::stale_no_proof("x").verdict, Verdict::Failed);
    }
}
