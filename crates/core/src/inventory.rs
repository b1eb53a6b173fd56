//! Inventory coverage and the `inventory.sync` outcome rule (OPERATIONS.md §8).
//!
//! Per-type coverage is the proof of an inventory sync: a type not fully read
//! is `failed`, never "empty". The same decision serves the sync's own
//! completion and, later, the reconciliation adapter, so the rule lives once.

use crate::Outcome;
use crate::reconcile::{AdapterResult, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// Coverage state of one attempted policy type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageStatus {
    /// Every page of the type was read in this run.
    Covered,
    /// Every page was read, but some of the type's source items (files of a
    /// folder export) could not be: each is listed in `unreadable`. The
    /// items read are stored; the type is not complete.
    Partial,
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
    /// How many source items of the type could not be read (a `partial` type).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable_count: u64,
    /// The first [`MAX_LISTED_FAILURES`] of them, each with its source and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<ItemFailure>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many unreadable items a coverage entry lists by name (the count is exact).
pub const MAX_LISTED_FAILURES: usize = 200;

/// A source item that could not be read: a file of a folder export (its path
/// from the export's root) or one item of a service, with a stable code and
/// the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFailure {
    pub source: String,
    pub code: String,
    pub message: String,
}

impl ItemFailure {
    pub fn new(source: impl Into<String>, code: &str, message: impl Into<String>) -> ItemFailure {
        ItemFailure {
            source: source.into(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// One line naming each of `failures` (up to `max`) with its reason, for a
/// run's failure list: "a.json: is not valid JSON (file_json_invalid); …".
pub fn describe_failures(failures: &[ItemFailure], total: u64, max: usize) -> String {
    let mut parts: Vec<String> = failures
        .iter()
        .take(max)
        .map(|f| format!("{}: {} ({})", f.source, f.message, f.code))
        .collect();
    let listed = parts.len() as u64;
    if total > listed {
        parts.push(format!("and {} more", total - listed));
    }
    parts.join("; ")
}

/// A decision with a stable reason code, for completion and reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason_code: &'static str,
}

/// Decide an inventory sync's outcome from its attempted types and their coverage.
///
/// - every attempted type covered, and no source item left unread →
///   `succeeded`;
/// - some types covered or partial (read with some items unreadable), others
///   failed, blocked, skipped or missing, or items that belong to no type
///   unreadable (`unattributed`) → `partially_succeeded`;
/// - nothing covered and only blocked/skipped reasons → `blocked`;
/// - otherwise (nothing covered, any failure or missing coverage, or no
///   attempted types at all) → `failed`: no proof, fail closed.
///
/// Coverage of a type that was not attempted is ignored: it cannot be proof
/// for this run.
pub fn decide(
    attempted: &[String],
    coverage: &BTreeMap<String, TypeCoverage>,
    unattributed: u64,
) -> Decision {
    if attempted.is_empty() {
        return Decision {
            outcome: Outcome::Failed,
            reason_code: "inventory_no_attempted_types",
        };
    }
    let (mut covered, mut partial, mut failed, mut blocked) = (0usize, 0usize, 0usize, 0usize);
    for t in attempted {
        match coverage.get(t).map(|c| c.status) {
            Some(CoverageStatus::Covered) => covered += 1,
            Some(CoverageStatus::Partial) => partial += 1,
            Some(CoverageStatus::Blocked | CoverageStatus::Skipped) => blocked += 1,
            Some(CoverageStatus::Failed) | None => failed += 1,
        }
    }
    if covered == attempted.len() && unattributed == 0 {
        Decision {
            outcome: Outcome::Succeeded,
            reason_code: "inventory_fully_covered",
        }
    } else if covered + partial > 0 {
        Decision {
            outcome: Outcome::PartiallySucceeded,
            reason_code: if failed + blocked == 0 {
                "inventory_items_unreadable"
            } else {
                "inventory_partially_covered"
            },
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

/// Inventory items whose type the run read whole last (`type_read_by_run_id`), grouped by scope and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedItems {
    pub workspace_id: String,
    pub tenant_id: String,
    pub policy_type: String,
    pub count: u64,
}

/// The run whose proof is read.
#[derive(Debug, Clone, Copy)]
pub struct RunScope<'a> {
    pub run_id: &'a str,
    pub workspace_id: &'a str,
    pub tenant_id: &'a str,
}

/// Reconciles a stale `inventory.sync` from its proof (OPERATIONS.md §8):
/// the run's own per-type coverage, cross-checked against the items that
/// name the run as last seen.
///
/// - items linked to the run but in another workspace or tenant → failed
///   (`proof_wrong_scope`): the proof cannot be trusted at all;
/// - no attempted types recorded → failed (`stale_no_proof`);
/// - a type claimed covered with fewer linked items than it claims is not
///   proof for that type (ambiguous), so it counts as not covered;
/// - then the coverage rule of [`decide`].
pub fn reconcile(
    run: RunScope<'_>,
    attempted: Option<&[String]>,
    coverage: &BTreeMap<String, TypeCoverage>,
    unattributed: u64,
    linked: &[LinkedItems],
) -> AdapterResult {
    let artifact = |n: u64| json!({"kind": "inventory_items", "type_read_by_run_id": run.run_id, "count": n});
    if let Some(foreign) = linked
        .iter()
        .find(|l| l.workspace_id != run.workspace_id || l.tenant_id != run.tenant_id)
    {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_wrong_scope",
            format!(
                "{} inventory item(s) linked to this run belong to another tenant, so its proof cannot be trusted",
                foreign.count
            ),
        );
    }
    let Some(attempted) = attempted.filter(|a| !a.is_empty()) else {
        return AdapterResult::stale_no_proof("This inventory sync");
    };
    let linked_count = |t: &str| {
        linked
            .iter()
            .filter(|l| l.policy_type == t)
            .map(|l| l.count)
            .sum::<u64>()
    };
    let mut effective = coverage.clone();
    let mut refuted = Vec::new();
    for t in attempted {
        if let Some(c) = effective.get(t)
            && matches!(c.status, CoverageStatus::Covered | CoverageStatus::Partial)
            && linked_count(t) < c.item_count
        {
            refuted.push(t.clone());
            effective.remove(t);
        }
    }
    let d = decide(attempted, &effective, unattributed);
    let covered = attempted
        .iter()
        .filter(|t| {
            effective
                .get(*t)
                .is_some_and(|c| matches!(c.status, CoverageStatus::Covered | CoverageStatus::Partial))
        })
        .count();
    let items: u64 = attempted.iter().map(|t| linked_count(t)).sum();
    let mut explanation = format!(
        "{covered} of {} attempted policy types were fully read by this run",
        attempted.len()
    );
    if !refuted.is_empty() {
        explanation.push_str(&format!(
            "; coverage of {} is not backed by its items",
            refuted.join(", ")
        ));
    }
    let reason = if !refuted.is_empty() && d.outcome != Outcome::Succeeded {
        "inventory_proof_ambiguous"
    } else {
        d.reason_code
    };
    AdapterResult::new(Verdict::from_outcome(d.outcome), reason, explanation)
        .with_artifact(artifact(items))
        .with_units_succeeded(covered as u64)
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
                        unreadable_count: 0,
                        unreadable: Vec::new(),
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
        let d = decide(&types(&["a", "b"]), &cov(&[("a", Covered), ("b", Covered)]), 0);
        assert_eq!(d.outcome, Outcome::Succeeded);
    }

    #[test]
    fn mixed_is_partial() {
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Covered), ("b", Failed)]), 0).outcome,
            Outcome::PartiallySucceeded
        );
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Covered)]), 0).outcome,
            Outcome::PartiallySucceeded
        );
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Covered), ("b", Skipped)]), 0).outcome,
            Outcome::PartiallySucceeded,
            "a skipped type is not success"
        );
    }

    #[test]
    fn only_blocked_reasons_block() {
        let d = decide(&types(&["a", "b"]), &cov(&[("a", Blocked), ("b", Skipped)]), 0);
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
        assert_eq!(decide(&types(&["a"]), &cov(&[]), 0).outcome, Outcome::Failed);
        assert_eq!(
            decide(&types(&["a", "b"]), &cov(&[("a", Blocked), ("b", Failed)]), 0).outcome,
            Outcome::Failed
        );
        assert_eq!(
            decide(&types(&["a"]), &cov(&[("a", Blocked)]), 0).outcome,
            Outcome::Blocked
        );
        assert_eq!(decide(&[], &cov(&[("a", Covered)]), 0).outcome, Outcome::Failed);
    }

    #[test]
    fn unreadable_items_make_a_read_partial_never_succeeded() {
        let d = decide(&types(&["a", "b"]), &cov(&[("a", Covered), ("b", Partial)]), 0);
        assert_eq!(
            d,
            Decision {
                outcome: Outcome::PartiallySucceeded,
                reason_code: "inventory_items_unreadable"
            }
        );
        assert_eq!(
            decide(&types(&["a"]), &cov(&[("a", Partial)]), 0).outcome,
            Outcome::PartiallySucceeded
        );
        // A file of no type left unread: every type covered is still not success.
        let d = decide(&types(&["a"]), &cov(&[("a", Covered)]), 1);
        assert_eq!(d.outcome, Outcome::PartiallySucceeded);
        assert_eq!(
            decide(&types(&["a"]), &cov(&[("a", Failed)]), 1).outcome,
            Outcome::Failed
        );
        let r = reconcile(
            RUN,
            Some(&types(&["a"])),
            &cov(&[("a", Covered)]),
            2,
            &[linked("w", "t", "a", 1)],
        );
        assert_eq!(r.verdict, Verdict::PartiallySucceeded);
    }

    #[test]
    fn failures_are_described_by_source_and_reason_with_the_rest_counted() {
        let f = vec![
            ItemFailure::new("a.json", "file_json_invalid", "is not valid JSON"),
            ItemFailure::new("b.json", "file_too_large", "is too large"),
        ];
        assert_eq!(
            describe_failures(&f, 5, 1),
            "a.json: is not valid JSON (file_json_invalid); and 4 more"
        );
    }

    #[test]
    fn coverage_of_unattempted_types_is_not_proof() {
        let d = decide(&types(&["a"]), &cov(&[("b", Covered)]), 0);
        assert_eq!(d.outcome, Outcome::Failed);
    }

    fn linked(ws: &str, tenant: &str, t: &str, count: u64) -> LinkedItems {
        LinkedItems {
            workspace_id: ws.into(),
            tenant_id: tenant.into(),
            policy_type: t.into(),
            count,
        }
    }

    const RUN: RunScope<'static> = RunScope {
        run_id: "r",
        workspace_id: "w",
        tenant_id: "t",
    };

    #[test]
    fn reconcile_matrix() {
        let attempted = types(&["a", "b"]);
        let full = cov(&[("a", Covered), ("b", Covered)]);
        let ok = [linked("w", "t", "a", 1), linked("w", "t", "b", 1)];
        let r = reconcile(RUN, Some(&attempted), &full, 0, &ok);
        assert_eq!(
            (r.verdict, r.reason_code.as_str()),
            (Verdict::Succeeded, "inventory_fully_covered")
        );
        assert_eq!(r.related_artifact.unwrap()["count"], 2);

        let mixed = cov(&[("a", Covered), ("b", Failed)]);
        assert_eq!(
            reconcile(RUN, Some(&attempted), &mixed, 0, &ok[..1]).verdict,
            Verdict::PartiallySucceeded
        );

        let blocked = cov(&[("a", Blocked), ("b", Blocked)]);
        assert_eq!(
            reconcile(RUN, Some(&attempted), &blocked, 0, &[]).verdict,
            Verdict::Blocked
        );

        // No coverage at all: never succeeded.
        let r = reconcile(RUN, Some(&attempted), &cov(&[]), 0, &ok);
        assert_eq!(r.verdict, Verdict::Failed);
        let r = reconcile(RUN, None, &full, 0, &ok);
        assert_eq!(
            (r.verdict, r.reason_code.as_str()),
            (Verdict::Failed, "stale_no_proof")
        );
    }

    #[test]
    fn wrong_scope_proof_fails_closed() {
        let attempted = types(&["a"]);
        let full = cov(&[("a", Covered)]);
        for bad in [linked("w", "other", "a", 1), linked("x", "t", "a", 1)] {
            let r = reconcile(RUN, Some(&attempted), &full, 0, &[linked("w", "t", "a", 1), bad]);
            assert_eq!(
                (r.verdict, r.reason_code.as_str()),
                (Verdict::Failed, "proof_wrong_scope")
            );
        }
    }

    #[test]
    fn coverage_without_its_items_is_ambiguous_and_never_succeeds() {
        let attempted = types(&["a", "b"]);
        let full = cov(&[("a", Covered), ("b", Covered)]);
        let r = reconcile(RUN, Some(&attempted), &full, 0, &[linked("w", "t", "a", 1)]);
        assert_eq!(
            (r.verdict, r.reason_code.as_str()),
            (Verdict::PartiallySucceeded, "inventory_proof_ambiguous")
        );
        let r = reconcile(RUN, Some(&attempted), &full, 0, &[]);
        assert_eq!(
            (r.verdict, r.reason_code.as_str()),
            (Verdict::Failed, "inventory_proof_ambiguous")
        );
    }
}
