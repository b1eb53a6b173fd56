//! The run JSON of INTERFACE.md: the stored run plus its `progress` (from the
//! core contract) and the top-level echo of `context.reconciliation`.

use chrono::{DateTime, SecondsFormat, Utc};
use opsledger_core::progress::progress_of;
use opsledger_core::{Run, SummaryCounts};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
pub struct RunJson<'a> {
    pub id: &'a str,
    pub workspace_id: &'a str,
    pub tenant_id: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    #[serde(rename = "type")]
    pub run_type: &'a str,
    pub status: &'a str,
    pub outcome: &'a str,
    pub summary_counts: &'a SummaryCounts,
    pub progress: opsledger_core::Progress,
    pub context: &'a Value,
    pub failures: &'a [opsledger_core::Failure],
    pub reconciliation: Option<&'a Value>,
    pub initiator: &'a str,
    pub created_at: String,
    pub started_at: Option<String>,
    pub heartbeat_at: Option<String>,
    pub completed_at: Option<String>,
}

/// A time as RFC 3339 in UTC with milliseconds, as every time of the API.
pub fn ts(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn run_json<'a>(run: &'a Run, children: &[Run]) -> RunJson<'a> {
    RunJson {
        id: &run.id,
        workspace_id: &run.workspace_id,
        tenant_id: run.tenant_id.as_deref(),
        parent_id: run.parent_id.as_deref(),
        run_type: run.run_type.as_str(),
        status: run.status.as_str(),
        outcome: run.outcome.as_str(),
        summary_counts: &run.summary_counts,
        progress: progress_of(run, children),
        context: &run.context,
        failures: &run.failures,
        reconciliation: run.reconciliation(),
        initiator: &run.initiator,
        created_at: ts(run.created_at),
        started_at: run.started_at.map(ts),
        heartbeat_at: run.heartbeat_at.map(ts),
        completed_at: run.completed_at.map(ts),
    }
}
