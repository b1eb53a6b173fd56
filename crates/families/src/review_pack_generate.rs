//! `review_pack.generate`: a ZIP for a customer review of one tenant
//! (OPERATIONS.md §4, §6, §8). The rules — file map, paths, redaction, CSV,
//! manifest, index, the adapter's decision — are pure, in
//! [`opsledger_core::review_pack`]; this module reads, writes and commits.
//!
//! - **Plan**: the inventory the pack describes is the tenant's as it was
//!   when the run was created (items first seen by then: items are never
//!   deleted, so every attempt plans the same file map). The options filter
//!   the file map, then `total` is set once, before the first entry is
//!   written; a retry whose plan differs (it cannot, short of a clock gone
//!   backwards) fails `review_pack_plan_changed` rather than recount.
//! - **Write**: the ZIP is streamed into a file draft
//!   ([`opsledger_store::files::FileDraft`]) by [`zip::ZipWriter::new_stream`],
//!   on blocking threads, a page of [`PAGE`] inventory items at a time (one
//!   page of payloads in memory, never the tenant). Each entry written is a
//!   ledger unit keyed by its path, recorded in batches of at most
//!   [`UNIT_BATCH`] or every [`UNIT_FLUSH`], so `processed` advances as
//!   files are written; a retried generation rewrites the ZIP from the start
//!   and its re-recorded units are not counted again.
//! - **Commit**: the last entry's unit carries the finished ZIP
//!   ([`UnitArtifact::File`]) and `context.review_pack` (`id` = the run's id,
//!   `files`, `sha256`, `size_bytes`, `download_url`), in one transaction;
//!   the close commits the same file again (a no-op, or the rewritten ZIP
//!   of a retry) with the outcome. A draft never committed stays in the file
//!   store's `tmp/` and is never served.
//! - **Proof**: [`PackAdapter`] reads the run's own committed ZIP only: its
//!   stored bytes' checksum ([`FileStore::checksum`]) against the row and
//!   the context, then the ZIP itself (manifest, every entry's SHA-256);
//!   the decision is [`opsledger_core::review_pack::reconcile_pack`].

use async_trait::async_trait;
use futures::StreamExt;
use opsledger_core::reconcile::{AdapterResult, Verdict};
use opsledger_core::review_pack::{
    self as pack, ASSIGNMENT_COLUMNS, BackupLine, CompareLine, Entry, EntryKind, EvidenceLine,
    FINDING_COLUMNS, INVENTORY_COLUMNS, IndexSummary, MANIFEST_FORMAT, MANIFEST_PATH, Manifest, ManifestFile,
    PACK_FILE_NAME, PackCandidate, PackOptions, PackScope, PolicyHead, TypeLine, ZipCheck,
};
use opsledger_core::{Failure, Outcome, Run, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::baselines::{FINDINGS_PER_PAGE, StoredCompare};
use opsledger_store::files::{FileDraft, FileStore, RunFile, StagedFile};
use opsledger_store::proof::ProofReader;
use opsledger_store::{Completion, ContextPatch, StoreError, UnitRecord};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zip::write::{SimpleFileOptions, StreamWriter};

/// Inventory items read per page.
pub const PAGE: u32 = 200;
/// Most units recorded per ledger write.
pub const UNIT_BATCH: usize = 25;
/// Longest a written entry waits before its unit is recorded.
pub const UNIT_FLUSH: Duration = Duration::from_millis(250);

/// The family, with the file store its ZIPs are written to.
pub fn family(files: FileStore) -> Family {
    Family {
        run: Arc::new(Generate { files: files.clone() }),
        units: None,
        adapter: Some(Arc::new(PackAdapter { files })),
    }
}

pub struct Generate {
    pub files: FileStore,
}

/// One step of writing the ZIP, applied on a blocking thread.
enum Op {
    Start(String),
    Bytes(Vec<u8>),
    End,
}

/// The ZIP being written, with what the manifest will list.
struct PackWriter {
    zip: zip::ZipWriter<StreamWriter<FileDraft>>,
    options: SimpleFileOptions,
    /// The entry being written: its path, hash and size so far.
    current: Option<(String, Sha256, u64)>,
    written: Vec<ManifestFile>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl PackWriter {
    fn new(draft: FileDraft) -> PackWriter {
        PackWriter {
            zip: zip::ZipWriter::new_stream(draft),
            options: SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(false),
            current: None,
            written: Vec::new(),
        }
    }

    fn apply(&mut self, ops: Vec<Op>) -> std::io::Result<()> {
        for op in ops {
            match op {
                Op::Start(path) => {
                    self.zip.start_file(path.as_str(), self.options).map_err(io_err)?;
                    self.current = Some((path, Sha256::new(), 0));
                }
                Op::Bytes(b) => {
                    let (_, h, n) = self
                        .current
                        .as_mut()
                        .ok_or_else(|| io_err("bytes outside an entry"))?;
                    self.zip.write_all(&b)?;
                    h.update(&b);
                    *n += b.len() as u64;
                }
                Op::End => {
                    let (path, h, size) = self
                        .current
                        .take()
                        .ok_or_else(|| io_err("end outside an entry"))?;
                    if path != MANIFEST_PATH {
                        self.written.push(ManifestFile {
                            path,
                            size,
                            sha256: hex::encode(h.finalize()),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The ZIP's end written: the draft, ready to finish.
    fn finish(self) -> Result<FileDraft, StoreError> {
        let stream = self
            .zip
            .finish()
            .map_err(|e| StoreError::Files(format!("finishing the review pack: {e}")))?;
        Ok(stream.into_inner())
    }
}

fn write_failed(e: impl std::fmt::Display) -> HandlerError {
    // The draft is local disk (or the store's staging): retried, as a database error would be.
    HandlerError::transient(
        "review_pack_write_failed",
        format!("writing the review pack failed: {e}"),
        Duration::from_secs(1),
    )
}

/// Applies `ops` on a blocking thread (compression and file writes must not
/// hold an async worker), giving the writer back.
async fn apply(slot: &mut Option<PackWriter>, ops: Vec<Op>) -> Result<(), HandlerError> {
    let mut w = slot.take().ok_or_else(|| write_failed("the writer was lost"))?;
    let (w, r) = tokio::task::spawn_blocking(move || {
        let r = w.apply(ops);
        (w, r)
    })
    .await
    .map_err(write_failed)?;
    *slot = Some(w);
    r.map_err(write_failed)
}

/// Entries written whose units are not recorded yet.
struct Pending {
    keys: Vec<String>,
    since: Instant,
}

impl Pending {
    fn push(&mut self, key: String) {
        if self.keys.is_empty() {
            self.since = Instant::now();
        }
        self.keys.push(key);
    }

    /// Records the pending units when the batch is full or old enough
    /// (always with `force`).
    async fn flush(&mut self, ctx: &RunContext, force: bool) -> Result<(), HandlerError> {
        if self.keys.is_empty()
            || (!force && self.keys.len() < UNIT_BATCH && self.since.elapsed() < UNIT_FLUSH)
        {
            return Ok(());
        }
        let units: Vec<UnitRecord> = self
            .keys
            .drain(..)
            .map(|k| UnitRecord::new(k, UnitOutcome::Succeeded))
            .collect();
        ctx.record_units(&units).await?;
        Ok(())
    }

    /// [`Pending::flush`] when the batch is full or old enough, keeping the
    /// last key pending.
    async fn flush_holding_last(&mut self, ctx: &RunContext) -> Result<(), HandlerError> {
        if self.keys.len() < 2 || (self.keys.len() <= UNIT_BATCH && self.since.elapsed() < UNIT_FLUSH) {
            return Ok(());
        }
        let last = self.keys.pop();
        let r = self.flush(ctx, true).await;
        self.keys.extend(last);
        self.since = Instant::now();
        r
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A policy's file: its settings (without assignments), and its assignments
/// when asked; redacted when asked.
fn policy_document(row: &opsledger_store::lease::InventoryRow, options: &PackOptions) -> Vec<u8> {
    let mut settings = row.payload.clone();
    let assignments = settings
        .as_object_mut()
        .and_then(|o| o.remove("assignments"))
        .unwrap_or(Value::Array(Vec::new()));
    let mut doc = json!({
        "policy_type": row.policy_type,
        "id": row.external_id,
        "display_name": row.display_name,
        "settings": settings,
    });
    if options.include_assignments {
        doc["assignments"] = assignments;
    }
    if options.redact {
        pack::redact(&mut doc);
    }
    let mut b = serde_json::to_vec_pretty(&doc).expect("json");
    b.push(b'\n');
    b
}

fn json_line(v: &Value, first: bool) -> Vec<u8> {
    let mut b = if first {
        b"\n  ".to_vec()
    } else {
        b",\n  ".to_vec()
    };
    b.extend(serde_json::to_vec(v).expect("json"));
    b
}

/// Where a walk of one type's inventory pages stands.
struct Pager<'t> {
    policy_type: &'t str,
    after: Option<String>,
    done: bool,
}

impl<'t> Pager<'t> {
    fn new(policy_type: &'t str) -> Pager<'t> {
        Pager {
            policy_type,
            after: None,
            done: false,
        }
    }
}

/// What writing the file map needs beside the run.
struct Plan<'a> {
    ctx: &'a RunContext,
    options: &'a PackOptions,
    cutoff: i64,
    compare: Option<&'a StoredCompare>,
    summary: &'a IndexSummary,
}

impl Plan<'_> {
    /// The next page of the inventory at the cutoff that `pager` walks, or
    /// `None` past its end.
    async fn next_page(
        &self,
        pager: &mut Pager<'_>,
    ) -> Result<Option<Vec<opsledger_store::lease::InventoryRow>>, HandlerError> {
        if pager.done {
            return Ok(None);
        }
        let page = self
            .ctx
            .reads()
            .inventory_page_before(pager.policy_type, pager.after.as_deref(), PAGE, self.cutoff)
            .await?;
        self.ctx.liveness.mark();
        match page.last() {
            Some(last) if page.len() == PAGE as usize => pager.after = Some(last.external_id.clone()),
            _ => pager.done = true,
        }
        Ok(Some(page))
    }

    /// Every item of `policy_type` in the inventory at the cutoff, a page at
    /// a time, each page handed to `f` (which gives back the ops to apply).
    async fn pages(
        &self,
        writer: &mut Option<PackWriter>,
        policy_type: &str,
        mut f: impl FnMut(&[opsledger_store::lease::InventoryRow]) -> Vec<Op>,
    ) -> Result<(), HandlerError> {
        let mut pager = Pager::new(policy_type);
        while let Some(page) = self.next_page(&mut pager).await? {
            let ops = f(&page);
            if !ops.is_empty() {
                apply(writer, ops).await?;
            }
        }
        Ok(())
    }

    /// Writes one entry (not a policy's: those go by type, [`Plan::policies`]).
    async fn entry(&self, writer: &mut Option<PackWriter>, entry: &Entry) -> Result<(), HandlerError> {
        apply(writer, vec![Op::Start(entry.path.clone())]).await?;
        match &entry.kind {
            EntryKind::IndexMarkdown => {
                apply(
                    writer,
                    vec![Op::Bytes(pack::index_markdown(self.summary).into_bytes())],
                )
                .await?;
            }
            EntryKind::IndexHtml => {
                apply(
                    writer,
                    vec![Op::Bytes(pack::index_html(self.summary).into_bytes())],
                )
                .await?;
            }
            EntryKind::InventoryCsv(t) => {
                apply(writer, vec![Op::Bytes(pack::csv_record(INVENTORY_COLUMNS))]).await?;
                self.pages(writer, t, |page| {
                    let mut b = Vec::new();
                    for r in page {
                        let row = pack::inventory_row(
                            t,
                            &r.external_id,
                            &r.display_name,
                            &r.payload,
                            &rfc3339(r.last_seen_at),
                        );
                        b.extend(pack::csv_record(&pack::row_cells(&row, INVENTORY_COLUMNS)));
                    }
                    vec![Op::Bytes(b)]
                })
                .await?;
            }
            EntryKind::InventoryJson(t) => {
                apply(writer, vec![Op::Bytes(b"[".to_vec())]).await?;
                let mut first = true;
                self.pages(writer, t, |page| {
                    let mut b = Vec::new();
                    for r in page {
                        let row = pack::inventory_row(
                            t,
                            &r.external_id,
                            &r.display_name,
                            &r.payload,
                            &rfc3339(r.last_seen_at),
                        );
                        b.extend(json_line(&row, first));
                        first = false;
                    }
                    vec![Op::Bytes(b)]
                })
                .await?;
                apply(writer, vec![Op::Bytes(b"\n]\n".to_vec())]).await?;
            }
            EntryKind::AssignmentsCsv => {
                apply(writer, vec![Op::Bytes(pack::csv_record(ASSIGNMENT_COLUMNS))]).await?;
                for t in &self.summary.types {
                    self.pages(writer, &t.key, |page| {
                        let mut b = Vec::new();
                        for r in page {
                            for row in pack::assignment_rows(
                                &r.policy_type,
                                &r.external_id,
                                &r.display_name,
                                &r.payload,
                            ) {
                                b.extend(pack::csv_record(&row));
                            }
                        }
                        vec![Op::Bytes(b)]
                    })
                    .await?;
                }
            }
            EntryKind::FindingsCsv | EntryKind::FindingsJson => {
                let csv = entry.kind == EntryKind::FindingsCsv;
                apply(
                    writer,
                    vec![Op::Bytes(if csv {
                        pack::csv_record(FINDING_COLUMNS)
                    } else {
                        b"[".to_vec()
                    })],
                )
                .await?;
                if let Some(compare) = self.compare {
                    let mut after = None;
                    let mut first = true;
                    loop {
                        let page = self
                            .ctx
                            .reads()
                            .compare_findings_page(&compare.run_id, after, FINDINGS_PER_PAGE)
                            .await?;
                        let mut b = Vec::new();
                        for f in &page {
                            let finding = pack::finding_for_pack(f.finding.clone(), self.options.redact);
                            if csv {
                                for row in pack::finding_rows(&finding) {
                                    b.extend(pack::csv_record(&row));
                                }
                            } else {
                                b.extend(json_line(&serde_json::to_value(&finding).expect("json"), first));
                                first = false;
                            }
                        }
                        apply(writer, vec![Op::Bytes(b)]).await?;
                        self.ctx.liveness.mark();
                        match page.last() {
                            Some(last) if page.len() == FINDINGS_PER_PAGE as usize => after = Some(last.seq),
                            _ => break,
                        }
                    }
                }
                if !csv {
                    apply(writer, vec![Op::Bytes(b"\n]\n".to_vec())]).await?;
                }
            }
            EntryKind::Policy { .. } => unreachable!("policies are written by type"),
        }
        apply(writer, vec![Op::End]).await
    }

    /// Writes the policy entries `batch` (all of one type), a page of the
    /// inventory at a time; `written` gets each path as its entry ends.
    /// An entry planned but not found is the plan changing under the run.
    async fn policies(
        &self,
        writer: &mut Option<PackWriter>,
        policy_type: &str,
        batch: &[&Entry],
        pending: &mut Pending,
    ) -> Result<Result<(), String>, HandlerError> {
        let mut by_id: HashMap<&str, &str> = batch
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Policy { external_id, .. } => Some((external_id.as_str(), e.path.as_str())),
                _ => None,
            })
            .collect();
        // A type can hold thousands of policies: its files are counted (and
        // a cancel heard) page by page, not once the whole type is written.
        let mut pager = Pager::new(policy_type);
        while let Some(page) = self.next_page(&mut pager).await? {
            if self.ctx.cancel.is_cancelled() {
                return Err(HandlerError::Stopped);
            }
            let mut ops = Vec::new();
            let mut written = Vec::new();
            for r in &page {
                if let Some(path) = by_id.remove(r.external_id.as_str()) {
                    ops.push(Op::Start(path.to_owned()));
                    ops.push(Op::Bytes(policy_document(r, self.options)));
                    ops.push(Op::End);
                    written.push(path.to_owned());
                }
            }
            if !ops.is_empty() {
                apply(writer, ops).await?;
            }
            for key in written {
                pending.push(key);
            }
            // The last file written is held back: it may be the plan's last,
            // whose unit is recorded with the ZIP.
            pending.flush_holding_last(self.ctx).await?;
        }
        Ok(match by_id.keys().next() {
            None => Ok(()),
            Some(id) => Err(format!(
                "{policy_type}/{id} is planned but no longer in the inventory"
            )),
        })
    }
}

/// Closes the run with `outcome` and one failure.
async fn close(
    ctx: &RunContext,
    outcome: Outcome,
    code: &str,
    message: String,
) -> Result<Option<Completion>, HandlerError> {
    ctx.complete(
        Completion::new(outcome)
            .with_patch(ContextPatch::new(["review_pack", "reason_code"], json!(code)))
            .with_failure(Failure::new(code, message)),
    )
    .await?;
    Ok(None)
}

#[async_trait]
impl Handler for Generate {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        if let Some(completion) = self.generate(&ctx).await? {
            ctx.complete(completion).await?;
        }
        Ok(())
    }
}

impl Generate {
    /// Everything but the close: plans, writes and commits the pack (with
    /// its last unit), and returns the completion that closes the run —
    /// `None` when the run was closed already (blocked, failed) or the
    /// handler was stopped. A worker that dies between the two leaves a
    /// committed pack for the adapter to find.
    pub async fn generate(&self, ctx: &RunContext) -> Result<Option<Completion>, HandlerError> {
        let ctx = ctx.clone();
        let run = &ctx.run;
        let reads = ctx.reads();
        let Some(tenant_id) = run.tenant_id.clone() else {
            return Err(HandlerError::permanent(
                "tenant_missing",
                "a review pack needs a tenant",
            ));
        };
        let options = PackOptions::from_params(run.context.get("params").unwrap_or(&Value::Null));
        let cutoff = run.created_at;
        let heads = reads.inventory_heads_before(cutoff).await?;
        if heads.is_empty() && options.types.is_none() {
            return close(
                &ctx,
                Outcome::Blocked,
                "no_inventory",
                "the tenant has no inventory yet: run inventory.sync first".into(),
            )
            .await;
        }
        let inventoried: Vec<String> = heads
            .iter()
            .map(|(t, _, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let types = options.selected_types(&inventoried);
        let policies: Vec<PolicyHead> = heads
            .into_iter()
            .map(|(policy_type, external_id, display_name)| PolicyHead {
                policy_type,
                external_id,
                display_name,
            })
            .collect();
        let compare = reads.latest_compare_before(cutoff).await?;
        let entries = match pack::plan(&options, &types, &policies, compare.is_some()) {
            Ok(e) => e,
            Err(e) => return close(&ctx, Outcome::Failed, "review_pack_too_large", e.to_string()).await,
        };
        let total = entries.len() as u64;
        // The paths are the unit keys: a retry must plan the very same ones
        // (a policy renamed between attempts would otherwise count a new
        // path past the total and the pack could never be committed).
        let plan_sha256 = {
            let mut h = Sha256::new();
            for e in &entries {
                h.update(e.path.as_bytes());
                h.update([0u8]);
            }
            hex::encode(h.finalize())
        };
        match run
            .context
            .pointer("/review_pack_plan/paths_sha256")
            .and_then(Value::as_str)
        {
            Some(first) if first != plan_sha256 => {
                return close(
                    &ctx,
                    Outcome::Failed,
                    "review_pack_plan_changed",
                    "an earlier attempt planned other files (a policy renamed or added since): the pack is not rewritten with another plan".into(),
                )
                .await;
            }
            Some(_) => {}
            None => {
                ctx.patch_context(&[ContextPatch::new(
                    ["review_pack_plan", "paths_sha256"],
                    json!(plan_sha256),
                )])
                .await?;
            }
        }
        // The total, before the first file is written.
        ctx.init_total(total).await?;

        let mut per_type: BTreeMap<&str, u64> = types.iter().map(|t| (t.as_str(), 0)).collect();
        for p in &policies {
            if let Some(n) = per_type.get_mut(p.policy_type.as_str()) {
                *n += 1;
            }
        }
        let tenant_name = reads
            .tenant()
            .await?
            .map(|t| t.name)
            .unwrap_or_else(|| tenant_id.clone());
        let summary = IndexSummary {
            tenant_name,
            tenant_id: tenant_id.clone(),
            run_id: run.id.clone(),
            as_of: rfc3339(cutoff),
            options: options.clone(),
            types: per_type
                .iter()
                .map(|(k, n)| TypeLine {
                    key: (*k).to_owned(),
                    label: opsledger_core::policy_types::lookup(k)
                        .map_or_else(|| (*k).to_owned(), |i| i.label.to_owned()),
                    policies: *n,
                })
                .collect(),
            backup: reads.latest_backup_summary().await?.map(|b| BackupLine {
                id: b.id,
                name: b.name,
                items: b.items,
                created_at: rfc3339(b.created_at),
            }),
            compare: compare.as_ref().map(|c| CompareLine {
                run_id: c.run_id.clone(),
                baseline: match (&c.baseline_snapshot_id, &c.backup_set_id) {
                    (Some(s), _) => format!("baseline snapshot {s}"),
                    (None, Some(b)) => format!("backup set {b}"),
                    (None, None) => "a baseline".into(),
                },
                findings: c.findings,
                recorded_at: rfc3339(c.recorded_at),
            }),
            evidence: match reads.latest_sealed_evidence().await? {
                Some((id, items, at)) => EvidenceLine::Snapshot {
                    id,
                    items,
                    created_at: rfc3339(at),
                },
                None => EvidenceLine::None,
            },
            files: total,
        };
        drop(policies);

        let draft = self.files.begin(&run.id, PACK_FILE_NAME)?;
        let mut writer = Some(PackWriter::new(draft));
        let plan = Plan {
            ctx: &ctx,
            options: &options,
            cutoff,
            compare: compare.as_ref(),
            summary: &summary,
        };
        let mut pending = Pending {
            keys: Vec::new(),
            since: Instant::now(),
        };
        let mut i = 0;
        while i < entries.len() {
            if ctx.cancel.is_cancelled() {
                return Ok(None);
            }
            let mut written = Vec::new();
            match &entries[i].kind {
                EntryKind::Policy { policy_type, .. } => {
                    let batch: Vec<&Entry> = entries[i..]
                        .iter()
                        .take_while(|e| matches!(&e.kind, EntryKind::Policy { policy_type: t, .. } if t == policy_type))
                        .collect();
                    i += batch.len();
                    if let Err(why) = plan
                        .policies(&mut writer, policy_type, &batch, &mut pending)
                        .await?
                    {
                        return close(&ctx, Outcome::Failed, "review_pack_plan_changed", why).await;
                    }
                }
                _ => {
                    plan.entry(&mut writer, &entries[i]).await?;
                    written.push(entries[i].path.clone());
                    i += 1;
                }
            }
            for key in written {
                pending.push(key);
            }
            // The last entry's unit is recorded with the ZIP.
            if i < entries.len() {
                pending.flush(&ctx, false).await?;
            }
        }
        let last = pending.keys.pop();

        // The manifest, then the ZIP finished and flushed to disk.
        let mut w = writer.take().ok_or_else(|| write_failed("the writer was lost"))?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            run_id: run.id.clone(),
            workspace_id: run.workspace_id.clone(),
            tenant_id: tenant_id.clone(),
            as_of: rfc3339(cutoff),
            options: options.clone(),
            files: std::mem::take(&mut w.written),
        };
        if manifest.files.len() as u64 != total {
            return Err(write_failed(format!(
                "{} files written of {total} planned",
                manifest.files.len()
            )));
        }
        let draft = tokio::task::spawn_blocking(move || -> Result<FileDraft, StoreError> {
            w.apply(vec![
                Op::Start(MANIFEST_PATH.into()),
                Op::Bytes(manifest.to_bytes()),
                Op::End,
            ])
            .map_err(|e| StoreError::Files(format!("writing the manifest: {e}")))?;
            w.finish()
        })
        .await
        .map_err(write_failed)??;
        // An upload the bucket refused is retried like any write (its
        // message names no endpoint: the client's words stay in the log).
        let staged: StagedFile = draft.finish().await.map_err(write_failed)?;
        let context = pack::context_entry(&run.workspace_id, &run.id, total, &staged.sha256, staged.size);
        let patch = ContextPatch::new(["review_pack"], context);

        pending.flush(&ctx, true).await?;
        if let Some(key) = last {
            let mut unit = UnitRecord::new(key, UnitOutcome::Succeeded);
            unit.artifact = Some(UnitArtifact::File(staged.clone()));
            unit.context_patch = Some(patch.clone());
            ctx.record_units(&[unit]).await?;
        }
        Ok(Some(
            Completion::new(Outcome::Succeeded)
                .with_artifact(UnitArtifact::File(staged))
                .with_patch(patch),
        ))
    }
}

/// Reconciles a stale generation from its own committed ZIP.
pub struct PackAdapter {
    pub files: FileStore,
}

/// Reads a committed ZIP back (through a temporary file: a ZIP is read from
/// its end) and checks it against its manifest: every entry's SHA-256 and
/// size, no entry missing or extra.
async fn check_zip(files: &FileStore, run_id: &str, file: &RunFile) -> Result<Option<ZipCheck>, StoreError> {
    // Its bytes were just found whole ([`FileStore::checksum`]): a read
    // that fails now is the store failing, not proof of absence.
    let mut stream = files.read(run_id, file).await?;
    let temp = tempfile::tempfile().map_err(|e| StoreError::Files(format!("temporary file: {e}")))?;
    let mut temp = tokio::fs::File::from_std(temp);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| StoreError::Files(format!("reading {}: {e}", file.name)))?;
        tokio::io::AsyncWriteExt::write_all(&mut temp, &chunk)
            .await
            .map_err(|e| StoreError::Files(format!("temporary file: {e}")))?;
    }
    let temp = temp.into_std().await;
    tokio::task::spawn_blocking(move || Ok(Some(verify(temp))))
        .await
        .map_err(|e| StoreError::Files(format!("checking a review pack: {e}")))?
}

/// What the ZIP in `file` holds against its manifest.
pub fn verify(mut file: impl Read + Seek) -> ZipCheck {
    let unreadable = |e: String| ZipCheck {
        manifest: Err(e),
        entries: 0,
        mismatched: Vec::new(),
    };
    if let Err(e) = file.rewind() {
        return unreadable(e.to_string());
    }
    let mut zip = match zip::ZipArchive::new(file) {
        Ok(z) => z,
        Err(e) => return unreadable(format!("not a ZIP: {e}")),
    };
    let manifest = match zip.by_name(MANIFEST_PATH) {
        Ok(mut m) => {
            let mut b = Vec::new();
            match m.read_to_end(&mut b) {
                Ok(_) => Manifest::parse(&b),
                Err(e) => Err(format!("manifest.json cannot be read: {e}")),
            }
        }
        Err(_) => Err("the ZIP has no manifest.json".into()),
    };
    let listed: BTreeMap<String, (u64, String)> = match &manifest {
        Ok(m) => m
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.size, f.sha256.clone())))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    let mut seen = BTreeSet::new();
    let mut mismatched = Vec::new();
    let mut entries = 0;
    for i in 0..zip.len() {
        let mut f = match zip.by_index(i) {
            Ok(f) => f,
            Err(e) => {
                mismatched.push(format!("entry {i}: {e}"));
                continue;
            }
        };
        let name = match f.name() {
            Ok(n) => n.into_owned(),
            Err(e) => {
                mismatched.push(format!("entry {i}: {e}"));
                continue;
            }
        };
        if name == MANIFEST_PATH {
            continue;
        }
        entries += 1;
        let mut h = Sha256::new();
        let size = match std::io::copy(&mut f, &mut h) {
            Ok(n) => n,
            Err(e) => {
                mismatched.push(format!("{name}: {e}"));
                continue;
            }
        };
        let ok = listed.get(&name) == Some(&(size, hex::encode(h.finalize())));
        if !ok || !seen.insert(name.clone()) {
            mismatched.push(name);
        }
    }
    mismatched.extend(listed.keys().filter(|p| !seen.contains(*p)).cloned());
    ZipCheck {
        manifest,
        entries,
        mismatched,
    }
}

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for PackAdapter {
    fn name(&self) -> &'static str {
        "review_pack_generate"
    }

    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError> {
        let mut candidates = Vec::new();
        for file in proof
            .files_of(&run.id)
            .await?
            .into_iter()
            // The generator commits one ZIP; any other is a second
            // candidate, and two are no proof (`proof_ambiguous`).
            .filter(|f| f.name.ends_with(".zip"))
        {
            // A store that cannot answer now (a bucket down, a disk error) is
            // no proof either way: this run is left for a later sweep, and
            // the others of the page are still decided.
            let undecided = |e: StoreError| match e {
                StoreError::FileUnavailable(m) | StoreError::Files(m) => Ok(AdapterResult::new(
                    Verdict::NotReconciled,
                    "artifact_unreachable",
                    format!("the review pack's file could not be checked now: {m}"),
                )),
                // A row naming no valid place is no pack: fail closed.
                StoreError::Corrupt(m) => Ok(AdapterResult::new(
                    Verdict::Failed,
                    "review_pack_corrupt",
                    format!("the review pack's file row is not valid: {m}"),
                )),
                other => Err(other),
            };
            let stored = match self.files.checksum(&run.id, &file).await {
                Ok(stored) => stored,
                Err(e) => return undecided(e),
            };
            let zip = match &stored {
                Some((size, sha)) if *sha == file.sha256 && *size == file.size => {
                    match check_zip(&self.files, &run.id, &file).await {
                        Ok(zip) => zip,
                        Err(e) => return undecided(e),
                    }
                }
                _ => None,
            };
            candidates.push(PackCandidate {
                name: file.name,
                row_size: file.size,
                row_sha256: file.sha256,
                stored,
                zip,
            });
        }
        Ok(pack::reconcile_pack(
            PackScope {
                run_id: &run.id,
                workspace_id: &run.workspace_id,
                tenant_id: run.tenant_id.as_deref().unwrap_or_default(),
                total: run.summary_counts.total,
                context: run.context.get("review_pack").filter(|v| v.get("id").is_some()),
            },
            &candidates,
        ))
    }
}
