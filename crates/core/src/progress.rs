//! The progress contract (OPERATIONS.md §4): one pure function maps a run
//! (and its children) to exactly one progress mode. Every surface renders
//! [`progress_of`]; none computes progress itself.
//!
//! Precedence, first match wins: composite → phased → counted → activity → none.
//! A percentage exists only in counted mode, only from `total`/`processed`,
//! and is floored, so it never reads 100 while `processed < total`.

use crate::{Outcome, Phase, Run, RunStatus, RunType};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    None,
    Activity,
    Counted,
    Phased,
    Composite,
}

/// An active child of a composite run, with its own progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveChild {
    pub id: String,
    #[serde(rename = "type")]
    pub run_type: RunType,
    pub tenant_id: Option<String>,
    pub progress: Box<Progress>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildrenProgress {
    pub total: u64,
    pub completed: u64,
    pub active: Vec<ActiveChild>,
}

/// What a surface shows for a run's progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub mode: ProgressMode,
    pub percent: Option<u8>,
    pub processed: Option<u64>,
    pub total: Option<u64>,
    pub phases: Option<Vec<Phase>>,
    pub children: Option<ChildrenProgress>,
    pub label: String,
}

impl Progress {
    fn bare(mode: ProgressMode, label: String) -> Progress {
        Progress {
            mode,
            percent: None,
            processed: None,
            total: None,
            phases: None,
            children: None,
            label,
        }
    }
}

/// floor(100 · processed / total), or `None` when there is no total to divide by.
/// `processed` above `total` cannot be stored; it is clamped defensively so a
/// corrupt row can still never render more than 100.
pub fn percent(processed: u64, total: u64) -> Option<u8> {
    if total == 0 {
        return None;
    }
    let p = processed.min(total) as u128 * 100 / total as u128;
    Some(p as u8)
}

/// The one progress function. `children` are the run's child runs (empty for
/// runs that have none).
pub fn progress_of(run: &Run, children: &[Run]) -> Progress {
    if !children.is_empty() {
        return composite(children);
    }
    if let Some(phases) = run.phases.as_ref().filter(|p| !p.is_empty()) {
        let label = match phases.iter().find(|p| p.state == crate::PhaseState::Active) {
            Some(active) => active.label.clone(),
            None if run.status == RunStatus::Completed => outcome_label(run.outcome).to_owned(),
            None => status_label(run.status).to_owned(),
        };
        let mut p = Progress::bare(ProgressMode::Phased, label);
        p.phases = Some(phases.clone());
        return p;
    }
    match run.status {
        RunStatus::Running => match run.summary_counts.total {
            Some(total) if total > 0 => {
                let processed = run.summary_counts.processed.unwrap_or(0).min(total);
                Progress {
                    mode: ProgressMode::Counted,
                    percent: percent(processed, total),
                    processed: Some(processed),
                    total: Some(total),
                    phases: None,
                    children: None,
                    label: format!("{processed} of {total} {}", run.run_type.unit_noun()),
                }
            }
            _ => Progress::bare(ProgressMode::Activity, "Running".to_owned()),
        },
        RunStatus::Queued => Progress::bare(ProgressMode::None, "Queued".to_owned()),
        RunStatus::Completed => Progress::bare(ProgressMode::None, outcome_label(run.outcome).to_owned()),
    }
}

fn composite(children: &[Run]) -> Progress {
    let completed = children.iter().filter(|c| c.is_completed()).count() as u64;
    let total = children.len() as u64;
    let active = children
        .iter()
        .filter(|c| !c.is_completed())
        .map(|c| ActiveChild {
            id: c.id.clone(),
            run_type: c.run_type,
            tenant_id: c.tenant_id.clone(),
            progress: Box::new(progress_of(c, &[])),
        })
        .collect();
    let mut p = Progress::bare(
        ProgressMode::Composite,
        format!("{completed} of {total} completed"),
    );
    p.children = Some(ChildrenProgress {
        total,
        completed,
        active,
    });
    p
}

fn status_label(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Queued => "Queued",
        RunStatus::Running => "Running",
        RunStatus::Completed => "Completed",
    }
}

/// The one word a completed run shows instead of a bar.
pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pending => "Pending",
        Outcome::Succeeded => "Succeeded",
        Outcome::PartiallySucceeded => "Partially succeeded",
        Outcome::Blocked => "Blocked",
        Outcome::Failed => "Failed",
        Outcome::Cancelled => "Cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PhaseState, SummaryCounts};
    use proptest::prelude::*;
    use serde_json::json;

    fn run(status: RunStatus, total: Option<u64>, processed: Option<u64>) -> Run {
        Run {
            id: "r1".into(),
            workspace_id: "w".into(),
            tenant_id: Some("t".into()),
            parent_id: None,
            run_type: RunType::InventorySync,
            status,
            outcome: if status == RunStatus::Completed {
                Outcome::Succeeded
            } else {
                Outcome::Pending
            },
            summary_counts: SummaryCounts {
                total,
                processed,
                ..Default::default()
            },
            phases: None,
            context: json!({}),
            failures: vec![],
            initiator: "system".into(),
            created_at: 0,
            started_at: None,
            heartbeat_at: None,
            completed_at: None,
        }
    }

    fn phase(key: &str, state: PhaseState) -> Phase {
        Phase {
            key: key.into(),
            label: format!("{key} label"),
            state,
            processed: None,
            total: None,
        }
    }

    #[test]
    fn counted_while_running_with_total() {
        let p = progress_of(&run(RunStatus::Running, Some(12), Some(5)), &[]);
        assert_eq!(p.mode, ProgressMode::Counted);
        assert_eq!(p.percent, Some(41));
        assert_eq!((p.processed, p.total), (Some(5), Some(12)));
        assert_eq!(p.label, "5 of 12 policy types");
    }

    #[test]
    fn running_without_total_is_activity() {
        let p = progress_of(&run(RunStatus::Running, None, None), &[]);
        assert_eq!(p.mode, ProgressMode::Activity);
        assert_eq!(p.percent, None);
    }

    #[test]
    fn zero_total_never_shows_a_percentage() {
        for status in RunStatus::ALL {
            let p = progress_of(&run(status, Some(0), Some(0)), &[]);
            assert_eq!(p.percent, None, "{status}");
            assert_ne!(p.mode, ProgressMode::Counted);
        }
    }

    #[test]
    fn queued_and_completed_are_none() {
        let q = progress_of(&run(RunStatus::Queued, Some(10), Some(0)), &[]);
        assert_eq!(
            (q.mode, q.label.as_str(), q.percent),
            (ProgressMode::None, "Queued", None)
        );
        let c = progress_of(&run(RunStatus::Completed, Some(10), Some(10)), &[]);
        assert_eq!(
            (c.mode, c.label.as_str(), c.percent),
            (ProgressMode::None, "Succeeded", None)
        );
    }

    #[test]
    fn never_100_while_running_unless_all_processed() {
        let p = progress_of(&run(RunStatus::Running, Some(1000), Some(999)), &[]);
        assert_eq!(p.percent, Some(99));
        let p = progress_of(&run(RunStatus::Running, Some(1000), Some(1000)), &[]);
        assert_eq!(p.percent, Some(100));
    }

    #[test]
    fn outcome_counters_never_drive_progress() {
        let mut r = run(RunStatus::Running, None, None);
        r.summary_counts.succeeded = Some(7);
        r.summary_counts.failed = Some(3);
        let p = progress_of(&r, &[]);
        assert_eq!((p.mode, p.percent), (ProgressMode::Activity, None));
    }

    #[test]
    fn phases_beat_counts() {
        let mut r = run(RunStatus::Running, Some(10), Some(5));
        r.run_type = RunType::BaselineCapture;
        r.phases = Some(vec![
            phase("resolve", PhaseState::Done),
            phase("capture", PhaseState::Active),
        ]);
        let p = progress_of(&r, &[]);
        assert_eq!(p.mode, ProgressMode::Phased);
        assert_eq!(p.percent, None);
        assert_eq!(p.label, "capture label");
        assert_eq!(p.phases.unwrap().len(), 2);
    }

    #[test]
    fn children_beat_everything() {
        let mut parent = run(RunStatus::Running, Some(3), Some(1));
        parent.run_type = RunType::WorkspaceInventorySyncAll;
        parent.phases = Some(vec![phase("x", PhaseState::Active)]);
        let mut c1 = run(RunStatus::Completed, Some(4), Some(4));
        c1.id = "c1".into();
        let mut c2 = run(RunStatus::Running, Some(4), Some(2));
        c2.id = "c2".into();
        let c3 = run(RunStatus::Queued, None, None);
        let p = progress_of(&parent, &[c1, c2, c3]);
        assert_eq!(p.mode, ProgressMode::Composite);
        assert_eq!(p.percent, None);
        let children = p.children.unwrap();
        assert_eq!(
            (children.total, children.completed, children.active.len()),
            (3, 1, 2)
        );
        assert_eq!(children.active[0].progress.mode, ProgressMode::Counted);
        assert_eq!(children.active[0].progress.percent, Some(50));
        assert_eq!(p.label, "1 of 3 completed");
    }

    proptest! {
        #[test]
        fn percent_is_bounded_and_exact_at_the_end(total in 1u64..=u64::MAX / 2, frac in 0.0f64..=1.0) {
            let processed = ((total as f64) * frac) as u64;
            let processed = processed.min(total);
            let p = progress_of(&run(RunStatus::Running, Some(total), Some(processed)), &[]);
            let pct = p.percent.unwrap();
            prop_assert!(pct <= 100);
            prop_assert_eq!(pct == 100, processed == total);
            prop_assert_eq!(p.mode, ProgressMode::Counted);
        }

        #[test]
        fn only_running_with_total_shows_a_percentage(
            status in prop::sample::select(RunStatus::ALL.to_vec()),
            total in prop::option::of(0u64..100),
            processed in prop::option::of(0u64..100),
        ) {
            let p = progress_of(&run(status, total, processed), &[]);
            prop_assert_eq!(p.percent.is_some(), status == RunStatus::Running && total.unwrap_or(0) > 0);
        }
    }
}
