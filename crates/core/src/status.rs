//! Lifecycle status and terminal outcome of a run (OPERATIONS.md §2).
//!
//! `status` moves `queued → running → completed` and nothing else;
//! `outcome` is `pending` exactly while the run is not completed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Lifecycle of a run. `Completed` is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 3] = [RunStatus::Queued, RunStatus::Running, RunStatus::Completed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
        }
    }

    /// Whether moving from `self` to `next` is a legal lifecycle step.
    pub fn can_move_to(self, next: RunStatus) -> bool {
        matches!(
            (self, next),
            (RunStatus::Queued, RunStatus::Running)
                | (RunStatus::Queued, RunStatus::Completed)
                | (RunStatus::Running, RunStatus::Completed)
        )
    }
}

/// Outcome of a run: `Pending` until completion, then one terminal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pending,
    Succeeded,
    PartiallySucceeded,
    Blocked,
    Failed,
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Pending,
        Outcome::Succeeded,
        Outcome::PartiallySucceeded,
        Outcome::Blocked,
        Outcome::Failed,
        Outcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Succeeded => "succeeded",
            Outcome::PartiallySucceeded => "partially_succeeded",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != Outcome::Pending
    }
}

/// Terminal outcome of one planned unit of work (OPERATIONS.md §3): each of
/// these makes the unit `processed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitOutcome {
    Succeeded,
    Failed,
    Skipped,
}

impl UnitOutcome {
    pub const ALL: [UnitOutcome; 3] = [UnitOutcome::Succeeded, UnitOutcome::Failed, UnitOutcome::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            UnitOutcome::Succeeded => "succeeded",
            UnitOutcome::Failed => "failed",
            UnitOutcome::Skipped => "skipped",
        }
    }
}

/// A stored string that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! str_enum {
    ($ty:ident, $kind:literal) => {
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue {
                        kind: $kind,
                        value: s.to_owned(),
                    })
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
str_enum!(RunStatus, "status");
str_enum!(Outcome, "outcome");
str_enum!(UnitOutcome, "unit outcome");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_only_moves_forward() {
        assert!(RunStatus::Queued.can_move_to(RunStatus::Running));
        assert!(RunStatus::Running.can_move_to(RunStatus::Completed));
        assert!(RunStatus::Queued.can_move_to(RunStatus::Completed));
        assert!(!RunStatus::Completed.can_move_to(RunStatus::Running));
        assert!(!RunStatus::Completed.can_move_to(RunStatus::Completed));
        assert!(!RunStatus::Running.can_move_to(RunStatus::Queued));
    }

    #[test]
    fn strings_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
        }
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert!("done".parse::<RunStatus>().is_err());
    }
}
