//! What a run's closing write records besides its outcome (OPERATIONS.md §3,
//! §8): the units it never recorded, and whether an admin's force-close may
//! apply the outcome asked for.
//!
//! - [`remainder_at_close`]: a run whose `total` is set and that closes
//!   before all its units were recorded (reconciliation, force-close, cancel,
//!   a handler stopping early) records the remainder in the closing
//!   transaction — `succeeded` where the adapter's proof shows those units
//!   done, else `failed` (one failure `not_attempted` naming how many), or
//!   `skipped` when cancelled — so that for every completed run with a total
//!   `succeeded + failed + skipped == processed == total`. Runs closed before
//!   `total` existed carry no counts.
//! - [`decide_force_close`]: force-close never fabricates success. `failed`
//!   and `cancelled` are always allowed; `blocked` only while no unit was
//!   recorded; `succeeded` / `partially_succeeded` only when the run's
//!   adapter, asked at that moment, finds proof for exactly that outcome.

use crate::reconcile::{AdapterResult, Verdict};
use crate::{Failure, Outcome, SummaryCounts};

/// Counts added to a run's outcome counters when it closes with units unrecorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Remainder {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Remainder {
    pub fn units(&self) -> u64 {
        self.succeeded + self.failed + self.skipped
    }
}

/// The stable code of the failure that names the units a run never attempted.
pub const NOT_ATTEMPTED: &str = "not_attempted";

/// How the units `counts` has not recorded are counted when the run closes
/// with `outcome`. `proven_succeeded` is how many of the run's units its
/// adapter's proof shows done in all (recorded ones included), when a proof
/// was read. `None` when the run has no total (nothing to explain) or
/// nothing remains.
pub fn remainder_at_close(
    counts: &SummaryCounts,
    outcome: Outcome,
    proven_succeeded: Option<u64>,
) -> Option<Remainder> {
    let total = counts.total?;
    let remaining = total.saturating_sub(counts.processed.unwrap_or(0));
    if remaining == 0 {
        return None;
    }
    if outcome == Outcome::Cancelled {
        return Some(Remainder {
            skipped: remaining,
            ..Remainder::default()
        });
    }
    let proven_extra = proven_succeeded
        .unwrap_or(0)
        .saturating_sub(counts.succeeded.unwrap_or(0))
        .min(remaining);
    Some(Remainder {
        succeeded: proven_extra,
        failed: remaining - proven_extra,
        skipped: 0,
    })
}

/// The one failure recorded for the units of `remainder` that failed because
/// they were never attempted (`None` when none did). `noun` names a unit
/// ("policy types").
pub fn not_attempted_failure(remainder: &Remainder, total: u64, noun: &str) -> Option<Failure> {
    (remainder.failed > 0).then(|| {
        Failure::new(
            NOT_ATTEMPTED,
            format!(
                "{} of {total} {noun} were never recorded before the run closed and have no proof of being done",
                remainder.failed
            ),
        )
    })
}

/// `counts` after the remainder is added: what the closing write stores.
pub fn counts_at_close(counts: &SummaryCounts, remainder: Option<Remainder>) -> SummaryCounts {
    let Some(total) = counts.total else {
        return *counts;
    };
    let r = remainder.unwrap_or_default();
    SummaryCounts {
        processed: Some(counts.processed.unwrap_or(0) + r.units()),
        succeeded: Some(counts.succeeded.unwrap_or(0) + r.succeeded),
        failed: Some(counts.failed.unwrap_or(0) + r.failed),
        skipped: Some(counts.skipped.unwrap_or(0) + r.skipped),
        total: Some(total),
        ..*counts
    }
}

/// The longest force-close reason kept (it is stored and shown to operators).
pub const MAX_REASON_CHARS: usize = 1000;

/// Why a force-close was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceCloseRefusal {
    #[error("`{0}` is not a terminal outcome (succeeded, partially_succeeded, blocked, failed, cancelled)")]
    NotTerminal(Outcome),
    #[error("a force-close needs a reason")]
    ReasonRequired,
    #[error("the reason is limited to {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
    #[error(
        "`blocked` means stopped before any work, but {processed} unit(s) were already recorded: close it as failed or cancelled"
    )]
    WorkAlreadyRecorded { processed: u64 },
    #[error("no proof for `{requested}`: {why}")]
    NoProofForOutcome { requested: Outcome, why: String },
}

impl ForceCloseRefusal {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            ForceCloseRefusal::NotTerminal(_) => "invalid_outcome",
            ForceCloseRefusal::ReasonRequired => "reason_required",
            ForceCloseRefusal::ReasonTooLong => "reason_too_long",
            ForceCloseRefusal::WorkAlreadyRecorded { .. } => "units_already_recorded",
            ForceCloseRefusal::NoProofForOutcome { .. } => "no_proof_for_outcome",
        }
    }
}

impl ForceCloseRefusal {
    /// Refused for what was asked (a bad request), not for the run's state.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            ForceCloseRefusal::NotTerminal(_)
                | ForceCloseRefusal::ReasonRequired
                | ForceCloseRefusal::ReasonTooLong
        )
    }
}

/// The admin's reason as it is recorded: trimmed, not empty, at most
/// [`MAX_REASON_CHARS`] characters.
pub fn check_reason(reason: &str) -> Result<&str, ForceCloseRefusal> {
    let reason = reason.trim();
    if reason.is_empty() {
        Err(ForceCloseRefusal::ReasonRequired)
    } else if reason.chars().count() > MAX_REASON_CHARS {
        Err(ForceCloseRefusal::ReasonTooLong)
    } else {
        Ok(reason)
    }
}

/// Whether an admin may close a run whose counts are `counts` with
/// `requested`. `proof` is the run's adapter result read just now (`None`
/// when the type has no adapter or none was asked); it is needed only for a
/// success outcome. On `Ok`, the proof's count of units done (if any) is
/// what the remainder may count as succeeded.
pub fn decide_force_close(
    requested: Outcome,
    counts: &SummaryCounts,
    proof: Option<&AdapterResult>,
) -> Result<Option<u64>, ForceCloseRefusal> {
    match requested {
        Outcome::Pending => Err(ForceCloseRefusal::NotTerminal(requested)),
        Outcome::Failed | Outcome::Cancelled => Ok(None),
        Outcome::Blocked => match counts.processed.unwrap_or(0) {
            0 => Ok(None),
            processed => Err(ForceCloseRefusal::WorkAlreadyRecorded { processed }),
        },
        Outcome::Succeeded | Outcome::PartiallySucceeded => {
            let Some(proof) = proof else {
                return Err(ForceCloseRefusal::NoProofForOutcome {
                    requested,
                    why: "this type has no reconciliation adapter to read proof from".into(),
                });
            };
            if proof.verdict == Verdict::from_outcome(requested) {
                Ok(proof.units_succeeded)
            } else {
                Err(ForceCloseRefusal::NoProofForOutcome {
                    requested,
                    why: format!(
                        "its proof shows `{}` ({}: {})",
                        proof.verdict.as_str(),
                        proof.reason_code,
                        proof.explanation
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(total: Option<u64>, succeeded: u64, failed: u64, skipped: u64) -> SummaryCounts {
        SummaryCounts {
            total,
            processed: total.map(|_| succeeded + failed + skipped),
            succeeded: total.map(|_| succeeded),
            failed: total.map(|_| failed),
            skipped: total.map(|_| skipped),
            ..Default::default()
        }
    }

    #[test]
    fn runs_without_total_carry_no_counts() {
        let c = SummaryCounts::default();
        assert_eq!(remainder_at_close(&c, Outcome::Failed, Some(5)), None);
        assert_eq!(counts_at_close(&c, None), c);
    }

    #[test]
    fn unproven_remainder_fails_as_not_attempted() {
        // The reconciled inventory sync of the issue: 14 types, 3 recorded.
        let c = counts(Some(14), 3, 0, 0);
        let r = remainder_at_close(&c, Outcome::PartiallySucceeded, Some(3)).unwrap();
        assert_eq!(
            r,
            Remainder {
                succeeded: 0,
                failed: 11,
                skipped: 0
            }
        );
        let f = not_attempted_failure(&r, 14, "policy types").unwrap();
        assert_eq!(f.code, NOT_ATTEMPTED);
        assert!(f.message.starts_with("11 of 14 policy types"), "{}", f.message);
        let closed = counts_at_close(&c, Some(r));
        assert_eq!(
            (closed.processed, closed.succeeded, closed.failed, closed.skipped),
            (Some(14), Some(3), Some(11), Some(0))
        );
    }

    #[test]
    fn proven_units_count_as_succeeded_never_more_than_remain() {
        let c = counts(Some(10), 2, 1, 0);
        let r = remainder_at_close(&c, Outcome::PartiallySucceeded, Some(6)).unwrap();
        assert_eq!(
            r,
            Remainder {
                succeeded: 4,
                failed: 3,
                skipped: 0
            }
        );
        let r = remainder_at_close(&c, Outcome::Succeeded, Some(1_000)).unwrap();
        assert_eq!(
            r,
            Remainder {
                succeeded: 7,
                failed: 0,
                skipped: 0
            }
        );
        assert!(not_attempted_failure(&r, 10, "x").is_none());
    }

    #[test]
    fn cancelled_remainder_is_skipped() {
        let c = counts(Some(138), 36, 0, 0);
        let r = remainder_at_close(&c, Outcome::Cancelled, Some(100)).unwrap();
        assert_eq!(
            r,
            Remainder {
                succeeded: 0,
                failed: 0,
                skipped: 102
            }
        );
    }

    #[test]
    fn nothing_remains_when_all_recorded() {
        assert_eq!(
            remainder_at_close(&counts(Some(3), 3, 0, 0), Outcome::Failed, None),
            None
        );
        assert_eq!(
            remainder_at_close(&counts(Some(0), 0, 0, 0), Outcome::Failed, None),
            None
        );
    }

    proptest! {
        /// For every completed run with a total, the counts explain it:
        /// succeeded + failed + skipped == processed == total.
        #[test]
        fn closed_counts_always_add_up(
            total in 0u64..10_000,
            s in 0u64..10_000, f in 0u64..10_000, k in 0u64..10_000,
            proven in proptest::option::of(0u64..20_000),
            outcome in prop_oneof![
                Just(Outcome::Succeeded), Just(Outcome::PartiallySucceeded),
                Just(Outcome::Blocked), Just(Outcome::Failed), Just(Outcome::Cancelled)
            ],
        ) {
            // Any recorded state the writer path allows: processed <= total.
            let s = s.min(total);
            let f = f.min(total - s);
            let k = k.min(total - s - f);
            let c = counts(Some(total), s, f, k);
            let closed = counts_at_close(&c, remainder_at_close(&c, outcome, proven));
            prop_assert_eq!(closed.processed, Some(total));
            prop_assert_eq!(closed.unit_outcomes_sum(), total);
            prop_assert!(closed.succeeded.unwrap() >= s && closed.failed.unwrap() >= f);
            if outcome == Outcome::Cancelled {
                prop_assert_eq!(closed.succeeded, Some(s));
                prop_assert_eq!(closed.failed, Some(f));
            }
        }
    }

    fn proof(verdict: Verdict, units: Option<u64>) -> AdapterResult {
        AdapterResult {
            units_succeeded: units,
            ..AdapterResult::new(verdict, "x_proof", "explained")
        }
    }

    #[test]
    fn force_close_never_fabricates_success() {
        let c = counts(Some(138), 36, 0, 0);
        for o in [Outcome::Succeeded, Outcome::PartiallySucceeded] {
            let e = decide_force_close(o, &c, None).unwrap_err();
            assert_eq!(e.code(), "no_proof_for_outcome");
            let e = decide_force_close(o, &c, Some(&proof(Verdict::Failed, None))).unwrap_err();
            assert_eq!(e.code(), "no_proof_for_outcome");
            assert!(e.to_string().contains("`failed`"), "{e}");
        }
        assert_eq!(
            decide_force_close(
                Outcome::Succeeded,
                &c,
                Some(&proof(Verdict::PartiallySucceeded, None))
            )
            .unwrap_err()
            .code(),
            "no_proof_for_outcome",
            "proof of a partial success does not allow `succeeded`"
        );
        assert_eq!(
            decide_force_close(
                Outcome::Succeeded,
                &c,
                Some(&proof(Verdict::Succeeded, Some(138)))
            ),
            Ok(Some(138))
        );
        assert_eq!(
            decide_force_close(
                Outcome::PartiallySucceeded,
                &c,
                Some(&proof(Verdict::PartiallySucceeded, None))
            ),
            Ok(None)
        );
    }

    #[test]
    fn a_reason_is_required_and_bounded() {
        assert_eq!(check_reason("  offboarding \n"), Ok("offboarding"));
        assert_eq!(check_reason(" \t"), Err(ForceCloseRefusal::ReasonRequired));
        assert_eq!(
            check_reason(&"é".repeat(MAX_REASON_CHARS)).map(|r| r.chars().count()),
            Ok(MAX_REASON_CHARS)
        );
        assert_eq!(
            check_reason(&"r".repeat(MAX_REASON_CHARS + 1)),
            Err(ForceCloseRefusal::ReasonTooLong)
        );
        assert!(ForceCloseRefusal::ReasonTooLong.is_bad_request());
        assert!(!ForceCloseRefusal::WorkAlreadyRecorded { processed: 1 }.is_bad_request());
    }

    #[test]
    fn force_close_failed_and_cancelled_always_allowed_blocked_only_before_work() {
        let worked = counts(Some(138), 36, 0, 0);
        let fresh = counts(Some(138), 0, 0, 0);
        let untotalled = SummaryCounts::default();
        for c in [&worked, &fresh, &untotalled] {
            assert_eq!(decide_force_close(Outcome::Failed, c, None), Ok(None));
            assert_eq!(decide_force_close(Outcome::Cancelled, c, None), Ok(None));
        }
        assert_eq!(decide_force_close(Outcome::Blocked, &fresh, None), Ok(None));
        assert_eq!(decide_force_close(Outcome::Blocked, &untotalled, None), Ok(None));
        let e = decide_force_close(Outcome::Blocked, &worked, None).unwrap_err();
        assert_eq!(e, ForceCloseRefusal::WorkAlreadyRecorded { processed: 36 });
        assert_eq!(
            decide_force_close(Outcome::Pending, &fresh, None)
                .unwrap_err()
                .code(),
            "invalid_outcome"
        );
    }
}
