//! `backup_set.restore` end to end through two in-process runners on both
//! databases: demo tenants (whose every write goes through a counting
//! state, the provider's write log), and folder tenants made from the real
//! exports in `testdata/`.

mod common;

use async_trait::async_trait;
use opsledger_core::normalize::content_hash;
use opsledger_core::{Outcome, Run, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_families::backup_set_restore::reference_positions;
use opsledger_providers::demo::{DemoState, DemoStateError, MemoryDemoState};
use opsledger_providers::{Directory, DirectoryKind, Provider, ProviderSettings};
use opsledger_store::restores::RestoreOutcome;
use opsledger_store::{NewRun, Store, both_backends};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The demo tenants' state, counting every write per tenant: what a restore
/// touched, and that a dry run or an idempotent re-run touched nothing.
#[derive(Debug, Default)]
struct WriteLog {
    writes: Mutex<Vec<(String, String, String)>>,
    count: AtomicU64,
}

impl WriteLog {
    fn of(&self, tenant: &str) -> Vec<(String, String)> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == tenant)
            .map(|(_, c, id)| (c.clone(), id.clone()))
            .collect()
    }
}

#[async_trait]
impl DemoState for WriteLog {
    async fn put(
        &self,
        tenant: &str,
        collection: &str,
        id: &str,
        body: &Value,
    ) -> Result<(), DemoStateError> {
        self.writes
            .lock()
            .unwrap()
            .push((tenant.to_owned(), collection.to_owned(), id.to_owned()));
        self.count.fetch_add(1, Ordering::SeqCst);
        MemoryDemoState.put(tenant, collection, id, body).await
    }
    async fn get(&self, tenant: &str, collection: &str, id: &str) -> Result<Option<Value>, DemoStateError> {
        MemoryDemoState.get(tenant, collection, id).await
    }
    async fn list(&self, tenant: &str, collection: &str) -> Result<Vec<(String, Value)>, DemoStateError> {
        MemoryDemoState.list(tenant, collection).await
    }
}

struct Env {
    store: Store,
    ws: String,
    log: Arc<WriteLog>,
    settings: ProviderSettings,
}

async fn env(store: Store) -> Env {
    let ws = store.create_workspace("ws").await.unwrap().id;
    let log = Arc::new(WriteLog::default());
    let settings = ProviderSettings {
        demo_state: Some(log.clone()),
        ..ProviderSettings::default()
    };
    Env {
        store,
        ws,
        log,
        settings,
    }
}

impl Env {
    async fn tenant(&self, name: &str, spec: &str) -> String {
        self.store.create_tenant(&self.ws, name, spec).await.unwrap().id
    }

    async fn run(&self, tenant: &str, t: RunType, params: Value) -> Run {
        let new = NewRun::on_tenant(&self.ws, tenant, t, "test", params);
        let id = self.store.create_run(new).await.unwrap().into_run().id;
        let registry = opsledger_families::registry(self.settings.clone());
        let config = RunnerConfig {
            concurrency: 8,
            poll_interval: Duration::from_millis(10),
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let a = tokio::spawn(
            Runner::new(self.store.clone(), registry.clone(), config.clone()).run(shutdown.clone()),
        );
        let b = tokio::spawn(Runner::new(self.store.clone(), registry, config).run(shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let done = loop {
            let r = self.store.get_run(&id).await.unwrap().unwrap();
            if r.is_completed() {
                break r;
            }
            assert!(tokio::time::Instant::now() < deadline, "{r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        shutdown.cancel();
        a.await.unwrap();
        b.await.unwrap();
        done
    }

    /// Inventory, then a backup of every policy: the backup set's id.
    async fn backup(&self, tenant: &str) -> String {
        let sync = self.run(tenant, RunType::InventorySync, json!({})).await;
        assert!(
            matches!(sync.outcome, Outcome::Succeeded | Outcome::PartiallySucceeded),
            "{sync:?}"
        );
        let backup = self.run(tenant, RunType::BackupSetAddPolicies, json!({})).await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
        backup.context["backup_set"]["id"].as_str().unwrap().to_owned()
    }

    async fn restore(&self, target: &str, params: Value) -> Run {
        self.run(target, RunType::BackupSetRestore, params).await
    }

    fn provider(&self, spec: &str, tenant: &str) -> Arc<dyn Provider> {
        opsledger_providers::open(spec, tenant, "x", &self.settings).unwrap()
    }

    /// `result` of every unit of `run`.
    async fn results(&self, run: &Run) -> Vec<RestoreOutcome> {
        self.store
            .restore_results_of(&run.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.outcome)
            .collect()
    }
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

/// Every policy of a tenant, whole, with its type: `(type, name, hash)`.
async fn read_back(p: &dyn Provider) -> Vec<(String, String, String)> {
    let names = p.directory().await.map(|d| d.names()).unwrap_or_default();
    let mut out = Vec::new();
    for t in p.policy_types().await.unwrap() {
        let mut page = None;
        loop {
            let got = p.list_page(&t.key, page.as_deref()).await.unwrap();
            for item in &got.items {
                let whole = p.get_policy(&t.key, &item.id).await.unwrap();
                out.push((
                    t.key.clone(),
                    whole.display_name.trim().to_lowercase(),
                    content_hash(&whole.payload, &names),
                ));
            }
            match got.next {
                Some(n) => page = Some(n),
                None => break,
            }
        }
    }
    out.sort();
    out
}

both_backends!(
    an_empty_set_restores_nothing_and_says_so,
    |store: Store| async move {
        let e = env(store).await;
        let t = e.tenant("contoso", "demo:healthy").await;
        let full = e.backup(&t).await;
        // A backup naming no policy: complete, and empty.
        let none = e
            .run(&t, RunType::BackupSetAddPolicies, json!({"policy_ids": []}))
            .await;
        assert_eq!(none.outcome, Outcome::Succeeded, "{:?}", none.failures);
        let empty = none.context["backup_set"]["id"].as_str().unwrap().to_owned();
        assert_ne!(empty, full);
        let latest = e.store.latest_complete_backup_set(&t).await.unwrap().unwrap();
        assert_eq!(latest.id, empty, "the newest complete set is the empty one");
        // Restored by default or by name: blocked, nothing written, never
        // `succeeded` over zero items.
        for params in [json!({}), json!({"backup_set_id": empty})] {
            let writes = e.log.of(&t).len();
            let run = e.restore(&t, params.clone()).await;
            assert_eq!(
                (run.outcome, run.failures[0].code.as_str()),
                (Outcome::Blocked, "backup_set_empty"),
                "{params}"
            );
            assert!(run.failures[0].message.contains(&empty), "{:?}", run.failures);
            assert_eq!(run.summary_counts.total, None);
            assert_eq!(e.log.of(&t).len(), writes);
        }
    }
);

both_backends!(
    a_healthy_backup_restores_into_each_demo_profile,
    |store: Store| async move {
        let e = env(store).await;
        let source = e.tenant("contoso", "demo:healthy").await;
        let set = e.backup(&source).await;
        let items = e.store.backup_item_heads(&set).await.unwrap().len() as u64;
        for (profile, outcome) in [
            ("healthy", Outcome::Succeeded),
            ("throttled", Outcome::Succeeded),
            ("partial", Outcome::PartiallySucceeded),
            ("blocked", Outcome::Blocked),
        ] {
            let target = e
                .tenant(&format!("target-{profile}"), &format!("demo:{profile}"))
                .await;
            let run = e.restore(&target, json!({ "backup_set_id": set })).await;
            assert_eq!(run.outcome, outcome, "{profile}: {:?}", run.failures);
            let c = &run.summary_counts;
            if profile == "blocked" {
                assert_eq!(c.total, None, "blocked before any plan");
                assert!(
                    e.log.of(&target).is_empty(),
                    "nothing written into a blocked tenant"
                );
                continue;
            }
            assert_eq!((c.total, c.processed), (Some(items), Some(items)), "{profile}");
            let written = c.created.unwrap_or(0) + c.updated.unwrap_or(0);
            assert!(written > 0, "{profile}: {c:?}");
            if profile == "partial" {
                let codes: Vec<&str> = run.failures.iter().map(|f| f.code.as_str()).collect();
                assert!(codes.contains(&"provider_forbidden"), "{codes:?}");
            }
            assert_eq!(
                e.results(&run).await.len() as u64,
                items,
                "every unit has its result: {:?}",
                run.failures
            );
        }
    }
);

both_backends!(
    the_acsc_export_restores_into_a_demo_tenant_and_again_unchanged,
    |store: Store| async move {
        let e = env(store).await;
        let path = testdata("acsc-intune-hardening");
        let spec = format!("folder:{}", path.display());
        let source = e.tenant("acsc", &spec).await;
        let set = e.backup(&source).await;
        // Every item of the set: 6 settings catalog policies and 1 intent.
        let heads = e.store.backup_item_heads(&set).await.unwrap();
        assert_eq!(heads.len(), 7);
        let mut types: Vec<String> = heads.iter().map(|i| i.policy_type.clone()).collect();
        types.sort();
        assert_eq!(
            types,
            [vec!["configurationPolicies"; 6], vec!["intents"]].concat()
        );
        let items: Vec<String> = heads.into_iter().map(|i| i.id).collect();
        let target = e.tenant("demo", "demo:healthy").await;
        let first = e
            .restore(&target, json!({ "backup_set_id": set, "item_ids": items }))
            .await;
        assert_eq!(first.outcome, Outcome::Succeeded, "{:?}", first.failures);
        assert_eq!(e.results(&first).await, vec![RestoreOutcome::Created; 7]);
        assert_eq!(first.summary_counts.created, Some(7));
        // Read back from the target, each of its own type, equals its backup
        // after normalization.
        let p = e.provider("demo:healthy", &target);
        let names = p.directory().await.unwrap().names();
        let results = e.store.restore_results_of(&first.id).await.unwrap();
        assert_eq!(results.len(), 7);
        let mut restored_types: Vec<String> = Vec::new();
        for r in results {
            let item = e
                .store
                .backup_item(&set, r.backup_item_id.as_deref().unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(r.detail["policy_type"], item.head.policy_type.as_str());
            let back = p
                .get_policy(&item.head.policy_type, r.target_id.as_deref().unwrap())
                .await
                .unwrap();
            assert_eq!(
                content_hash(&back.payload, &names),
                item.content_sha256,
                "{}/{}",
                item.head.policy_type,
                item.head.display_name
            );
            restored_types.push(item.head.policy_type);
        }
        restored_types.sort();
        assert_eq!(restored_types, types);
        let writes = e.log.of(&target).len();
        let again = e
            .restore(&target, json!({ "backup_set_id": set, "item_ids": items }))
            .await;
        assert_eq!(again.outcome, Outcome::Succeeded, "{:?}", again.failures);
        assert_eq!(e.results(&again).await, vec![RestoreOutcome::Unchanged; 7]);
        assert_eq!(e.log.of(&target).len(), writes, "a second restore writes nothing");
        assert_eq!(
            (again.summary_counts.created, again.summary_counts.updated),
            (None, None)
        );
    }
);

/// A copy of the CA baseline's ids: every id of its directory and policies.
fn source_ids(store_dir: &Directory, items: &[opsledger_store::restores::ItemHead]) -> Vec<String> {
    let mut ids: Vec<String> = store_dir.entries.iter().map(|e| e.id.to_lowercase()).collect();
    ids.extend(items.iter().flat_map(|i| i.refs.keys().map(|k| k.to_lowercase())));
    ids.sort();
    ids.dedup();
    ids
}

/// The target folder's own directory: an id derived from a name (a file
/// without an id) is the same in both folders, and is the target's own.
async fn p_dir(e: &Env, root: &tempfile::TempDir, tenant: &str) -> Directory {
    e.provider(&format!("folder:{}", root.path().display()), tenant)
        .directory()
        .await
        .unwrap()
}

fn folder_text(root: &Path) -> String {
    let mut all = String::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap().to_lowercase());
        }
    }
    all
}

both_backends!(
    the_ca_baseline_restores_into_an_empty_folder_with_every_reference_remapped,
    |store: Store| async move {
        let e = env(store).await;
        let spec = format!("folder:{}", testdata("ca-baseline").display());
        let source = e.tenant("ca", &spec).await;
        let set = e.backup(&source).await;
        let head = e.store.backup_set_head(&e.ws, &set).await.unwrap().unwrap();
        let directory: Directory = serde_json::from_value(head.directory.clone().unwrap()).unwrap();
        let heads = e.store.backup_item_heads(&set).await.unwrap();
        assert_eq!(heads.len(), 39);
        // Every id in a reference position of this export (assignments,
        // Conditional Access users, groups and named locations) is one its
        // directory knows: its users are `All` or `None`, its locations `All`
        // or its own. So nothing below fails as a reference outside the
        // backup's directory (an id the restore could not map by name), and
        // the counts below hold; an export that did would fail those items.
        for h in &heads {
            let item = e.store.backup_item(&set, &h.id).await.unwrap().unwrap();
            for p in reference_positions(&item.payload) {
                assert!(
                    h.refs.keys().any(|k| k.eq_ignore_ascii_case(&p.id)),
                    "{} `{}`: {p:?} is not in the backup's directory",
                    h.policy_type,
                    h.display_name
                );
            }
        }

        // Without creating groups: the named locations land, every policy
        // naming a group the empty target lacks fails, naming it.
        let empty = tempfile::tempdir().unwrap();
        let target_spec = format!("folder:{}", empty.path().display());
        let target = e.tenant("empty", &target_spec).await;
        let run = e.restore(&target, json!({ "backup_set_id": set })).await;
        assert_eq!(
            run.outcome,
            Outcome::PartiallySucceeded,
            "{:?}",
            run.summary_counts
        );
        let unmapped: Vec<_> = run
            .failures
            .iter()
            .filter(|f| f.code == "reference_unmapped")
            .collect();
        assert!(!unmapped.is_empty());
        assert!(unmapped[0].message.contains("group `"), "{}", unmapped[0].message);
        let n = unmapped.len() as u64;
        assert_eq!(
            (run.summary_counts.created, run.summary_counts.failed),
            (Some(39 - n), Some(n)),
            "every item but those naming a missing group was created"
        );

        // With `create_missing_groups`: groups and named locations first,
        // then every policy, none of the source's ids left in the target.
        let fresh = tempfile::tempdir().unwrap();
        let target = e
            .tenant("fresh", &format!("folder:{}", fresh.path().display()))
            .await;
        let run = e
            .restore(
                &target,
                json!({ "backup_set_id": set, "create_missing_groups": true }),
            )
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let groups = run.context["restore"]["groups"].as_object().unwrap().len() as u64;
        assert!(groups > 0);
        // The export names two group ids twice each (a renamed group's old
        // file kept beside the new one); its MigrationTable.json decides,
        // and the restore says so: in its plan, and in each unit naming one.
        let decisions = run.context["restore"]["name_decisions"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        let own = p_dir(&e, &fresh, &target).await;
        let results = e.store.restore_results_of(&run.id).await.unwrap();
        for d in &decisions {
            assert_eq!(d["decided_by"], "MigrationTable.json");
            let chosen = d["chosen"].as_str().unwrap();
            let [created] = own.by_name(opsledger_providers::DirectoryKind::Group, chosen)[..] else {
                panic!("the chosen name `{chosen}` is one group of the target");
            };
            for passed in d["passed_over"].as_array().unwrap() {
                assert!(
                    own.by_name(
                        opsledger_providers::DirectoryKind::Group,
                        passed.as_str().unwrap()
                    )
                    .is_empty(),
                    "the name passed over, {passed}, was not created"
                );
            }
            let saying: Vec<&Value> = results
                .iter()
                .filter_map(|r| r.detail["name_decisions"].as_array())
                .flatten()
                .filter(|n| {
                    n["source_id"]
                        .as_str()
                        .unwrap()
                        .eq_ignore_ascii_case(d["id"].as_str().unwrap())
                })
                .collect();
            assert!(
                !saying.is_empty(),
                "a unit referring to {} says how it was mapped",
                d["id"]
            );
            for n in saying {
                assert_eq!(n["mapped_by_name"], chosen);
                assert_eq!(n["target_id"], json!(created.id));
                assert!(n["message"].as_str().unwrap().contains("MigrationTable.json"));
            }
        }
        assert_eq!(run.summary_counts.total, Some(39 + groups));
        assert_eq!(run.summary_counts.created, Some(39 + groups));
        let text = folder_text(fresh.path());
        let own = p_dir(&e, &fresh, &target).await;
        for id in source_ids(&directory, &heads)
            .into_iter()
            .filter(|id| own.by_id(id).is_none())
        {
            assert!(!text.contains(&id), "source id {id} survived in the target");
        }
        // And the target reads back equal to the backup, by name.
        let p = e.provider(&format!("folder:{}", fresh.path().display()), &target);
        let back = read_back(p.as_ref()).await;
        let names = directory.names();
        let mut expected = Vec::new();
        for h in &heads {
            let item = e.store.backup_item(&set, &h.id).await.unwrap().unwrap();
            expected.push((
                h.policy_type.clone(),
                h.display_name.trim().to_lowercase(),
                content_hash(&item.payload, &names),
            ));
        }
        expected.sort();
        assert_eq!(back, expected);
    }
);

both_backends!(
    only_the_named_items_are_touched_and_a_dry_run_touches_none,
    |store: Store| async move {
        let e = env(store).await;
        let source = e.tenant("contoso", "demo:healthy").await;
        let set = e.backup(&source).await;
        let heads = e.store.backup_item_heads(&set).await.unwrap();
        let twenty: Vec<_> = heads
            .iter()
            .filter(|h| {
                h.policy_type == "deviceConfigurations" || h.policy_type == "deviceCompliancePolicies"
            })
            .take(20)
            .collect();
        assert_eq!(twenty.len(), 20);
        let three: Vec<String> = twenty.iter().take(3).map(|h| h.id.clone()).collect();
        let target = e.tenant("fabrikam", "demo:healthy").await;

        let dry = e
            .restore(
                &target,
                json!({ "backup_set_id": set, "item_ids": three, "dry_run": true }),
            )
            .await;
        assert_eq!(dry.outcome, Outcome::Succeeded, "{:?}", dry.failures);
        assert_eq!(dry.summary_counts.total, Some(3));
        assert!(e.log.of(&target).is_empty(), "a dry run writes nothing");
        assert_eq!(e.results(&dry).await, vec![RestoreOutcome::Created; 3]);
        assert_eq!(dry.summary_counts.created, None, "nothing was created");

        let run = e
            .restore(&target, json!({ "backup_set_id": set, "item_ids": three }))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let touched: std::collections::BTreeSet<String> =
            e.log.of(&target).into_iter().map(|(_, id)| id).collect();
        let restored: std::collections::BTreeSet<String> = e
            .store
            .restore_results_of(&run.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.target_id.unwrap())
            .collect();
        assert_eq!(touched, restored, "exactly the three named items were written");
        assert_eq!(touched.len(), 3);
    }
);

both_backends!(
    a_unit_rerun_after_its_create_makes_no_duplicate,
    |store: Store| async move {
        let e = env(store).await;
        let source = e.tenant("contoso", "demo:healthy").await;
        let set = e.backup(&source).await;
        let head = e
            .store
            .backup_item_heads(&set)
            .await
            .unwrap()
            .into_iter()
            .find(|h| {
                h.policy_type == "deviceConfigurations"
                    && !h.refs.is_empty()
                    && h.refs.values().all(|n| n.starts_with("group:"))
            })
            .expect("a policy assigned to groups only");
        let item = e.store.backup_item(&set, &head.id).await.unwrap().unwrap();
        let target = e.tenant("fabrikam", "demo:healthy").await;
        // The unit's create landed, then its worker died before recording it.
        let p = e.provider("demo:healthy", &target);
        let mut body = item.payload.clone();
        body.as_object_mut().unwrap().remove("assignments");
        p.create_policy("deviceConfigurations", &body).await.unwrap();
        let run = e
            .restore(&target, json!({ "backup_set_id": set, "item_ids": [head.id] }))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(e.results(&run).await, vec![RestoreOutcome::Updated]);
        let named = read_back(p.as_ref())
            .await
            .into_iter()
            .filter(|(t, n, _)| t == "deviceConfigurations" && *n == head.display_name.trim().to_lowercase())
            .count();
        assert_eq!(named, 1, "no duplicate");
    }
);

both_backends!(
    a_target_without_a_complete_set_is_blocked,
    |store: Store| async move {
        let e = env(store).await;
        let target = e.tenant("contoso", "demo:healthy").await;
        let run = e.restore(&target, json!({})).await;
        assert_eq!(run.outcome, Outcome::Blocked);
        assert_eq!(run.failures[0].code, "no_backup_set");
        assert_eq!(run.summary_counts.total, None);
        // Its own latest complete set is the default.
        let set = e.backup(&target).await;
        let run = e.restore(&target, json!({})).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(run.context["restore"]["backup_set_id"], set);
        assert!(
            e.results(&run)
                .await
                .iter()
                .all(|r| *r == RestoreOutcome::Unchanged)
        );
    }
);

both_backends!(
    an_assignment_to_a_group_the_target_lacks_is_unmapped_unless_created,
    |store: Store| async move {
        let e = env(store).await;
        let source = e.tenant("contoso", "demo:healthy").await;
        // One policy of the source is assigned to a group only it has.
        let p = e.provider("demo:healthy", &source);
        let group = p
            .create_directory_object(opsledger_providers::DirectoryKind::Group, "Only At Contoso")
            .await
            .unwrap();
        let policy = p.list_page("deviceConfigurations", None).await.unwrap().items[0].clone();
        p.assign(
            "deviceConfigurations",
            &policy.id,
            &[json!({"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group.id}})],
        )
        .await
        .unwrap();
        let set = e.backup(&source).await;
        let heads = e.store.backup_item_heads(&set).await.unwrap();
        let item = heads.iter().find(|h| h.external_id == policy.id).unwrap();
        assert_eq!(item.refs[&group.id], "group:Only At Contoso");
        let other = heads
            .iter()
            .find(|h| {
                h.policy_type == "deviceCompliancePolicies"
                    && h.refs.values().all(|n| n.starts_with("group:"))
            })
            .unwrap();
        let ids = json!([item.id, other.id]);

        let target = e.tenant("fabrikam", "demo:healthy").await;
        let run = e
            .restore(&target, json!({"backup_set_id": set, "item_ids": ids}))
            .await;
        assert_eq!(run.outcome, Outcome::PartiallySucceeded, "{:?}", run.failures);
        assert_eq!(run.failures.len(), 1);
        let f = &run.failures[0];
        assert_eq!(f.code, "reference_unmapped");
        assert_eq!(f.unit.as_deref(), Some(format!("item/{}", item.id).as_str()));
        assert!(
            f.message.contains("Only At Contoso") && f.message.contains(&group.id),
            "{}",
            f.message
        );
        let t = e.provider("demo:healthy", &target);
        assert!(
            t.directory()
                .await
                .unwrap()
                .by_name(opsledger_providers::DirectoryKind::Group, "Only At Contoso")
                .is_empty(),
            "no group is created unless asked"
        );

        let run = e
            .restore(
                &target,
                json!({"backup_set_id": set, "item_ids": ids, "create_missing_groups": true}),
            )
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let made = t.directory().await.unwrap();
        let made = made.by_name(opsledger_providers::DirectoryKind::Group, "Only At Contoso");
        assert_eq!(made.len(), 1);
        assert_ne!(
            made[0].id, group.id,
            "the target's own group, not the source's id"
        );
        let restored = e.store.restore_results_of(&run.id).await.unwrap();
        let unit = restored
            .iter()
            .find(|r| r.backup_item_id.as_deref() == Some(item.id.as_str()))
            .unwrap();
        let back = t
            .get_policy("deviceConfigurations", unit.target_id.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(
            back.payload["assignments"][0]["target"]["groupId"],
            made[0].id.as_str()
        );
    }
);

/// A user, and a group the source deleted before its backup: ids in a
/// Conditional Access policy's conditions that the source's directory does
/// not know, so the backup has no name to map them by.
const PILOT_USER: &str = "4b5c6d7e-1a2b-4c3d-8e9f-0123456789ab";
const DELETED_GROUP: &str = "9f8e7d6c-5b4a-4321-8fed-cba987654321";

/// The conditions of such a policy: `PILOT_USER` included, `DELETED_GROUP`
/// excluded, and the named locations given.
fn pilot_conditions(locations: &[&str]) -> Value {
    json!({
        "users": {"includeUsers": [PILOT_USER], "excludeUsers": [],
                  "includeGroups": [], "excludeGroups": [DELETED_GROUP]},
        "applications": {"includeApplications": ["All"]},
        "clientAppTypes": ["all"],
        "locations": {"includeLocations": locations, "excludeLocations": []},
    })
}

both_backends!(
    an_id_outside_the_backups_directory_fails_its_item_in_another_tenant_only,
    |store: Store| async move {
        let e = env(store).await;
        let source = e.tenant("contoso", "demo:healthy").await;
        let p = e.provider("demo:healthy", &source);
        let ca = p
            .create_policy(
                "conditionalAccessPolicies",
                &json!({
                    "@odata.type": "#microsoft.graph.conditionalAccessPolicy",
                    "displayName": "Pilot user MFA (restore test)",
                    "state": "enabledForReportingButNotEnforced",
                    "conditions": pilot_conditions(&["All"]),
                    "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
                }),
            )
            .await
            .unwrap();
        let set = e.backup(&source).await;
        let heads = e.store.backup_item_heads(&set).await.unwrap();
        let item = heads.iter().find(|h| h.external_id == ca.id).unwrap();
        assert!(
            item.refs.is_empty(),
            "the source's directory knows neither id: {:?}",
            item.refs
        );
        let other = heads
            .iter()
            .find(|h| {
                h.policy_type == "deviceCompliancePolicies"
                    && h.refs.values().all(|n| n.starts_with("group:"))
            })
            .unwrap();
        let ids = json!([item.id, other.id]);
        let unit = format!("item/{}", item.id);
        let said = [
            format!(
                "conditions.users.includeUsers[0]: user {PILOT_USER} is not in the backup's directory and \
                 cannot be mapped to tenant `fabrikam`; users are not mapped between tenants"
            ),
            format!(
                "conditions.users.excludeGroups[0]: group {DELETED_GROUP} is not in the backup's directory and \
                 cannot be mapped to tenant `fabrikam`"
            ),
        ];

        let target = e.tenant("fabrikam", "demo:healthy").await;
        // A dry run says what would fail, and writes nothing.
        let dry = e
            .restore(
                &target,
                json!({"backup_set_id": set, "item_ids": ids, "dry_run": true}),
            )
            .await;
        assert_eq!(dry.outcome, Outcome::PartiallySucceeded, "{:?}", dry.failures);
        assert_eq!(dry.failures.len(), 1, "{:?}", dry.failures);
        assert_eq!(dry.failures[0].code, "reference_unmapped");
        assert_eq!(dry.failures[0].unit.as_deref(), Some(unit.as_str()));
        assert!(e.log.of(&target).is_empty(), "a dry run writes nothing");

        let run = e
            .restore(&target, json!({"backup_set_id": set, "item_ids": ids}))
            .await;
        assert_eq!(run.outcome, Outcome::PartiallySucceeded, "{:?}", run.failures);
        assert_eq!(run.failures.len(), 1, "{:?}", run.failures);
        let f = &run.failures[0];
        assert_eq!(f.code, "reference_unmapped");
        assert_eq!(f.unit.as_deref(), Some(unit.as_str()));
        for s in &said {
            assert!(f.message.contains(s.as_str()), "{}", f.message);
        }
        assert_eq!(
            (run.summary_counts.created, run.summary_counts.failed),
            (Some(1), Some(1))
        );
        let results = e.store.restore_results_of(&run.id).await.unwrap();
        let r = results
            .iter()
            .find(|r| r.backup_item_id.as_deref() == Some(item.id.as_str()))
            .unwrap();
        assert_eq!(
            (r.outcome, r.target_id.as_deref()),
            (RestoreOutcome::Failed, None)
        );
        assert_eq!(
            r.detail["unmapped_positions"],
            json!([
                {"path": "conditions.users.includeUsers[0]", "id": PILOT_USER, "kind": "user"},
                {"path": "conditions.users.excludeGroups[0]", "id": DELETED_GROUP, "kind": "group"},
            ])
        );
        // Nothing of it was written into the target; the other item was.
        let writes = e.log.of(&target);
        assert!(
            writes.iter().any(|(c, _)| c == "deviceCompliancePolicies"),
            "{writes:?}"
        );
        assert!(
            writes.iter().all(|(c, _)| c != "conditionalAccessPolicies"),
            "{writes:?}"
        );
        let t = e.provider("demo:healthy", &target);
        assert!(
            read_back(t.as_ref())
                .await
                .iter()
                .all(|(_, n, _)| n != "pilot user mfa (restore test)")
        );

        // Into its own tenant the ids are still valid: nothing to map, and
        // nothing changed since the backup.
        let writes = e.log.of(&source).len();
        let own = e
            .restore(&source, json!({"backup_set_id": set, "item_ids": ids}))
            .await;
        assert_eq!(own.outcome, Outcome::Succeeded, "{:?}", own.failures);
        assert_eq!(e.results(&own).await, vec![RestoreOutcome::Unchanged; 2]);
        assert_eq!(e.log.of(&source).len(), writes, "nothing written");
    }
);

both_backends!(
    an_exported_policy_naming_a_user_fails_in_another_folder_and_stays_in_its_own,
    |store: Store| async move {
        let e = env(store).await;
        // The CA baseline, with one more policy: for a pilot user, without
        // the group it excluded (deleted since), in one of its own named
        // locations (which does map, by name).
        let root = tempfile::tempdir().unwrap();
        common::copy_tree(&testdata("ca-baseline"), root.path());
        let spec = format!("folder:{}", root.path().display());
        let source = e.tenant("ca", &spec).await;
        let office = e
            .provider(&spec, &source)
            .directory()
            .await
            .unwrap()
            .by_name(DirectoryKind::NamedLocation, "ALLOWED COUNTRIES")[0]
            .id
            .clone();
        std::fs::write(
            root.path()
                .join("Config/ConditionalAccess/CA900-Pilot-User-MFA.json"),
            serde_json::to_vec_pretty(&json!({
                "@odata.type": "#microsoft.graph.conditionalAccessPolicy",
                "id": "c0ffee00-0000-4000-8000-000000000900",
                "displayName": "CA900-Pilot-User-MFA",
                "state": "enabledForReportingButNotEnforced",
                "conditions": pilot_conditions(&[office.as_str()]),
                "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
            }))
            .unwrap(),
        )
        .unwrap();
        let set = e.backup(&source).await;
        let heads = e.store.backup_item_heads(&set).await.unwrap();
        assert_eq!(heads.len(), 40);
        let item = heads
            .iter()
            .find(|h| h.display_name == "CA900-Pilot-User-MFA")
            .unwrap();
        assert_eq!(
            item.refs.values().map(String::as_str).collect::<Vec<_>>(),
            vec!["named_location:ALLOWED COUNTRIES"],
            "of its references, the backup's directory knows the location only"
        );
        let location = heads
            .iter()
            .find(|h| h.policy_type == "namedLocations" && h.display_name.trim() == "ALLOWED COUNTRIES")
            .unwrap();

        // Into another tenant: the location lands, the policy fails naming
        // what cannot be mapped, and none of it is written.
        let empty = tempfile::tempdir().unwrap();
        let target = e
            .tenant("empty", &format!("folder:{}", empty.path().display()))
            .await;
        let run = e
            .restore(
                &target,
                json!({"backup_set_id": set, "item_ids": [item.id, location.id]}),
            )
            .await;
        assert_eq!(run.outcome, Outcome::PartiallySucceeded, "{:?}", run.failures);
        assert_eq!(run.failures.len(), 1, "{:?}", run.failures);
        let f = &run.failures[0];
        assert_eq!(f.code, "reference_unmapped");
        assert_eq!(f.unit.as_deref(), Some(format!("item/{}", item.id).as_str()));
        for s in [
            format!("conditions.users.includeUsers[0]: user {PILOT_USER}"),
            format!("conditions.users.excludeGroups[0]: group {DELETED_GROUP}"),
            "cannot be mapped to tenant `empty`".to_owned(),
        ] {
            assert!(f.message.contains(&s), "{}", f.message);
        }
        assert!(
            !f.message.contains("ALLOWED COUNTRIES"),
            "the location maps: {}",
            f.message
        );
        assert_eq!(
            (run.summary_counts.created, run.summary_counts.failed),
            (Some(1), Some(1))
        );
        let text = folder_text(empty.path());
        for absent in [PILOT_USER, DELETED_GROUP, "ca900-pilot-user-mfa"] {
            assert!(!text.contains(absent), "{absent} was written into the target");
        }
        assert!(text.contains("allowed countries"), "the location was written");

        // Into its own tenant: its ids are its own, nothing changed.
        let own = e
            .restore(&source, json!({"backup_set_id": set, "item_ids": [item.id]}))
            .await;
        assert_eq!(own.outcome, Outcome::Succeeded, "{:?}", own.failures);
        assert_eq!(e.results(&own).await, vec![RestoreOutcome::Unchanged]);
    }
);
