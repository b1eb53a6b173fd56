//! Claiming jobs: run jobs first (`'run' < 'unit'`), so a new run is picked
//! up even behind a large fan-out; then unit jobs oldest first, each unit
//! job only once every earlier wave of its run has ended.
//!
//! **The claim cursor.** On PostgreSQL a claimed job leaves a dead entry in
//! the index of available jobs until VACUUM removes it, and a claim that
//! starts at the head of that index walks every one of them: after a burst
//! of a hundred thousand units the head is hundreds of pages of dead entries,
//! which every claim reads again (measured: 1 300 buffer reads and about
//! 3 ms per claim of 6 jobs, more than the units' own writes). A producer
//! therefore keeps a [`ClaimCursor`]: where its last claim of unit jobs
//! ended, in the claim order `(run_after, id)`, and starts the next one
//! there. The cursor is only a hint; no job is lost behind it:
//!
//! - a job made claimable again (retry, release, rescue) gets
//!   `run_after = now`, which sorts after the cursor;
//! - one that sorts before it anyway (a later wave unblocked, a job skipped
//!   while another claimer held it, a clock behind) is found by the scan from
//!   the head that follows whenever the hinted scan comes up short, and by
//!   the scan from the head that replaces it every [`CURSOR_RESCAN_MS`].
//!
//! SQLite deletes index entries in place, so the cursor changes nothing
//! there; the code path is the same on both databases.
//!
//! **Types a node cannot run.** A node started without what a family needs
//! (the evidence key, a file store) has no handler for its type. Its cursor
//! ([`ClaimCursor::skipping`]) names those types, and its claims pass over
//! their jobs, which wait for a node that can run them: a job claimed only
//! to fail `no_handler` would close, on a misconfigured node, a run a
//! configured one was about to run. A node that can run every type claims
//! with no such condition (the tuned path above).

use crate::db::{Tx, sql, sql_built, sql_owned};
use crate::jobs::{ClaimedJob, Fence, JobKind};
use crate::row::{RUN_HEAD_COLUMNS, run_head_from_row};
use crate::runs::RunHead;
use crate::{Store, StoreError, new_id};
use opsledger_core::RunType;
use std::collections::{BTreeSet, HashMap};

/// Runs per head read: far below both databases' argument limits.
const HEADS_PER_STATEMENT: usize = 500;

/// At least this often (store clock) a unit claim starts from the head of
/// the queue instead of the cursor, so a job sorted behind the cursor waits
/// at most about this long while the queue ahead of it is never short.
pub const CURSOR_RESCAN_MS: i64 = 1000;

/// Where a producer's last claim of unit jobs ended (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ClaimCursor {
    /// `(run_after, id)` of the last unit job claimed.
    after: Option<(i64, String)>,
    /// When the last scan from the head began.
    head_scanned_at: i64,
    /// The claim's condition passing over the jobs of types this producer
    /// cannot run (empty when it can run every type).
    skip: String,
}

impl ClaimCursor {
    /// A cursor whose claims pass over the jobs (run and unit) of `types`.
    pub fn skipping(types: impl IntoIterator<Item = RunType>) -> ClaimCursor {
        // The names are the catalog's own (lower-case letters, dots and
        // underscores), never input: they are written into the statement.
        let names: Vec<String> = types.into_iter().map(|t| format!("'{}'", t.as_str())).collect();
        let skip = if names.is_empty() {
            String::new()
        } else {
            format!(
                " AND NOT EXISTS (SELECT 1 FROM operation_runs r WHERE r.id = j.run_id AND r.type IN ({}))",
                names.join(", ")
            )
        };
        ClaimCursor {
            skip,
            ..ClaimCursor::default()
        }
    }
}

/// `(id, run_id, kind, unit_key, attempt, max_attempts, run_after)`.
type ClaimRow = (String, String, String, String, i64, i64, i64);

const CLAIM_SET: &str = "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_token = $1, \
     lease_expires_at = $2, heartbeat_at = $3, worker_id = $4 WHERE id IN (";
/// A unit job is claimable once no earlier wave of its run has an open job.
const WAVE_GATE: &str = "AND (j.wave = 0 OR j.wave <= (SELECT MIN(e.wave) FROM jobs e WHERE e.run_id = j.run_id \
     AND e.kind = 'unit' AND e.state IN ('available', 'running')))";
const CLAIM_RETURNING: &str = ") RETURNING id, run_id, kind, unit_key, attempt, max_attempts, run_after";

impl Store {
    /// Claims up to `limit` available jobs for `worker_id` with a lease of
    /// `lease_ms`, scanning from the head of the queue (see
    /// [`Store::claim_jobs_from`] for a producer that claims again and again).
    pub async fn claim_jobs(
        &self,
        worker_id: &str,
        limit: u32,
        lease_ms: u64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.claim_jobs_from(&mut ClaimCursor::default(), worker_id, limit, lease_ms)
            .await
    }

    /// Claims up to `limit` available jobs, run jobs first, the unit jobs
    /// from `cursor` on (module docs), which it advances.
    pub async fn claim_jobs_from(
        &self,
        cursor: &mut ClaimCursor,
        worker_id: &str,
        limit: u32,
        lease_ms: u64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let claim = Claim {
            token: new_id(),
            now,
            lease_expires_at: now + lease_ms as i64,
            worker_id,
            skip: &cursor.skip,
        };
        let mut tx = self.begin_write().await?;
        // A claim lost in a crash is harmless: its token never reached the
        // disk, so every write of the worker is refused and the job is
        // claimable again. It need not wait for the flush.
        crate::job_batches::relax_durability(&mut tx).await?;
        let mut rows = claim.run_jobs(&mut tx, limit).await?;
        for (_, run_id, ..) in &rows {
            tx.execute(
                sql(
                    "UPDATE operation_runs SET status = 'running', started_at = $2, heartbeat_at = $2 \
                     WHERE id = $1 AND status = 'queued'",
                )
                .bind(run_id)
                .bind(now),
            )
            .await?;
        }
        let mut wanted = limit - rows.len() as u32;
        let hint = match &cursor.after {
            Some(after) if now - cursor.head_scanned_at < CURSOR_RESCAN_MS => Some(after.clone()),
            _ => None,
        };
        let mut last: Option<(i64, String)> = None;
        if wanted > 0
            && let Some(after) = &hint
        {
            let units = claim.unit_jobs(&mut tx, wanted, Some(after)).await?;
            wanted -= units.len() as u32;
            last = max_position(&units);
            rows.extend(units);
        }
        if wanted > 0 {
            // No cursor, a stale one, or the queue after it came up short.
            cursor.head_scanned_at = now;
            let units = claim.unit_jobs(&mut tx, wanted, None).await?;
            last = last.max(max_position(&units));
            rows.extend(units);
        }
        let unit_runs: BTreeSet<&str> = rows
            .iter()
            .filter(|(_, _, kind, ..)| kind == "unit")
            .map(|(_, run_id, ..)| run_id.as_str())
            .collect();
        let heads = heads_of(&mut tx, unit_runs.into_iter().collect()).await?;
        tx.commit().await?;
        if let Some(last) = last {
            // After the periodic scan from the head, the cursor stays where
            // it was if that is further: the scan's furthest job is often a
            // straggler near the head, and moving back there would walk the
            // dead entries up to the old cursor again. After a short claim it
            // moves to where this claim ended, even back (a clock stepped
            // back puts new jobs behind the cursor).
            let periodic = hint.is_none() && cursor.after.is_some();
            cursor.after = Some(match cursor.after.take() {
                Some(old) if periodic => old.max(last),
                _ => last,
            });
        }
        Ok(rows
            .into_iter()
            .map(
                |(id, run_id, kind, unit_key, attempt, max_attempts, _)| ClaimedJob {
                    head: if kind == "unit" {
                        heads.get(&run_id).cloned()
                    } else {
                        None
                    },
                    fence: Fence {
                        job_id: id,
                        lease_token: claim.token.clone(),
                    },
                    run_id,
                    kind: if kind == "run" {
                        JobKind::Run
                    } else {
                        JobKind::Unit
                    },
                    unit_key,
                    attempt: attempt as u32,
                    max_attempts: max_attempts as u32,
                },
            )
            .collect())
    }
}

/// Inside `tx`: the heads of `run_ids`, by id (absent runs are not returned).
async fn heads_of(tx: &mut Tx, run_ids: Vec<&str>) -> Result<HashMap<String, RunHead>, StoreError> {
    let mut heads = HashMap::new();
    for chunk in run_ids.chunks(HEADS_PER_STATEMENT) {
        let mut stmt = sql_built(
            tx.dialect(),
            &format!("SELECT {RUN_HEAD_COLUMNS} FROM operation_runs WHERE id IN "),
        );
        stmt.push_list(chunk.iter().copied());
        for row in tx.rows(stmt).await? {
            let head = run_head_from_row(&row)?;
            heads.insert(head.id.clone(), head);
        }
    }
    Ok(heads)
}

/// The furthest claim position among `rows`.
fn max_position(rows: &[ClaimRow]) -> Option<(i64, String)> {
    rows.iter()
        .map(|(id, .., run_after)| (*run_after, id.clone()))
        .max()
}

/// One claim's lease, for each of its statements.
struct Claim<'w> {
    token: String,
    now: i64,
    lease_expires_at: i64,
    worker_id: &'w str,
    /// [`ClaimCursor::skipping`]'s condition.
    skip: &'w str,
}

impl Claim<'_> {
    async fn run_jobs(&self, tx: &mut Tx, limit: u32) -> Result<Vec<ClaimRow>, StoreError> {
        let text = format!(
            "{CLAIM_SET}SELECT j.id FROM jobs j WHERE j.state = 'available' AND j.kind = 'run' AND j.run_after <= $3{} \
             ORDER BY j.kind, j.run_after, j.id LIMIT $5{}{CLAIM_RETURNING}",
            self.skip,
            tx.dialect().skip_locked()
        );
        Ok(tx.fetch_all(self.bound(sql_owned(text), limit)).await?)
    }

    /// Unit jobs in claim order, after `after` when given.
    async fn unit_jobs(
        &self,
        tx: &mut Tx,
        limit: u32,
        after: Option<&(i64, String)>,
    ) -> Result<Vec<ClaimRow>, StoreError> {
        // The row comparison positions the index scan on (kind, run_after,
        // id) at the cursor instead of walking up to it. It must be the only
        // condition on `kind`: PostgreSQL positions on an equality of the
        // leading column in preference (measured: 255 index pages read per
        // claim with `kind = 'unit'` beside it, 5 without). Every kind after
        // 'unit' is none (`jobs.kind` is 'run' or 'unit').
        let kind = if after.is_some() {
            "(j.kind, j.run_after, j.id) > ('unit', $6, $7)"
        } else {
            "j.kind = 'unit'"
        };
        let text = format!(
            "{CLAIM_SET}SELECT j.id FROM jobs j WHERE j.state = 'available' AND {kind} \
             AND j.run_after <= $3 {WAVE_GATE}{} ORDER BY j.kind, j.run_after, j.id LIMIT $5{}{CLAIM_RETURNING}",
            self.skip,
            tx.dialect().skip_locked()
        );
        let mut stmt = self.bound(sql_owned(text), limit);
        if let Some((run_after, id)) = after {
            stmt = stmt.bind(*run_after).bind(id.clone());
        }
        Ok(tx.fetch_all(stmt).await?)
    }

    fn bound<'a>(&self, stmt: crate::db::Sql<'a>, limit: u32) -> crate::db::Sql<'a> {
        stmt.bind(self.token.clone())
            .bind(self.lease_expires_at)
            .bind(self.now)
            .bind(self.worker_id.to_owned())
            .bind(i64::from(limit))
    }
}
