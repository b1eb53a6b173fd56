//! The run record (OPERATIONS.md §2) as the rest of the system sees it.

use crate::{Failure, Outcome, RunStatus, RunType, SummaryCounts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// State of one phase of a phased run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    Pending,
    Active,
    Done,
    Skipped,
    Failed,
}

/// One phase of a phased run; it may carry counted sub-progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub key: String,
    pub label: String,
    pub state: PhaseState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// A run as stored. Only the store's writer path produces changed copies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: Option<String>,
    pub parent_id: Option<String>,
    #[serde(rename = "type")]
    pub run_type: RunType,
    pub status: RunStatus,
    pub outcome: Outcome,
    pub summary_counts: SummaryCounts,
    pub phases: Option<Vec<Phase>>,
    pub context: Value,
    pub failures: Vec<Failure>,
    pub initiator: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub heartbeat_at: Option<i64>,
    pub completed_at: Option<i64>,
}

impl Run {
    pub fn is_completed(&self) -> bool {
        self.status == RunStatus::Completed
    }

    /// `context.reconciliation`, when the run was reconciled or force-closed.
    pub fn reconciliation(&self) -> Option<&Value> {
        self.context.get("reconciliation").filter(|v| !v.is_null())
    }
}
