//! Baselines (OPERATIONS.md §6, §8): the pure rules of `baseline.capture`
//! and `baseline.compare` — what a gap is, how a capture's gaps decide its
//! outcome, how a compare's readable types decide its outcome, and how a
//! stale capture or compare is reconciled from its own proof (the snapshot
//! or the compare record linked to the run, never "a snapshot exists").

use crate::Outcome;
use crate::drift::{Finding, FindingKind};
use crate::reconcile::{AdapterResult, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// The phases of a capture, in order (keys prefix their ledger units).
pub const CAPTURE_PHASES: [(&str, &str); 4] = [
    ("resolve", "Resolve scope"),
    ("capture", "Capture evidence"),
    ("classify", "Classify gaps"),
    ("persist", "Persist snapshot"),
];

/// The phases of a compare, in order.
pub const COMPARE_PHASES: [(&str, &str); 4] = [
    ("load", "Load baseline"),
    ("read", "Read tenant"),
    ("diff", "Diff"),
    ("record", "Record findings"),
];

/// The `policy_type` of a gap that belongs to no known type: files of an
/// export whose type could not be told, which may hold any policy.
pub const UNATTRIBUTED: &str = "(unattributed)";

/// Why a snapshot lacks fidelity somewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The type could not be listed (a failure reading it).
    TypeUnreadable,
    /// The tenant or provider does not offer the type at all.
    TypeUnsupported,
    /// The policy was listed but its settings could not be read: its
    /// evidence is the listed metadata only (fallback evidence).
    SettingsUnreadable,
    /// Two policies share the identity used for matching (type + name):
    /// neither can be compared without a guess.
    AmbiguousMatch,
}

impl GapReason {
    pub const ALL: [GapReason; 4] = [
        GapReason::TypeUnreadable,
        GapReason::TypeUnsupported,
        GapReason::SettingsUnreadable,
        GapReason::AmbiguousMatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::TypeUnreadable => "type_unreadable",
            GapReason::TypeUnsupported => "type_unsupported",
            GapReason::SettingsUnreadable => "settings_unreadable",
            GapReason::AmbiguousMatch => "ambiguous_match",
        }
    }

    pub fn parse(s: &str) -> Option<GapReason> {
        GapReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One gap of a snapshot: a whole type (`external_id` = None) or one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub policy_type: String,
    pub external_id: Option<String>,
    pub reason: GapReason,
    pub message: String,
}

/// A listed policy, as matching sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<'a> {
    pub policy_type: &'a str,
    pub external_id: &'a str,
    pub display_name: &'a str,
}

/// The identity policies are matched by: the name, trimmed, without case.
pub fn identity(display_name: &str) -> String {
    display_name.trim().to_lowercase()
}

/// One `ambiguous_match` gap per policy sharing its type and identity with
/// another (each names the others), in input order.
pub fn ambiguous_gaps(listed: &[Listed<'_>]) -> Vec<Gap> {
    let mut by_identity: BTreeMap<(&str, String), Vec<&Listed<'_>>> = BTreeMap::new();
    for l in listed {
        by_identity
            .entry((l.policy_type, identity(l.display_name)))
            .or_default()
            .push(l);
    }
    let mut gaps = Vec::new();
    for l in listed {
        let same = &by_identity[&(l.policy_type, identity(l.display_name))];
        if same.len() < 2 {
            continue;
        }
        let others: Vec<&str> = same
            .iter()
            .filter(|o| o.external_id != l.external_id)
            .map(|o| o.external_id)
            .collect();
        gaps.push(Gap {
            policy_type: l.policy_type.to_owned(),
            external_id: Some(l.external_id.to_owned()),
            reason: GapReason::AmbiguousMatch,
            message: format!(
                "`{}` shares its name with {} other {} ({}): it cannot be matched without a guess",
                l.display_name.trim(),
                others.len(),
                l.policy_type,
                others.join(", ")
            ),
        });
    }
    gaps
}

/// Gap counts per type and reason (`context.baseline_snapshot.gaps`).
pub fn gaps_by_type(gaps: &[Gap]) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for g in gaps {
        *out.entry(g.policy_type.clone())
            .or_default()
            .entry(g.reason.as_str())
            .or_default() += 1;
    }
    out
}

/// What a capture's outcome is decided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureTally {
    /// Policy types in scope.
    pub types: u64,
    /// Policies held (full or fallback evidence).
    pub policies: u64,
    pub gaps: u64,
    /// Gaps of whole types (`external_id` none).
    pub type_gaps: u64,
}

impl CaptureTally {
    pub fn of(types: usize, policies: u64, gaps: &[Gap]) -> CaptureTally {
        CaptureTally {
            types: types as u64,
            policies,
            gaps: gaps.len() as u64,
            type_gaps: gaps.iter().filter(|g| g.external_id.is_none()).count() as u64,
        }
    }
}

/// A capture's outcome and reason — the one rule of the live run and of
/// its reconciliation: no gap → succeeded; gaps or fallback evidence →
/// partially succeeded; nothing captured while every type in scope was a
/// gap → failed (a snapshot of nothing is no baseline).
pub fn capture_outcome(t: CaptureTally) -> (Outcome, &'static str) {
    if t.gaps == 0 {
        (Outcome::Succeeded, "baseline_captured")
    } else if t.policies == 0 && t.types > 0 && t.type_gaps >= t.types {
        (Outcome::Failed, "baseline_no_evidence")
    } else {
        (Outcome::PartiallySucceeded, "baseline_captured_with_gaps")
    }
}

/// Per-type finding counts (`context.compare.per_type`).
pub fn findings_by_type(findings: &[Finding]) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for f in findings {
        let kind = match f.kind {
            FindingKind::Missing => "missing",
            FindingKind::Unexpected => "unexpected",
            FindingKind::Changed => "changed",
        };
        *out.entry(f.policy_type.clone())
            .or_default()
            .entry(kind)
            .or_default() += 1;
    }
    out
}

/// A compare's outcome: findings recorded for every type of the baseline
/// and nothing left unverified → succeeded (drift or not); some types
/// unreadable or with gaps, or other gaps (files of no known type, a
/// backup set without its directory) → partially succeeded; no type
/// compared at all → failed.
pub fn compare_outcome(types: u64, short: u64, other_gaps: bool) -> (Outcome, &'static str) {
    if types == 0 || short >= types {
        (Outcome::Failed, "compare_nothing_compared")
    } else if short == 0 && !other_gaps {
        (Outcome::Succeeded, "compare_recorded")
    } else {
        (Outcome::PartiallySucceeded, "compare_with_gaps")
    }
}

/// Whether a compare found drift, as an alert keys on it: `Some(true)` with
/// a finding recorded; `Some(false)` only when every type of the baseline
/// was compared whole (none unreadable or with gaps, no other gap) and no
/// finding was withheld; otherwise `None`, unknown — no finding among what
/// could be compared says nothing of the rest, and a clean bill there would
/// silence the alert.
pub fn drift_found(findings: u64, withheld: u64, short_types: u64, other_gaps: bool) -> Option<bool> {
    if findings > 0 {
        Some(true)
    } else if withheld > 0 || short_types > 0 || other_gaps {
        None
    } else {
        Some(false)
    }
}

/// [`drift_found`] of a recorded compare's summary (`context.compare`):
/// what it recorded, or, for a record without the member, its findings
/// count alone when it had any.
pub fn recorded_drift_found(findings: u64, summary: &serde_json::Value) -> Option<bool> {
    match summary.get("drift_found") {
        Some(serde_json::Value::Bool(b)) => Some(*b),
        Some(_) => None,
        None => (findings > 0).then_some(true),
    }
}

/// A snapshot linked to a capture run, as its reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotProof {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub sealed: bool,
    pub tally: CaptureTally,
}

/// The run whose proof is read.
#[derive(Debug, Clone, Copy)]
pub struct ProofScope<'a> {
    pub workspace_id: &'a str,
    pub tenant_id: &'a str,
    /// The reason code the run's context records for an eligibility or
    /// scope stop (`context.<family>.reason_code`), if any.
    pub stopped: Option<&'a str>,
}

/// Reconciles a stale `baseline.capture` (OPERATIONS.md §8): a sealed
/// snapshot linked to this run, of its tenant, with zero gaps → succeeded;
/// with gaps → partially succeeded; the context proves an eligibility or
/// scope stop → blocked; no snapshot, an unsealed one, another tenant's, or
/// two candidates → never succeeded.
pub fn reconcile_capture(run: ProofScope<'_>, snapshots: &[SnapshotProof]) -> AdapterResult {
    if let Some(foreign) = snapshots
        .iter()
        .find(|s| s.workspace_id != run.workspace_id || s.tenant_id != run.tenant_id)
    {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_wrong_scope",
            format!("snapshot {} linked to this run is of another tenant", foreign.id),
        );
    }
    if snapshots.len() > 1 {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_ambiguous",
            format!("{} snapshots claim this run; none is trusted", snapshots.len()),
        );
    }
    let Some(s) = snapshots.first() else {
        if let Some(code) = run.stopped {
            return AdapterResult::new(
                Verdict::Blocked,
                code,
                format!("the capture stopped before any evidence: {code}"),
            );
        }
        return AdapterResult::stale_no_proof("This baseline capture");
    };
    let artifact =
        json!({"kind": "baseline_snapshot", "id": s.id, "policies": s.tally.policies, "gaps": s.tally.gaps});
    if !s.sealed {
        return AdapterResult::new(
            Verdict::Failed,
            "snapshot_unsealed",
            format!(
                "snapshot {} was never sealed: its evidence is incomplete, so it proves nothing",
                s.id
            ),
        )
        .with_artifact(artifact);
    }
    // The live run's rule, so a dead worker never earns a better outcome.
    let (outcome, code) = capture_outcome(s.tally);
    AdapterResult::new(
        Verdict::from_outcome(outcome),
        code,
        format!(
            "sealed snapshot {} holds {} policies of {} types, with {} gaps",
            s.id, s.tally.policies, s.tally.types, s.tally.gaps
        ),
    )
    .with_artifact(artifact)
}

/// A compare record linked to a compare run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareProof {
    pub workspace_id: String,
    pub tenant_id: String,
    pub findings: u64,
    pub types: u64,
    /// Types not compared whole (unreadable, or with gaps).
    pub short_types: u64,
    /// Gaps of no one type (unattributed files, a set without directory).
    pub other_gaps: bool,
}

/// Reconciles a stale `baseline.compare`: its compare record (written with
/// its findings in one transaction) decides by [`compare_outcome`]; none →
/// blocked when the context proves it had no baseline, else never succeeded.
pub fn reconcile_compare(run: ProofScope<'_>, record: Option<&CompareProof>) -> AdapterResult {
    let Some(c) = record else {
        if let Some(code) = run.stopped {
            return AdapterResult::new(
                Verdict::Blocked,
                code,
                format!("the compare stopped before any diff: {code}"),
            );
        }
        return AdapterResult::stale_no_proof("This baseline compare");
    };
    if c.workspace_id != run.workspace_id || c.tenant_id != run.tenant_id {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_wrong_scope",
            "the compare record linked to this run is of another tenant",
        );
    }
    let (outcome, code) = compare_outcome(c.types, c.short_types, c.other_gaps);
    AdapterResult::new(
        Verdict::from_outcome(outcome),
        code,
        format!(
            "{} findings recorded over {} types ({} not compared whole)",
            c.findings, c.types, c.short_types
        ),
    )
    .with_artifact(json!({"kind": "baseline_compare", "findings": c.findings}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_found_unknown_or_absent_never_a_clean_bill_over_gaps() {
        assert_eq!(drift_found(2, 0, 0, false), Some(true));
        assert_eq!(
            drift_found(2, 1, 3, true),
            Some(true),
            "a finding is drift whatever else"
        );
        assert_eq!(drift_found(0, 0, 0, false), Some(false));
        assert_eq!(drift_found(0, 1, 0, false), None, "a withheld finding");
        assert_eq!(drift_found(0, 0, 1, false), None, "a type not compared whole");
        assert_eq!(drift_found(0, 0, 0, true), None, "a gap of no one type");
        let recorded = |v: serde_json::Value| recorded_drift_found(0, &v);
        assert_eq!(recorded(json!({"drift_found": false})), Some(false));
        assert_eq!(recorded(json!({"drift_found": null})), None);
        assert_eq!(recorded(json!({})), None);
        assert_eq!(recorded_drift_found(3, &json!({})), Some(true));
    }

    fn listed<'a>(t: &'a str, id: &'a str, name: &'a str) -> Listed<'a> {
        Listed {
            policy_type: t,
            external_id: id,
            display_name: name,
        }
    }

    #[test]
    fn two_policies_of_one_type_and_name_are_each_an_ambiguous_gap() {
        let gaps = ambiguous_gaps(&[
            listed("deviceConfigurations", "1", "Baseline"),
            listed("deviceConfigurations", "2", " baseline "),
            listed("deviceCompliancePolicies", "3", "Baseline"),
            listed("deviceConfigurations", "4", "Other"),
        ]);
        assert_eq!(gaps.len(), 2);
        assert!(gaps.iter().all(|g| g.reason == GapReason::AmbiguousMatch));
        assert_eq!(gaps[0].external_id.as_deref(), Some("1"));
        assert!(gaps[0].message.contains('2'), "{}", gaps[0].message);
    }

    #[test]
    fn a_capture_is_partial_with_any_gap_and_failed_with_nothing_but_gaps() {
        let gap = |id: Option<&str>, reason| Gap {
            policy_type: "t".into(),
            external_id: id.map(str::to_owned),
            reason,
            message: String::new(),
        };
        let o = |types, policies, gaps: &[Gap]| capture_outcome(CaptureTally::of(types, policies, gaps)).0;
        assert_eq!(o(2, 5, &[]), Outcome::Succeeded);
        assert_eq!(o(0, 0, &[]), Outcome::Succeeded, "an empty scope is a baseline");
        assert_eq!(
            o(2, 5, &[gap(Some("x"), GapReason::SettingsUnreadable)]),
            Outcome::PartiallySucceeded
        );
        assert_eq!(
            o(2, 3, &[gap(None, GapReason::TypeUnreadable)]),
            Outcome::PartiallySucceeded
        );
        assert_eq!(
            o(
                2,
                0,
                &[
                    gap(None, GapReason::TypeUnreadable),
                    gap(None, GapReason::TypeUnsupported)
                ]
            ),
            Outcome::Failed
        );
    }

    #[test]
    fn a_compare_is_partial_when_some_types_are_short() {
        assert_eq!(compare_outcome(3, 0, false).0, Outcome::Succeeded);
        assert_eq!(compare_outcome(3, 0, true).0, Outcome::PartiallySucceeded);
        assert_eq!(compare_outcome(3, 1, false).0, Outcome::PartiallySucceeded);
        assert_eq!(compare_outcome(3, 3, false).0, Outcome::Failed);
        assert_eq!(
            compare_outcome(0, 0, false).0,
            Outcome::Failed,
            "nothing compared"
        );
    }

    fn scope(stopped: Option<&str>) -> ProofScope<'_> {
        ProofScope {
            workspace_id: "w",
            tenant_id: "t",
            stopped,
        }
    }

    fn snap(tenant: &str, sealed: bool, gaps: u64) -> SnapshotProof {
        SnapshotProof {
            id: "s".into(),
            workspace_id: "w".into(),
            tenant_id: tenant.into(),
            sealed,
            tally: CaptureTally {
                types: 2,
                policies: 4,
                gaps,
                type_gaps: 0,
            },
        }
    }

    #[test]
    fn the_capture_matrix() {
        let v = |r: AdapterResult| (r.verdict, r.reason_code);
        assert_eq!(
            v(reconcile_capture(scope(None), &[snap("t", true, 0)])),
            (Verdict::Succeeded, "baseline_captured".into())
        );
        assert_eq!(
            reconcile_capture(scope(None), &[snap("t", true, 2)]).verdict,
            Verdict::PartiallySucceeded
        );
        assert_eq!(
            reconcile_capture(scope(Some("provider_permission_missing")), &[]).verdict,
            Verdict::Blocked
        );
        // The live rule: every type a gap and nothing held is failed.
        let mut nothing = snap("t", true, 2);
        nothing.tally = CaptureTally {
            types: 2,
            policies: 0,
            gaps: 2,
            type_gaps: 2,
        };
        for never in [
            reconcile_capture(scope(None), &[nothing]),
            reconcile_capture(scope(None), &[]),
            reconcile_capture(scope(None), &[snap("t", false, 0)]),
            reconcile_capture(scope(None), &[snap("other", true, 0)]),
            reconcile_capture(scope(None), &[snap("t", true, 0), snap("t", true, 0)]),
        ] {
            assert_eq!(never.verdict, Verdict::Failed, "{never:?}");
        }
    }

    #[test]
    fn the_compare_matrix() {
        let rec = |tenant: &str, short| CompareProof {
            workspace_id: "w".into(),
            tenant_id: tenant.into(),
            findings: 2,
            types: 3,
            short_types: short,
            other_gaps: false,
        };
        assert_eq!(
            reconcile_compare(scope(None), Some(&rec("t", 0))).verdict,
            Verdict::Succeeded
        );
        assert_eq!(
            reconcile_compare(scope(None), Some(&rec("t", 1))).verdict,
            Verdict::PartiallySucceeded
        );
        assert_eq!(
            reconcile_compare(scope(Some("no_baseline_snapshot")), None).verdict,
            Verdict::Blocked
        );
        assert_eq!(reconcile_compare(scope(None), None).verdict, Verdict::Failed);
        assert_eq!(
            reconcile_compare(scope(None), Some(&rec("other", 0))).verdict,
            Verdict::Failed
        );
    }
}
