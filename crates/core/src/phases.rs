//! Phases of a phased run (OPERATIONS.md §4, §5), as pure rules: the plan a
//! run declares once, how it moves from phase to phase, and how its phases
//! end when the run closes. The store applies them under the run's lease
//! and its schema checks each phase's `processed <= total`.

use crate::{Outcome, Phase, PhaseState};

/// Longest phase key: keys prefix the phase's unit keys (`phase/unit`).
pub const MAX_PHASE_KEY_LEN: usize = 64;
/// Longest phase label.
pub const MAX_PHASE_LABEL_LEN: usize = 200;
/// Most phases one run may declare.
pub const MAX_PHASES: usize = 32;

/// One planned phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhasePlan {
    pub key: String,
    pub label: String,
}

impl PhasePlan {
    pub fn new(key: impl Into<String>, label: impl Into<String>) -> PhasePlan {
        PhasePlan {
            key: key.into(),
            label: label.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhaseError {
    #[error("a phase plan needs 1 to {MAX_PHASES} phases, got {0}")]
    PlanSize(usize),
    #[error(
        "phase key {0:?} must be 1 to {MAX_PHASE_KEY_LEN} of A-Z a-z 0-9 _ . - (it prefixes the phase's unit keys)"
    )]
    BadKey(String),
    #[error("phase {0:?} has an empty or over-long label")]
    BadLabel(String),
    #[error("phase {0:?} is planned twice")]
    DuplicateKey(String),
    #[error("the run already planned other phases")]
    PlanDiffers,
    #[error("the run planned no phase {0:?}")]
    UnknownPhase(String),
    #[error("phase {key:?} is {state:?}: phases only move forward")]
    NotAhead { key: String, state: PhaseState },
    #[error(
        "phase {key:?} has {processed} of its {total} units processed: it cannot end done before they are"
    )]
    Unfinished { key: String, processed: u64, total: u64 },
    #[error("phase {key:?} already has total {existing}; refusing {requested}")]
    TotalDiffers {
        key: String,
        existing: u64,
        requested: u64,
    },
}

fn valid_key(k: &str) -> bool {
    (1..=MAX_PHASE_KEY_LEN).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The phases of a new plan, all pending; or why the plan is not acceptable.
pub fn planned(plan: &[PhasePlan]) -> Result<Vec<Phase>, PhaseError> {
    if plan.is_empty() || plan.len() > MAX_PHASES {
        return Err(PhaseError::PlanSize(plan.len()));
    }
    let mut out: Vec<Phase> = Vec::with_capacity(plan.len());
    for p in plan {
        if !valid_key(&p.key) {
            return Err(PhaseError::BadKey(p.key.chars().take(80).collect()));
        }
        if p.label.trim().is_empty() || p.label.chars().count() > MAX_PHASE_LABEL_LEN {
            return Err(PhaseError::BadLabel(p.key.clone()));
        }
        if out.iter().any(|q| q.key == p.key) {
            return Err(PhaseError::DuplicateKey(p.key.clone()));
        }
        out.push(Phase {
            key: p.key.clone(),
            label: p.label.clone(),
            state: PhaseState::Pending,
            processed: None,
            total: None,
        });
    }
    Ok(out)
}

/// Whether `existing` phases are the plan `plan` (a retried run re-declares it).
pub fn same_plan(existing: &[Phase], plan: &[PhasePlan]) -> bool {
    existing.len() == plan.len()
        && existing
            .iter()
            .zip(plan)
            .all(|(e, p)| e.key == p.key && e.label == p.label)
}

/// The phases after making `key` the active phase, with `total` units when
/// it counts them. The phase that was active is done; pending phases passed
/// over are skipped. Re-activating the active phase is a no-op (a retried
/// run), except that it may set a total not set yet.
pub fn activate(phases: &[Phase], key: &str, total: Option<u64>) -> Result<Vec<Phase>, PhaseError> {
    let at = phases
        .iter()
        .position(|p| p.key == key)
        .ok_or_else(|| PhaseError::UnknownPhase(key.chars().take(80).collect()))?;
    let mut out = phases.to_vec();
    let target = &mut out[at];
    match target.state {
        PhaseState::Active => {}
        PhaseState::Pending => target.state = PhaseState::Active,
        state => {
            return Err(PhaseError::NotAhead {
                key: key.to_owned(),
                state,
            });
        }
    }
    match (target.total, total) {
        (Some(existing), Some(requested)) if existing != requested => {
            return Err(PhaseError::TotalDiffers {
                key: key.to_owned(),
                existing,
                requested,
            });
        }
        (None, Some(t)) => {
            target.total = Some(t);
            target.processed = Some(0);
        }
        _ => {}
    }
    for (i, p) in out.iter_mut().enumerate() {
        if i == at {
            continue;
        }
        if i > at && p.state == PhaseState::Active {
            // A later phase cannot be active while an earlier one is entered.
            return Err(PhaseError::NotAhead {
                key: key.to_owned(),
                state: PhaseState::Done,
            });
        }
        if i < at {
            if p.state == PhaseState::Active
                && let Some(total) = p.total
                && p.processed.unwrap_or(0) < total
            {
                return Err(PhaseError::Unfinished {
                    key: p.key.clone(),
                    processed: p.processed.unwrap_or(0),
                    total,
                });
            }
            p.state = match p.state {
                PhaseState::Active => PhaseState::Done,
                PhaseState::Pending => PhaseState::Skipped,
                s => s,
            };
        }
    }
    Ok(out)
}

/// The phases of a run closing with `outcome` (OPERATIONS.md §5): a run
/// that succeeds ends its active phase done; one that fails or is blocked
/// ends it failed; a cancelled one ends it skipped. Phases not reached are
/// skipped.
pub fn closed(phases: &[Phase], outcome: Outcome) -> Vec<Phase> {
    let active_becomes = match outcome {
        Outcome::Succeeded | Outcome::PartiallySucceeded => PhaseState::Done,
        Outcome::Cancelled => PhaseState::Skipped,
        Outcome::Failed | Outcome::Blocked | Outcome::Pending => PhaseState::Failed,
    };
    phases
        .iter()
        .cloned()
        .map(|mut p| {
            // A counted phase short of its total did not get done, whatever the run's outcome.
            let short = p.total.is_some_and(|t| p.processed.unwrap_or(0) < t);
            p.state = match p.state {
                PhaseState::Active if short && active_becomes == PhaseState::Done => PhaseState::Failed,
                PhaseState::Active => active_becomes,
                PhaseState::Pending => PhaseState::Skipped,
                s => s,
            };
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Vec<Phase> {
        planned(&[
            PhasePlan::new("resolve", "Resolve scope"),
            PhasePlan::new("capture", "Capture evidence"),
            PhasePlan::new("classify", "Classify gaps"),
            PhasePlan::new("persist", "Persist snapshot"),
        ])
        .unwrap()
    }

    fn states(p: &[Phase]) -> Vec<PhaseState> {
        p.iter().map(|p| p.state).collect()
    }

    use PhaseState::*;

    #[test]
    fn plans_are_checked() {
        assert_eq!(planned(&[]), Err(PhaseError::PlanSize(0)));
        assert!(matches!(
            planned(&[PhasePlan::new("a/b", "x")]),
            Err(PhaseError::BadKey(_))
        ));
        assert!(matches!(
            planned(&[PhasePlan::new("a", " ")]),
            Err(PhaseError::BadLabel(_))
        ));
        assert!(matches!(
            planned(&[PhasePlan::new("a", "x"), PhasePlan::new("a", "y")]),
            Err(PhaseError::DuplicateKey(_))
        ));
        assert_eq!(states(&plan()), vec![Pending; 4]);
    }

    #[test]
    fn phases_move_forward_only() {
        let p = activate(&plan(), "resolve", None).unwrap();
        assert_eq!(states(&p), vec![Active, Pending, Pending, Pending]);
        let p = activate(&p, "capture", Some(10)).unwrap();
        assert_eq!(states(&p), vec![Done, Active, Pending, Pending]);
        assert_eq!((p[1].processed, p[1].total), (Some(0), Some(10)));
        // Re-entering the active phase (a retry) is a no-op; its total is set once.
        assert_eq!(activate(&p, "capture", Some(10)).unwrap(), p);
        assert_eq!(activate(&p, "capture", None).unwrap(), p);
        assert!(matches!(
            activate(&p, "capture", Some(11)),
            Err(PhaseError::TotalDiffers { .. })
        ));
        // Back to a finished phase: refused.
        assert!(matches!(
            activate(&p, "resolve", None),
            Err(PhaseError::NotAhead { state: Done, .. })
        ));
        assert!(matches!(
            activate(&p, "nope", None),
            Err(PhaseError::UnknownPhase(_))
        ));
        // A counted phase cannot end done short of its total.
        assert!(matches!(
            activate(&p, "persist", None),
            Err(PhaseError::Unfinished {
                processed: 0,
                total: 10,
                ..
            })
        ));
        let mut p = p;
        p[1].processed = Some(10);
        // Jumping ahead skips what was passed over.
        let p = activate(&p, "persist", None).unwrap();
        assert_eq!(states(&p), vec![Done, Done, Skipped, Active]);
    }

    #[test]
    fn closing_early_fails_the_active_phase_and_skips_the_rest() {
        // Closed succeeded while a counted phase is short: that phase failed.
        let short = activate(&plan(), "capture", Some(2)).unwrap();
        assert_eq!(states(&closed(&short, Outcome::Succeeded))[1], Failed);
        let p = activate(&plan(), "capture", None).unwrap();
        assert_eq!(
            states(&closed(&p, Outcome::Failed)),
            vec![Skipped, Failed, Skipped, Skipped]
        );
        assert_eq!(
            states(&closed(&p, Outcome::Blocked)),
            vec![Skipped, Failed, Skipped, Skipped]
        );
        assert_eq!(
            states(&closed(&p, Outcome::Cancelled)),
            vec![Skipped, Skipped, Skipped, Skipped]
        );
        let last = activate(&p, "persist", None).unwrap();
        assert_eq!(
            states(&closed(&last, Outcome::Succeeded)),
            vec![Skipped, Done, Skipped, Done]
        );
    }

    #[test]
    fn a_retried_run_recognises_its_plan() {
        let p = plan();
        let again: Vec<PhasePlan> = p
            .iter()
            .map(|q| PhasePlan::new(q.key.clone(), q.label.clone()))
            .collect();
        assert!(same_plan(&p, &again));
        assert!(!same_plan(&p, &again[..3]));
    }
}
