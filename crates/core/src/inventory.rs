//! Inventory coverage and the `inventory.sync` outcome rule (OPERATIONS.md §8).
//!
//! Per-type coverage is the proof of an inventory sync: a type not fully read
//! is `failed`, never "empty". The same decision serves the sync's own
//! completion and, later, the reconciliation adapter, so the rule lives once.

use crate::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Coverage state of one attempted policy type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageStatus {
    /// Every page of the type was read in this run.
    Covered,
    /// Reading failed (throttling exhausted, server error, permission on this type…).
    Failed,
    /// A precondition stopped the type before any read (missing permission, not licensed).
    Blocked,
    /// Deliberately not read.
    Skipped,
}

/// `context.inventory.coverage[<policy type>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCoverage {
    pub status: CoverageStatus,
    pub item_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
}

/// A decision with a stable reason code, for completion and reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason_code: &'static str,
}

/// Decide an inventory sync's outcome from its attempted types and their coverage.
///
/// - every attempted type covered → `succeeded`;
/// - some covered, others failed, blocked, skipped or missing → `partially_succeeded`;
/// - nothing covered and only blocked/skipped reasons → `blocked`;
/// - otherwise (nothing covered, any failure or missing coverage, or no
///   attempted types at all) → `failed`: no proof, fail closed.
///
/// Coverage of a type that was not attempted is ignored: it cannot be proof
/// for this run.
pub fn decide(attempted: &[String], coverage: &BTreeMap<String, TypeCoverage>) -> Decision {
    if attempted.is_empty() {
        return Decision {
            outcome: Outcome::Failed,
            reason_code: "inventory_no_attempted_types",
        };
    }
    let (mut covered, mut failed, mut blocked) = (0usize, 0usize, 0usize);
    for t in attempted {
        match coverage.get(t).map(|c| c.status) {
            Some(CoverageStatus::Covered) => covered += 1,
            Some(CoverageStatus::Blocked | CoverageStatus::Skipped) => blocked += 1,
            Some(CoverageStatus::Failed) | None => failed += 1,
        }
    }
    if covered == attempted.len() {
        Decision {
            outcome: Outcome::Succeeded,
            reason_code: "inventory_fully_covered",
        }
    } else if covered > 0 {
        Decision {
            outcome: Outcome::PartiallySucceeded,
            reason_code: "inventory_partially_covered",
        }
    } else if failed == 0 && blocked > 0 {
        Decision {
            outcome: Outcome::Blocked,
            reason_code: "inventory_blocked",
        }
    } else {
        Decision {
            outcome: Outcome::Failed,
            reason_code: "inventory_no_coverage",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(entries: &[(&str, CoverageStatus)]) -> BTreeMap<String, TypeCoverage> {
        entries
            .iter()
            .map(|(t, s)| {
                (
                    (*t).to_owned(),
                    TypeCoverage {
                        status: *s,
                        item_count: 1,
                        failure_code: None,
                    },
                )
            })
            .collect()
    }

    fn types(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    use CoverageStatus::*;

    #[test]
    fn full_coverage_succeeds() {
        let d = decide(&types(&["a", "b"]), &cov(&[("a", Covered), ("b", Covered)]));
        assert_eq!(d.outcome, Outcome::Succeeded);
    }

    #[test]
    fn mixed_is_partial() {
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Covered), ("b", Failed)])).outcome,
            Outcome::PartiallySucceeded
        );
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Covered)])).outcome,
            Outcome::PartiallySucceeded
        );
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Covered), ("b", Skipped)])).outcome,
            Outcome::PartiallySucceeded,
            "a skipped type is not success"
        );
    }

    #[test]
    fn only_blocked_reasons_block() {
        let d = decide(&types(&["a", "b"]), &cov(&[("a", Blocked), ("b", Skipped)]));
        assert_eq!(
            d,
            Decision {
                outcome: Outcome::Blocked,
                reason_code: "inventory_blocked"
            }
        );
    }

    #[test]
    fn no_coverage_fails_closed() {
        assert_eq!(decide(&types(&["a"]), &cov(&[])).outcome, Outcome::Failed);
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Blocked), ("b", Failed)])).outcome,
            Outcome::Failed
        );
        assert_eq!(
            decide(&types(&["a"]), &cov(&[("a", Blocked)])).outcome,
            Outcome::Blocked
        );
        assert_eq!(decide(&[], &cov(&[("a", Covered)])).outcome, Outcome::Failed);
    }

    #[test]
    fn coverage_of_unattempted_types_is_not_proof() {
        let d = decide(&types(&["a"]), &cov(&[("b", Covered)]));
        assert_eq!(d.outcome, Outcome::Failed);
    }
}
