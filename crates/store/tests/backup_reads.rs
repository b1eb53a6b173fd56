//! Reads of backup sets (`store/src/backup_reads.rs`) on SQLite and
//! PostgreSQL: listing newest first, filtered and paged to the end; what a
//! tenant-restricted member and another workspace see (nothing, the same as
//! for an id that exists nowhere); the complete flag from the creating run;
//! items and payloads paged to the end; restore history newest first,
//! capped, and only into tenants the caller may see.
//!
//! Sets and items are written through the writer path (a claimed run job's
//! lease, units with their backup items); restore results, whose writer is
//! not part of this module, are inserted as rows.

use opsledger_core::{Outcome, RunType, UnitOutcome};
use opsledger_store::backup_reads::{
    BackupSetFilter, ITEMS_PER_PAGE, PAYLOADS_PER_PAGE, PayloadCursor, RESTORES_PER_ITEM,
};
use opsledger_store::backups::BackupItem;
use opsledger_store::{
    Completion, NewRun, Store, UnitRecord, Visibility, artifacts::UnitArtifact, both_backends, raw_on_pool,
};
use serde_json::json;
use std::collections::BTreeSet;

fn all(ws: &str) -> Visibility {
    Visibility {
        workspace_id: ws.to_owned(),
        tenants: None,
    }
}

fn only(ws: &str, tenants: &[&str]) -> Visibility {
    Visibility {
        workspace_id: ws.to_owned(),
        tenants: Some(tenants.iter().map(|t| t.to_string()).collect()),
    }
}

/// How the run that creates a set ends.
#[derive(Clone, Copy, PartialEq)]
enum Ends {
    Succeeded,
    /// One planned unit failed.
    PartiallySucceeded,
    /// The run is left running (its last unit not recorded).
    Running,
}

struct Made {
    set: String,
    run: String,
}

fn item(i: usize) -> BackupItem {
    let payload = json!({"id": format!("p{i:05}"), "displayName": format!("Policy {i}"), "n": i});
    BackupItem {
        policy_type: if i.is_multiple_of(2) {
            "deviceConfigurations"
        } else {
            "namedLocations"
        }
        .to_owned(),
        external_id: format!("p{i:05}"),
        display_name: format!("Policy {i}"),
        content_sha256: opsledger_core::normalize::content_hash(&payload, &Default::default()),
        refs: json!({}),
        payload,
    }
}

/// A backup set of `items` items on `tenant`, written through the writer
/// path by a `backup_set.add_policies` run that ends as `ends`.
async fn make_set(store: &Store, ws: &str, tenant: &str, items: usize, ends: Ends, directory: bool) -> Made {
    let new = NewRun::on_tenant(ws, tenant, RunType::BackupSetAddPolicies, "test", json!({}));
    let run = store.create_run(new).await.unwrap().into_run().id;
    let job = store
        .claim_jobs("w", 1, 600_000)
        .await
        .unwrap()
        .pop()
        .expect("the run's job");
    assert_eq!(job.run_id, run);
    let lease = opsledger_store::testing::lease(store, &job.fence, &run).await;
    let dir = json!({"entries": [{"kind": "group", "id": "g1", "display_name": "All Staff"}]});
    let set = lease
        .backup_set("Backup", directory.then_some(&dir))
        .await
        .unwrap();
    let planned = if ends == Ends::Succeeded { items } else { items + 1 };
    lease.init_total(planned as u64).await.unwrap();
    let mut units: Vec<UnitRecord> = (0..items)
        .map(|i| {
            UnitRecord::new(format!("u{i:05}"), UnitOutcome::Succeeded)
                .with_artifact(UnitArtifact::BackupItem(item(i)))
        })
        .collect();
    if ends == Ends::PartiallySucceeded {
        units.push(UnitRecord::new("failed", UnitOutcome::Failed));
    }
    lease.record_units(&units).await.unwrap();
    match ends {
        Ends::Succeeded => {
            store
                .complete_run(&run, Completion::new(Outcome::Succeeded))
                .await
                .unwrap();
        }
        Ends::PartiallySucceeded => {
            store
                .complete_run(&run, Completion::new(Outcome::PartiallySucceeded))
                .await
                .unwrap();
        }
        Ends::Running => {}
    }
    Made { set, run }
}

/// A workspace with tenants A and B, and another workspace with tenant O.
struct World {
    ws: String,
    other: String,
    a: String,
    b: String,
    o: String,
}

async fn world(store: &Store) -> World {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let other = store.create_workspace("other").await.unwrap().id;
    let a = store.create_tenant(&ws, "a", "demo:healthy").await.unwrap().id;
    let b = store.create_tenant(&ws, "b", "demo:healthy").await.unwrap().id;
    let o = store.create_tenant(&other, "o", "demo:healthy").await.unwrap().id;
    World { ws, other, a, b, o }
}

/// Every page of the list, to the end.
async fn list_all(store: &Store, vis: &Visibility, tenant: Option<&str>, limit: u32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let filter = BackupSetFilter {
            tenant_id: tenant.map(str::to_owned),
            cursor: cursor.clone(),
            limit,
        };
        let (sets, next) = store.list_backup_sets(vis, &filter).await.unwrap();
        pages.push(sets.iter().map(|s| s.id.clone()).collect());
        match next {
            Some(n) => cursor = Some(n),
            None => return pages,
        }
        assert!(pages.len() < 100, "the list never ends");
    }
}

/// A restore result row (its writer is the restore family's).
#[allow(clippy::too_many_arguments)]
async fn restore_row(
    store: &Store,
    run: &str,
    unit: &str,
    ws: &str,
    target: &str,
    set: &str,
    item: &str,
    result: &str,
    dry_run: bool,
    at: i64,
) {
    raw_on_pool!(store, pool => {
        sqlx::query(
            "INSERT INTO restore_results (run_id, unit_key, workspace_id, target_tenant_id, backup_set_id, \
             backup_item_id, result, dry_run, target_id, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(run)
        .bind(unit)
        .bind(ws)
        .bind(target)
        .bind(set)
        .bind(item)
        .bind(result)
        .bind(i32::from(dry_run))
        .bind(format!("target-of-{unit}"))
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    });
}

both_backends!(
    sets_are_listed_newest_first_filtered_and_paged_to_the_end,
    |store: Store| async move {
        let w = world(&store).await;
        let mut made = Vec::new();
        for i in 0..7 {
            let tenant = if i % 3 == 0 { &w.b } else { &w.a };
            made.push((
                make_set(&store, &w.ws, tenant, 2, Ends::Succeeded, false)
                    .await
                    .set,
                tenant.clone(),
            ));
        }
        let foreign = make_set(&store, &w.other, &w.o, 1, Ends::Succeeded, false)
            .await
            .set;
        let newest_first: Vec<String> = made.iter().rev().map(|(s, _)| s.clone()).collect();
        // Pages of 3: 3 + 3 + 1, the last without a cursor; each set once.
        let pages = list_all(&store, &all(&w.ws), None, 3).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(pages.concat(), newest_first);
        // A page that ends exactly at the last set has no cursor.
        assert_eq!(
            list_all(&store, &all(&w.ws), None, 7).await,
            std::slice::from_ref(&newest_first)
        );
        // The default page holds them all.
        assert_eq!(
            list_all(&store, &all(&w.ws), None, 0).await,
            std::slice::from_ref(&newest_first)
        );
        // By tenant.
        let of_a: Vec<String> = made
            .iter()
            .rev()
            .filter(|(_, t)| *t == w.a)
            .map(|(s, _)| s.clone())
            .collect();
        assert_eq!(list_all(&store, &all(&w.ws), Some(&w.a), 2).await.concat(), of_a);
        // Another workspace's tenant, or one that exists nowhere: empty.
        assert_eq!(
            list_all(&store, &all(&w.ws), Some(&w.o), 50).await,
            [Vec::<String>::new()]
        );
        let nowhere = "01900000-0000-7000-8000-000000000000";
        assert_eq!(
            list_all(&store, &all(&w.ws), Some(nowhere), 50).await,
            [Vec::<String>::new()]
        );
        // The other workspace sees its own set only.
        assert_eq!(list_all(&store, &all(&w.other), None, 50).await, [vec![foreign]]);
        // A cursor in capitals pages as the cursor itself.
        let (upper, _) = store
            .list_backup_sets(
                &all(&w.ws),
                &BackupSetFilter {
                    cursor: Some(newest_first[2].to_uppercase()),
                    limit: 50,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            upper.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
            newest_first[3..]
        );
        // A limit past the largest is the largest.
        let (clamped, _) = store
            .list_backup_sets(
                &all(&w.ws),
                &BackupSetFilter {
                    limit: 100_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(clamped.len(), 7);
    }
);

both_backends!(
    a_restricted_member_and_other_workspaces_see_nothing_of_hidden_sets,
    |store: Store| async move {
        let w = world(&store).await;
        let set_a = make_set(&store, &w.ws, &w.a, 3, Ends::Succeeded, true).await.set;
        let set_b = make_set(&store, &w.ws, &w.b, 3, Ends::Succeeded, true).await.set;
        let foreign = make_set(&store, &w.other, &w.o, 3, Ends::Succeeded, true)
            .await
            .set;
        let restricted = only(&w.ws, &[&w.a]);
        assert_eq!(
            list_all(&store, &restricted, None, 50).await,
            [vec![set_a.clone()]]
        );
        assert_eq!(
            list_all(&store, &restricted, Some(&w.b), 50).await,
            [Vec::<String>::new()]
        );
        assert_eq!(
            list_all(&store, &only(&w.ws, &[]), None, 50).await,
            [Vec::<String>::new()]
        );
        // One set: visible, or None — hidden tenant, other workspace, nowhere alike.
        assert_eq!(
            store
                .visible_backup_set(&restricted, &set_a)
                .await
                .unwrap()
                .unwrap()
                .id,
            set_a
        );
        let nowhere = "01900000-0000-7000-8000-000000000000";
        for (vis, id) in [
            (&restricted, set_b.as_str()),
            (&all(&w.ws), foreign.as_str()),
            (&all(&w.ws), nowhere),
            (&only(&w.ws, &[]), set_a.as_str()),
        ] {
            assert_eq!(store.visible_backup_set(vis, id).await.unwrap(), None, "{id}");
            assert_eq!(
                store.visible_backup_set_directory(vis, id).await.unwrap(),
                None,
                "{id}"
            );
            let page = store.visible_backup_set_items(vis, id, None).await.unwrap();
            assert!(page.items.is_empty() && page.next_cursor.is_none(), "{id}");
            assert!(
                store
                    .visible_backup_set_payloads(vis, id, None, 50)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        // What the member may see, they see whole.
        assert_eq!(
            store
                .visible_backup_set_items(&restricted, &set_a, None)
                .await
                .unwrap()
                .items
                .len(),
            3
        );
        assert_eq!(
            store
                .visible_backup_set_payloads(&restricted, &set_a, None, 50)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            store
                .visible_backup_set_directory(&restricted, &set_a)
                .await
                .unwrap(),
            Some(Some(
                json!({"entries": [{"kind": "group", "id": "g1", "display_name": "All Staff"}]})
            ))
        );
    }
);

both_backends!(
    a_set_is_complete_only_when_its_run_succeeded,
    |store: Store| async move {
        let w = world(&store).await;
        let done = make_set(&store, &w.ws, &w.a, 4, Ends::Succeeded, true).await;
        let partial = make_set(&store, &w.ws, &w.a, 4, Ends::PartiallySucceeded, false).await;
        let running = make_set(&store, &w.ws, &w.b, 2, Ends::Running, true).await;
        let vis = all(&w.ws);
        let (sets, _) = store
            .list_backup_sets(&vis, &BackupSetFilter::default())
            .await
            .unwrap();
        let got: Vec<(String, u64, bool, bool, String)> = sets
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    s.item_count,
                    s.complete,
                    s.has_directory,
                    s.created_by_run_id.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (running.set.clone(), 2, false, true, running.run.clone()),
                (partial.set.clone(), 4, false, false, partial.run.clone()),
                (done.set.clone(), 4, true, true, done.run.clone()),
            ]
        );
        // One set says the same as the list.
        for s in &sets {
            assert_eq!(
                store.visible_backup_set(&vis, &s.id).await.unwrap().as_ref(),
                Some(s)
            );
        }
        // The running set becomes complete when its run succeeds.
        store
            .record_unit(&running.run, UnitRecord::new("last", UnitOutcome::Succeeded))
            .await
            .unwrap();
        store
            .complete_run(&running.run, Completion::new(Outcome::Succeeded))
            .await
            .unwrap();
        assert!(
            store
                .visible_backup_set(&vis, &running.set)
                .await
                .unwrap()
                .unwrap()
                .complete
        );
        let head = store.visible_backup_set(&vis, &done.set).await.unwrap().unwrap();
        assert_eq!(
            (head.tenant_id.as_str(), head.name.as_str()),
            (w.a.as_str(), "Backup")
        );
        assert_eq!(
            store
                .visible_backup_set_directory(&vis, &partial.set)
                .await
                .unwrap(),
            Some(None)
        );
    }
);

both_backends!(
    items_and_payloads_are_paged_to_the_end,
    |store: Store| async move {
        let w = world(&store).await;
        let n = 2 * ITEMS_PER_PAGE as usize + 34;
        let set = make_set(&store, &w.ws, &w.a, n, Ends::Succeeded, false).await.set;
        let vis = all(&w.ws);
        // Items: full pages, then the rest; each item once, in (type, id) order.
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut ids = BTreeSet::new();
        let mut cursor: Option<String> = None;
        let mut sizes = Vec::new();
        loop {
            let page = store
                .visible_backup_set_items(&vis, &set, cursor.as_deref())
                .await
                .unwrap();
            sizes.push(page.items.len());
            for i in &page.items {
                assert!(ids.insert(i.id.clone()), "{} twice", i.id);
                let expected = item(i.external_id[1..].parse().unwrap());
                assert_eq!(
                    (&i.policy_type, &i.display_name, &i.payload_sha256, &i.refs),
                    (
                        &expected.policy_type,
                        &expected.display_name,
                        &expected.content_sha256,
                        &expected.refs
                    )
                );
                assert!(i.restores.is_empty() && !i.restores_more);
                seen.push((i.policy_type.clone(), i.external_id.clone()));
            }
            match page.next_cursor {
                Some(c) => {
                    assert_eq!(Some(&c), page.items.last().map(|i| &i.id));
                    cursor = Some(c);
                }
                None => break,
            }
        }
        assert_eq!(sizes, [500, 500, 34]);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen.len(), n);
        // Each database orders text by its own collation; the keys here
        // (lower-case ASCII letters and digits) sort alike in both.
        assert_eq!(seen, sorted);
        // A cursor that is no item of the set: an empty page, not another set's items.
        let page = store
            .visible_backup_set_items(&vis, &set, Some("01900000-0000-7000-8000-000000000000"))
            .await
            .unwrap();
        assert!(page.items.is_empty() && page.next_cursor.is_none());
        // Payloads: pages of at most PAYLOADS_PER_PAGE, whole, in the same order.
        let mut after: Option<PayloadCursor> = None;
        let mut payloads = Vec::new();
        loop {
            let page = store
                .visible_backup_set_payloads(&vis, &set, after.as_ref(), 10_000)
                .await
                .unwrap();
            assert!(page.len() <= PAYLOADS_PER_PAGE as usize);
            let Some(last) = page.last() else { break };
            after = Some(last.cursor());
            for p in &page {
                let expected = item(p.external_id[1..].parse().unwrap());
                assert_eq!(p.payload, expected.payload);
                assert_eq!(p.payload_sha256, expected.content_sha256);
            }
            payloads.extend(page.into_iter().map(|p| (p.policy_type, p.external_id)));
        }
        assert_eq!(payloads, seen);
    }
);

both_backends!(
    restore_history_is_newest_first_capped_and_only_into_visible_tenants,
    |store: Store| async move {
        let w = world(&store).await;
        let made = make_set(&store, &w.ws, &w.a, 3, Ends::Succeeded, false).await;
        let other_set = make_set(&store, &w.ws, &w.b, 1, Ends::Succeeded, false).await;
        let vis = all(&w.ws);
        let items = store
            .visible_backup_set_items(&vis, &made.set, None)
            .await
            .unwrap()
            .items;
        let (x, y) = (&items[0].id, &items[1].id);
        let other_item = &store
            .visible_backup_set_items(&vis, &other_set.set, None)
            .await
            .unwrap()
            .items[0]
            .id;
        // Item x: restored into A twice, into B once (a dry run); item y: more than the cap.
        let t0 = 1_700_000_000_000;
        restore_row(
            &store, &made.run, "x1", &w.ws, &w.a, &made.set, x, "created", false, t0,
        )
        .await;
        restore_row(
            &store,
            &made.run,
            "x2",
            &w.ws,
            &w.b,
            &made.set,
            x,
            "unchanged",
            true,
            t0 + 10,
        )
        .await;
        restore_row(
            &store,
            &other_set.run,
            "x3",
            &w.ws,
            &w.a,
            &made.set,
            x,
            "updated",
            false,
            t0 + 20,
        )
        .await;
        let cap = RESTORES_PER_ITEM as i64;
        for k in 0..cap + 5 {
            let target = if k % 2 == 0 { &w.a } else { &w.b };
            restore_row(
                &store,
                &made.run,
                &format!("y{k:03}"),
                &w.ws,
                target,
                &made.set,
                y,
                "failed",
                false,
                t0 + k,
            )
            .await;
        }
        // Another set's item restored: not in this set's history.
        restore_row(
            &store,
            &other_set.run,
            "z",
            &w.ws,
            &w.a,
            &other_set.set,
            other_item,
            "created",
            false,
            t0,
        )
        .await;

        let page = store
            .visible_backup_set_items(&vis, &made.set, None)
            .await
            .unwrap();
        let hx = &page.items[0];
        let shown: Vec<(&str, &str, &str, bool, i64)> = hx
            .restores
            .iter()
            .map(|r| {
                (
                    r.run_id.as_str(),
                    r.target_tenant_id.as_str(),
                    r.result.as_str(),
                    r.dry_run,
                    r.recorded_at,
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (other_set.run.as_str(), w.a.as_str(), "updated", false, t0 + 20),
                (made.run.as_str(), w.b.as_str(), "unchanged", true, t0 + 10),
                (made.run.as_str(), w.a.as_str(), "created", false, t0),
            ]
        );
        assert_eq!(hx.restores[2].target_id.as_deref(), Some("target-of-x1"));
        assert!(!hx.restores_more);
        let hy = &page.items[1];
        assert_eq!(hy.restores.len(), RESTORES_PER_ITEM as usize);
        assert!(hy.restores_more);
        let times: Vec<i64> = hy.restores.iter().map(|r| r.recorded_at).collect();
        let newest: Vec<i64> = (0..cap + 5).rev().take(cap as usize).map(|k| t0 + k).collect();
        assert_eq!(times, newest);
        assert!(page.items[2].restores.is_empty());

        // A member restricted to A sees the set (its tenant) and only A's restores.
        let restricted = only(&w.ws, &[&w.a]);
        let page = store
            .visible_backup_set_items(&restricted, &made.set, None)
            .await
            .unwrap();
        let targets: BTreeSet<&str> = page
            .items
            .iter()
            .flat_map(|i| i.restores.iter().map(|r| r.target_tenant_id.as_str()))
            .collect();
        assert_eq!(targets, BTreeSet::from([w.a.as_str()]));
        assert_eq!(page.items[0].restores.len(), 2);
        // y: 13 of its 25 restores went to A, all shown; the others are not counted as "more".
        assert_eq!(page.items[1].restores.len(), 13);
        assert!(!page.items[1].restores_more);
        // Restricted to B: the set (of A) is not theirs at all.
        let page = store
            .visible_backup_set_items(&only(&w.ws, &[&w.b]), &made.set, None)
            .await
            .unwrap();
        assert!(page.items.is_empty());
    }
);
