//! Bulk outcome derivation (OPERATIONS.md §5): given a run's unit counters,
//! decide whether it is finished and with which outcome. The store's
//! `maybe_complete_bulk_run` applies this and is the only completer of bulk
//! parents.

use crate::{Outcome, SummaryCounts};

/// `None` while units remain (`processed < total`, or no total yet).
/// All units succeeded or skipped → `Succeeded`; some failed and some not →
/// `PartiallySucceeded`; every unit failed → `Failed`. Zero units → `Succeeded`.
pub fn derive_bulk_outcome(counts: &SummaryCounts) -> Option<Outcome> {
    let total = counts.total?;
    let processed = counts.processed.unwrap_or(0);
    if processed < total {
        return None;
    }
    let failed = counts.failed.unwrap_or(0);
    Some(if failed == 0 {
        Outcome::Succeeded
    } else if failed >= processed {
        Outcome::Failed
    } else {
        Outcome::PartiallySucceeded
    })
}

/// A composite parent's outcome from its children's (OPERATIONS.md §5),
/// once every child is completed: all succeeded → succeeded; all blocked →
/// blocked; none succeeded or partially succeeded (any mix of failed,
/// blocked, cancelled) → failed; otherwise partially succeeded. No children:
/// succeeded. `None` while a child is still pending.
pub fn derive_composite_outcome(children: &[Outcome]) -> Option<Outcome> {
    if children.iter().any(|o| !o.is_terminal()) {
        return None;
    }
    let all = |o: Outcome| children.iter().all(|c| *c == o);
    Some(if all(Outcome::Succeeded) {
        Outcome::Succeeded
    } else if all(Outcome::Blocked) {
        Outcome::Blocked
    } else if !children
        .iter()
        .any(|c| matches!(c, Outcome::Succeeded | Outcome::PartiallySucceeded))
    {
        Outcome::Failed
    } else {
        Outcome::PartiallySucceeded
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_outcome_follows_the_children() {
        use Outcome::*;
        let d = derive_composite_outcome;
        assert_eq!(d(&[]), Some(Succeeded));
        assert_eq!(d(&[Succeeded, Succeeded]), Some(Succeeded));
        assert_eq!(d(&[Blocked, Blocked]), Some(Blocked));
        assert_eq!(d(&[Failed, Blocked, Cancelled]), Some(Failed));
        assert_eq!(d(&[Cancelled]), Some(Failed));
        assert_eq!(d(&[Succeeded, Failed]), Some(PartiallySucceeded));
        assert_eq!(d(&[PartiallySucceeded]), Some(PartiallySucceeded));
        assert_eq!(d(&[Succeeded, Blocked]), Some(PartiallySucceeded));
        assert_eq!(d(&[Succeeded, Pending]), None);
    }

    fn c(total: u64, succeeded: u64, failed: u64, skipped: u64) -> SummaryCounts {
        SummaryCounts {
            total: Some(total),
            processed: Some(succeeded + failed + skipped),
            succeeded: Some(succeeded),
            failed: Some(failed),
            skipped: Some(skipped),
            ..Default::default()
        }
    }

    #[test]
    fn unfinished_runs_have_no_outcome() {
        assert_eq!(derive_bulk_outcome(&c(10, 9, 0, 0)), None);
        assert_eq!(derive_bulk_outcome(&SummaryCounts::default()), None);
    }

    #[test]
    fn outcomes() {
        assert_eq!(derive_bulk_outcome(&c(3, 3, 0, 0)), Some(Outcome::Succeeded));
        assert_eq!(derive_bulk_outcome(&c(3, 1, 0, 2)), Some(Outcome::Succeeded));
        assert_eq!(derive_bulk_outcome(&c(3, 0, 0, 3)), Some(Outcome::Succeeded));
        assert_eq!(
            derive_bulk_outcome(&c(3, 2, 1, 0)),
            Some(Outcome::PartiallySucceeded)
        );
        assert_eq!(
            derive_bulk_outcome(&c(3, 0, 1, 2)),
            Some(Outcome::PartiallySucceeded)
        );
        assert_eq!(derive_bulk_outcome(&c(3, 0, 3, 0)), Some(Outcome::Failed));
    }

    #[test]
    fn zero_units_succeed_at_once() {
        assert_eq!(derive_bulk_outcome(&c(0, 0, 0, 0)), Some(Outcome::Succeeded));
    }
}
