//! `review_pack.generate` end to end, on both databases: a pack observed
//! counted mid-write, whose ZIP holds exactly `total` files besides its
//! manifest, each matching the manifest's SHA-256; options that remove
//! files lower `total` before the first file is written; the demo's
//! planted secrets appear nowhere in a redacted pack (every file is
//! searched); a generation killed mid-write leaves nothing committed, its
//! re-execution counts no file twice, and its reconciliation never says
//! `succeeded`; the reconciliation matrix from the run's own ZIP only.

mod common;

use futures::StreamExt;
use opsledger_core::review_pack::{MANIFEST_PATH, Manifest, PACK_FILE_NAME};
use opsledger_core::{Outcome, Run, RunStatus, RunType, UnitOutcome};
use opsledger_engine::{Handler, Registry, RunContext};
use opsledger_families::Services;
use opsledger_families::review_pack_generate::Generate;
use opsledger_providers::demo;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::files::FileStore;
use opsledger_store::jobs::Fence;
use opsledger_store::{ContextPatch, NewRun, Store, UnitRecord, both_backends};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Env {
    store: Store,
    ws: String,
    files: FileStore,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new(store: Store) -> Env {
        let ws = store.create_workspace("ws").await.unwrap().id;
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::new(dir.path()).unwrap();
        Env {
            store,
            ws,
            files,
            _dir: dir,
        }
    }

    fn registry(&self) -> Registry {
        opsledger_families::registry_with(Services {
            files: Some(self.files.clone()),
            ..Services::default()
        })
    }

    async fn tenant(&self, name: &str, spec: &str) -> String {
        self.store.create_tenant(&self.ws, name, spec).await.unwrap().id
    }

    async fn create(&self, tenant: &str, t: RunType, params: Value) -> String {
        let params = opsledger_core::params::validate(t, &params).unwrap();
        let new = NewRun::on_tenant(&self.ws, tenant, t, "test", params);
        self.store.create_run(new).await.unwrap().into_run().id
    }

    /// Runs `id` to its end through a runner, recording every state of it
    /// seen on the way (polled every 2 ms).
    async fn follow(&self, id: &str) -> (Run, Vec<Run>) {
        common::follow_with(&self.store, self.registry(), id, Duration::from_millis(2)).await
    }

    async fn run(&self, tenant: &str, t: RunType, params: Value) -> Run {
        let id = self.create(tenant, t, params).await;
        let run = self.follow(&id).await.0;
        if t != RunType::ReviewPackGenerate {
            assert_eq!(run.outcome, Outcome::Succeeded, "{t}: {:?}", run.failures);
        }
        run
    }

    /// A new run of `t` on `tenant`, its job claimed: its fence, and a
    /// context a handler can be executed with.
    async fn claimed(&self, tenant: &str, params: Value) -> (String, Fence, RunContext) {
        let id = self.create(tenant, RunType::ReviewPackGenerate, params).await;
        let job = self
            .store
            .claim_jobs("w", 10, 600_000)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.run_id == id)
            .unwrap();
        let ctx = self.context(&id, &job.fence, 1).await;
        (id, job.fence, ctx)
    }

    async fn context(&self, id: &str, fence: &Fence, attempt: u32) -> RunContext {
        let lease = opsledger_store::testing::lease(&self.store, fence, id).await;
        let run = self.store.get_run(id).await.unwrap().unwrap();
        RunContext::new(run, lease, attempt, CancellationToken::new())
    }

    /// The committed pack of run `id`: its entries by path.
    async fn zip(&self, id: &str) -> BTreeMap<String, Vec<u8>> {
        let files = self.store.run_files(id).await.unwrap();
        let file = files
            .iter()
            .find(|f| f.name == PACK_FILE_NAME)
            .expect("a committed pack");
        let mut stream = self.files.read(id, file).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(bytes.len() as u64, file.size);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), file.sha256);
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut out = BTreeMap::new();
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).unwrap();
            let name = f.name().unwrap().into_owned();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            assert!(out.insert(name, b).is_none(), "one entry per path");
        }
        out
    }

    async fn reconcile(&self, id: &str) -> Run {
        common::reconcile_with(&self.store, &self.registry(), id).await
    }

    /// A tenant with its inventory.
    async fn inventoried(&self, name: &str, spec: &str) -> String {
        let t = self.tenant(name, spec).await;
        self.run(&t, RunType::InventorySync, json!({})).await;
        t
    }
}

/// The pack's ZIP is complete: exactly `total` files besides the manifest,
/// each matching the manifest's size and SHA-256; the manifest is the run's.
fn assert_complete(run: &Run, zip: &BTreeMap<String, Vec<u8>>) -> Manifest {
    let total = run.summary_counts.total.expect("a total");
    let manifest = Manifest::parse(zip.get(MANIFEST_PATH).expect("a manifest")).unwrap();
    assert_eq!(manifest.run_id, run.id);
    assert_eq!(manifest.files.len() as u64, total);
    assert_eq!(
        zip.len() as u64,
        total + 1,
        "exactly total files besides the manifest"
    );
    for f in &manifest.files {
        let bytes = zip
            .get(&f.path)
            .unwrap_or_else(|| panic!("{} listed, not in the ZIP", f.path));
        assert_eq!(bytes.len() as u64, f.size, "{}", f.path);
        assert_eq!(hex::encode(Sha256::digest(bytes)), f.sha256, "{}", f.path);
    }
    manifest
}

/// `(total, processed, succeeded, failed)`; an unset `failed` is none failed.
fn counts(run: &Run) -> (Option<u64>, Option<u64>, Option<u64>, u64) {
    let c = &run.summary_counts;
    (c.total, c.processed, c.succeeded, c.failed.unwrap_or(0))
}

both_backends!(
    a_pack_is_counted_as_written_and_its_zip_holds_total_checked_files,
    |store: Store| async move {
        let e = Env::new(store).await;
        // A large tenant: ~1 000 policies, so the generation is watched mid-write.
        let t = e.inventoried("contoso", "demo:healthy:8").await;
        let id = e.create(&t, RunType::ReviewPackGenerate, json!({})).await;
        let (run, seen) = e.follow(&id).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let total = run.summary_counts.total.unwrap();
        assert!(total > 1000, "{total}");
        assert_eq!(counts(&run), (Some(total), Some(total), Some(total), 0));
        // Counted while running, 0 < processed < total; the total, once
        // set, never changes; processed never goes back.
        assert!(
            seen.iter().any(|r| r.status == RunStatus::Running
                && matches!(r.summary_counts.processed, Some(p) if p > 0 && p < total)),
            "never observed mid-write"
        );
        let mut last = 0;
        for r in &seen {
            if let Some(t) = r.summary_counts.total {
                assert_eq!(t, total, "a total is set once, before any file");
            }
            let p = r.summary_counts.processed.unwrap_or(0);
            assert!(p >= last);
            last = p;
        }
        let mid = seen
            .iter()
            .find(|r| r.status == RunStatus::Running && r.summary_counts.total.is_some())
            .unwrap();
        let progress = opsledger_core::progress::progress_of(mid, &[]);
        assert_eq!(progress.mode, opsledger_core::ProgressMode::Counted);

        // context.review_pack names the committed file.
        let pack = &run.context["review_pack"];
        let file = e.store.run_files(&id).await.unwrap();
        assert_eq!(file.len(), 1);
        assert_eq!(pack["id"], id.as_str());
        assert_eq!(pack["files"], total);
        assert_eq!(pack["sha256"], file[0].sha256.as_str());
        assert_eq!(
            pack["download_url"],
            format!("/api/v1/workspaces/{}/review-packs/{id}/download", e.ws)
        );
        let zip = e.zip(&id).await;
        let manifest = assert_complete(&run, &zip);
        let policies = manifest
            .files
            .iter()
            .filter(|f| f.path.starts_with("policies/"))
            .count() as u64;
        let inventoried = e.store.count_inventory_items(&t).await.unwrap();
        assert_eq!(policies, inventoried, "one file per policy");
        assert!(zip.contains_key("index.html") && zip.contains_key("index.md"));
        assert!(zip.contains_key("assignments.csv"));
        let index = String::from_utf8(zip["index.md"].clone()).unwrap();
        for line in [
            "**Latest complete backup**: none",
            "**Latest compare**: none",
            "**Latest evidence snapshot**: none",
            "| `deviceConfigurations` |",
        ] {
            assert!(index.contains(line), "{line:?} not in {index}");
        }
        let csv = String::from_utf8(zip["inventory/deviceConfigurations.csv"].clone()).unwrap();
        assert!(csv.starts_with("policy_type,id,display_name,"), "{csv}");
        // Every ledger unit is an entry of the manifest, once.
        let units = e.store.recorded_units(&id).await.unwrap();
        assert_eq!(units.len() as u64, total);
        assert!(
            manifest
                .files
                .iter()
                .all(|f| units.get(&f.path) == Some(&UnitOutcome::Succeeded))
        );

        // Options that remove files lower the total before any is written.
        let id = e
            .create(
                &t,
                RunType::ReviewPackGenerate,
                json!({"include_policies": false, "include_assignments": false, "types": ["deviceConfigurations", "namedLocations"]}),
            )
            .await;
        let (small, seen) = e.follow(&id).await;
        assert_eq!(small.outcome, Outcome::Succeeded, "{:?}", small.failures);
        assert_eq!(
            small.summary_counts.total,
            Some(2 + 2 * 2),
            "index ×2, and csv + json per type"
        );
        for r in &seen {
            if let Some(t) = r.summary_counts.total {
                assert_eq!(
                    Some(t),
                    small.summary_counts.total,
                    "never a total that later shrinks"
                );
            }
        }
        let zip = e.zip(&id).await;
        assert_complete(&small, &zip);
        assert!(
            !zip.keys()
                .any(|p| p.starts_with("policies/") || p == "assignments.csv")
        );
    }
);

/// Every planted secret, and where it must not appear.
const SECRETS: &[&str] = &[
    demo::WIFI_PRE_SHARED_KEY,
    demo::CERTIFICATE_BLOB,
    demo::OMA_ADMIN_PASSWORD,
    demo::OMA_WIFI_KEY_MATERIAL,
];

/// Whether `needle` occurs in `hay` (the certificate also by a prefix of
/// it, so a cut or reflowed blob is found too).
fn leaks(hay: &[u8], needle: &str) -> bool {
    let needle = &needle.as_bytes()[..needle.len().min(48)];
    hay.windows(needle.len()).any(|w| w == needle)
}

both_backends!(
    a_redacted_pack_holds_no_secret_in_any_file,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.inventoried("contoso", "demo:healthy").await;
        // A compare, so findings files are in the pack too.
        e.run(&t, RunType::BaselineCapture, json!({})).await;
        e.run(&t, RunType::BaselineCompare, json!({})).await;
        let run = e.run(&t, RunType::ReviewPackGenerate, json!({})).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let zip = e.zip(&run.id).await;
        assert_complete(&run, &zip);
        assert!(zip.contains_key("findings.csv") && zip.contains_key("findings.json"));
        for (path, bytes) in &zip {
            for s in SECRETS {
                assert!(!leaks(bytes, s), "{s} leaked into {path}");
            }
        }
        let wifi = zip
            .iter()
            .find(|(p, _)| p.starts_with("policies/deviceConfigurations/Wi-Fi - Corporate WPA2 PSK"))
            .expect("the planted Wi-Fi policy has a file");
        let doc: Value = serde_json::from_slice(wifi.1).unwrap();
        assert_eq!(doc["settings"]["preSharedKey"], "[redacted]");
        assert_eq!(doc["settings"]["ssid"], "CORP-WIFI", "what is no secret stays");
        assert!(doc["assignments"].is_array());

        // Not redacted when asked not to: the search above can fail.
        let run = e
            .run(&t, RunType::ReviewPackGenerate, json!({"redact": false}))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded);
        let zip = e.zip(&run.id).await;
        for s in SECRETS {
            assert!(zip.values().any(|b| leaks(b, s)), "{s} is in the unredacted pack");
        }
    }
);

/// Runs the handler on `ctx` in a task and kills it (drops it at its next
/// await, as a SIGKILL stops it anywhere) once `at_least` files are counted.
async fn kill_mid_write(e: &Env, id: &str, ctx: RunContext, at_least: u64) {
    let handler = Generate {
        files: e.files.clone(),
    };
    let task = tokio::spawn(async move { handler.execute(ctx).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = e.store.get_run(id).await.unwrap().unwrap();
        let (total, processed) = (r.summary_counts.total, r.summary_counts.processed.unwrap_or(0));
        if processed >= at_least {
            assert!(total.unwrap() > processed, "killed mid-write");
            break;
        }
        assert!(!task.is_finished(), "finished before it could be killed");
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
}

both_backends!(
    a_killed_generation_commits_nothing_counts_nothing_twice_and_never_succeeds,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.inventoried("contoso", "demo:healthy:8").await;

        // Killed mid-write: no file is committed (nothing is downloadable).
        let (id, fence, ctx) = e.claimed(&t, json!({})).await;
        kill_mid_write(&e, &id, ctx, 50).await;
        assert!(e.store.run_files(&id).await.unwrap().is_empty());
        let before = e.store.get_run(&id).await.unwrap().unwrap();
        let processed = before.summary_counts.processed.unwrap();

        // Executed again (a retry): the ZIP is rewritten from the start, the
        // files counted already are not counted again.
        let ctx = e.context(&id, &fence, 2).await;
        let handler = Generate {
            files: e.files.clone(),
        };
        let completion = handler.generate(&ctx).await.unwrap().expect("a completion");
        let mid = e.store.get_run(&id).await.unwrap().unwrap();
        let total = mid.summary_counts.total.unwrap();
        assert_eq!(mid.summary_counts.total, before.summary_counts.total);
        assert_eq!(mid.summary_counts.processed, Some(total));
        assert_eq!(
            mid.summary_counts.succeeded,
            Some(total),
            "{processed} counted before, once"
        );
        assert!(processed < total);
        ctx.complete(completion).await.unwrap();
        let run = e.store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(run.outcome, Outcome::Succeeded);
        assert_complete(&run, &e.zip(&id).await);

        // Killed mid-write, then reconciled: failed, never succeeded; its
        // remainder closed as not attempted; still nothing committed.
        let (id, _, ctx) = e.claimed(&t, json!({})).await;
        kill_mid_write(&e, &id, ctx, 50).await;
        let run = e.reconcile(&id).await;
        assert_eq!(run.outcome, Outcome::Failed, "{:?}", run.reconciliation());
        assert_eq!(run.reconciliation().unwrap()["reason_code"], "stale_no_proof");
        let c = &run.summary_counts;
        assert_eq!(c.processed, c.total);
        assert!(c.failed.unwrap() > 0);
        assert!(e.store.run_files(&id).await.unwrap().is_empty());
    }
);

both_backends!(
    reconciliation_matrix_from_the_runs_own_zip,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.inventoried("contoso", "demo:healthy").await;
        let reason = |r: &Run| {
            r.reconciliation().unwrap()["reason_code"]
                .as_str()
                .unwrap()
                .to_owned()
        };

        // Complete: the worker died after committing the pack with its last
        // unit, before closing → succeeded, every file counted.
        let (complete, _, ctx) = e.claimed(&t, json!({})).await;
        let handler = Generate {
            files: e.files.clone(),
        };
        let completion = handler.generate(&ctx).await.unwrap();
        assert!(completion.is_some());
        drop(completion);
        let run = e.reconcile(&complete).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Succeeded, "review_pack_complete"),
            "{:?}",
            run.reconciliation()
        );
        let total = run.summary_counts.total.unwrap();
        assert_eq!(counts(&run), (Some(total), Some(total), Some(total), 0));

        // Complete but its bytes altered since → never succeeded.
        let (altered, _, ctx) = e.claimed(&t, json!({"include_policies": false})).await;
        handler.generate(&ctx).await.unwrap().unwrap();
        let file = e.store.run_files(&altered).await.unwrap().remove(0);
        if let Some(path) = e.files.path_of(&altered, &file) {
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(b"tampered").unwrap();
            let run = e.reconcile(&altered).await;
            assert_eq!(
                (run.outcome, reason(&run).as_str()),
                (Outcome::Failed, "review_pack_checksum_mismatch")
            );
        }

        // Incomplete: no ZIP committed → never succeeded.
        let (incomplete, _, ctx) = e.claimed(&t, json!({})).await;
        ctx.init_total(5).await.unwrap();
        ctx.record_units(&[UnitRecord::new("index.md", UnitOutcome::Succeeded)])
            .await
            .unwrap();
        let run = e.reconcile(&incomplete).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );

        // Wrong scope: its context names the complete pack of another run.
        let (foreign, _, ctx) = e.claimed(&t, json!({})).await;
        let other = e.store.get_run(&complete).await.unwrap().unwrap();
        ctx.patch_context(&[ContextPatch::new(
            ["review_pack"],
            other.context["review_pack"].clone(),
        )])
        .await
        .unwrap();
        let run = e.reconcile(&foreign).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_wrong_scope")
        );

        // Two candidates: two ZIPs committed by one run → none trusted.
        let (two, _, ctx) = e.claimed(&t, json!({})).await;
        ctx.init_total(2).await.unwrap();
        let mut units = Vec::new();
        for (key, name) in [("a", PACK_FILE_NAME), ("b", "review-pack-2.zip")] {
            let mut draft = e.files.begin(&two, name).unwrap();
            draft.write_all(name.as_bytes()).unwrap();
            let mut unit = UnitRecord::new(key, UnitOutcome::Succeeded);
            unit.artifact = Some(UnitArtifact::File(draft.finish().await.unwrap()));
            units.push(unit);
        }
        ctx.record_units(&units).await.unwrap();
        assert_eq!(e.store.run_files(&two).await.unwrap().len(), 2);
        let run = e.reconcile(&two).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_ambiguous")
        );

        // A tenant with no inventory: blocked, nothing planned.
        let empty = e.tenant("empty", "demo:healthy").await;
        let run = e.run(&empty, RunType::ReviewPackGenerate, json!({})).await;
        assert_eq!(run.outcome, Outcome::Blocked);
        assert_eq!(run.failures[0].code, "no_inventory");
        assert_eq!(run.summary_counts.total, None);
    }
);

both_backends!(
    a_retry_that_would_plan_other_paths_fails_instead_of_counting_past_its_total,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.inventoried("contoso", "demo:healthy").await;
        // An earlier attempt planned other paths (a policy renamed since).
        let id = e.create(&t, RunType::ReviewPackGenerate, json!({})).await;
        e.store
            .patch_context(
                &id,
                &[ContextPatch::new(
                    ["review_pack_plan", "paths_sha256"],
                    json!("0".repeat(64)),
                )],
            )
            .await
            .unwrap();
        let (run, _) = e.follow(&id).await;
        assert_eq!(run.outcome, Outcome::Failed);
        assert_eq!(
            run.failures[0].code, "review_pack_plan_changed",
            "{:?}",
            run.failures
        );
        assert!(
            e.store.run_files(&id).await.unwrap().is_empty(),
            "no pack committed"
        );
        assert_eq!(run.summary_counts.processed.unwrap_or(0), 0, "nothing counted");
    }
);
