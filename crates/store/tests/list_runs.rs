//! Listing runs (`Store::list_runs`) and reading one (`Store::visible_run`)
//! under a visibility, on SQLite and PostgreSQL.
//!
//! The listing is checked against a reference computed here from what was
//! seeded: every filter alone and combined, under every kind of visibility,
//! paged to the end, returns exactly the matching runs, newest first, each
//! once, including when pages come back short from a bounded walk.

mod common;

use common::{new_run, scope};
use opsledger_core::{Failure, Outcome, RunStatus, RunType, UnitOutcome};
use opsledger_store::runs::{FAILURES_PER_RUN, LIST_SCAN_BUDGET};
use opsledger_store::testing::{SeedRuns, seed_run_id, seed_runs};
use opsledger_store::{RunFilter, Store, UnitRecord, Visibility, both_backends, raw_on_pool};
use serde_json::json;

const T0: i64 = 1_700_000_000_000;

// The sparse-combination test needs more candidates than one walk examines.
const _: () = assert!(LIST_SCAN_BUDGET < 1500);

fn all(workspace_id: &str) -> Visibility {
    Visibility {
        workspace_id: workspace_id.to_owned(),
        tenants: None,
    }
}

fn only(workspace_id: &str, tenants: &[&str]) -> Visibility {
    Visibility {
        workspace_id: workspace_id.to_owned(),
        tenants: Some(tenants.iter().map(|t| t.to_string()).collect()),
    }
}

/// A seeded run, as the reference sees it.
struct Seeded {
    id: String,
    workspace_id: String,
    tenant_id: Option<String>,
    run_type: RunType,
    status: RunStatus,
    outcome: Outcome,
    created_at: i64,
}

/// Two workspaces' histories: `ws` has tenants A, B, C and workspace-level
/// runs (3 880 runs), `other` has tenant D (200 runs).
struct History {
    ws: String,
    other: String,
    a: String,
    b: String,
    c: String,
    d: String,
    runs: Vec<Seeded>,
}

async fn history(store: &Store) -> History {
    let ws = store.create_workspace("ws").await.unwrap().id;
    let other = store.create_workspace("other").await.unwrap().id;
    let tenant = |w: String, name: &'static str| async move {
        store.create_tenant(&w, name, "demo:healthy").await.unwrap().id
    };
    let (a, b, c) = (
        tenant(ws.clone(), "a").await,
        tenant(ws.clone(), "b").await,
        tenant(ws.clone(), "c").await,
    );
    let d = tenant(other.clone(), "d").await;
    use Outcome::*;
    use RunStatus::*;
    use RunType::*;
    #[rustfmt::skip]
    let spec = [
        // block, workspace, tenant, type, status, outcome, count, first at, every (ms)
        (1, ws.as_str(), Some(a.as_str()), InventorySync, Completed, Succeeded, 1500, T0, 8),
        (2, &ws, Some(&b), InventorySync, Completed, Succeeded, 1500, T0 + 3, 8),
        (3, &ws, Some(&c), BackupSetAddPolicies, Completed, Failed, 500, T0 + 5, 24),
        // Rare: 20 blocked policy syncs of A over the whole history.
        (4, &ws, Some(&a), PolicySync, Completed, Blocked, 20, T0 + 1, 600),
        (5, &ws, None, WorkspaceInventorySyncAll, Completed, Succeeded, 300, T0 + 7, 40),
        (6, &ws, Some(&b), PolicySync, Running, Pending, 30, T0 + 2, 400),
        (7, &ws, Some(&c), InventorySync, Queued, Pending, 30, T0 + 6, 400),
        (8, &other, Some(&d), InventorySync, Completed, Succeeded, 200, T0 + 4, 60),
    ];
    let blocks: Vec<SeedRuns> = spec
        .iter()
        .map(
            |&(block, w, t, run_type, status, outcome, count, at, every_ms)| SeedRuns {
                block,
                count,
                workspace_id: w,
                tenant_id: t,
                run_type,
                status,
                outcome,
                at,
                every_ms,
                context: json!({}),
            },
        )
        .collect();
    seed_runs(store, &blocks).await.unwrap();
    let runs = blocks
        .iter()
        .flat_map(|b| {
            (0..b.count).map(move |i| Seeded {
                id: b.id(i),
                workspace_id: b.workspace_id.to_owned(),
                tenant_id: b.tenant_id.map(str::to_owned),
                run_type: b.run_type,
                status: b.status,
                outcome: b.outcome,
                created_at: b.at + i as i64 * b.every_ms,
            })
        })
        .collect();
    History {
        ws,
        other,
        a,
        b,
        c,
        d,
        runs,
    }
}

/// The ids `vis` and `f` select, newest first, computed from the seed.
fn expected(h: &History, vis: &Visibility, f: &RunFilter) -> Vec<String> {
    let mut ids: Vec<String> = h
        .runs
        .iter()
        .filter(|r| r.workspace_id == vis.workspace_id)
        .filter(|r| match &vis.tenants {
            None => true,
            Some(ts) => r.tenant_id.as_ref().is_some_and(|t| ts.contains(t)),
        })
        .filter(|r| f.tenant_id.is_none() || r.tenant_id == f.tenant_id)
        .filter(|r| f.run_type.is_none_or(|t| r.run_type == t))
        .filter(|r| f.status.is_none_or(|s| r.status == s))
        .filter(|r| f.outcome.is_none_or(|o| r.outcome == o))
        .filter(|r| f.created_after.is_none_or(|t| r.created_at >= t))
        .filter(|r| f.created_before.is_none_or(|t| r.created_at < t))
        .map(|r| r.id.clone())
        .collect();
    ids.sort_unstable_by(|x, y| y.cmp(x));
    ids
}

/// Pages to the end: the ids of every page in order, and each page's size.
async fn page_through(store: &Store, vis: &Visibility, f: &RunFilter) -> (Vec<String>, Vec<usize>) {
    let mut f = f.clone();
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let (runs, next) = store.list_runs(vis, &f).await.unwrap();
        assert!(runs.len() <= f.limit as usize, "{f:?}: page over the limit");
        if let Some(cursor) = &f.cursor {
            assert!(
                runs.iter().all(|r| &r.id < cursor),
                "{f:?}: a run not below the cursor"
            );
        }
        sizes.push(runs.len());
        ids.extend(runs.into_iter().map(|r| r.id));
        match next {
            None => return (ids, sizes),
            Some(next) => {
                assert!(
                    f.cursor.as_ref().is_none_or(|c| &next < c),
                    "{f:?}: the cursor went back"
                );
                f.cursor = Some(next);
            }
        }
    }
    panic!("{f:?}: paging did not end");
}

both_backends!(
    every_filter_alone_and_combined_pages_through_exactly_the_matches,
    |store: Store| async move {
        let h = history(&store).await;
        let visibilities = [
            all(&h.ws),
            only(&h.ws, &[&h.a]),
            // Two tenants: one index range each, merged.
            only(&h.ws, &[&h.a, &h.b]),
            // More tenants than are walked as ranges (one of another workspace,
            // one that does not exist): checked on the workspace's rows.
            only(&h.ws, &[&h.a, &h.b, &h.c, &h.d, "no-such-tenant"]),
            // The other workspace sees only its own.
            all(&h.other),
        ];
        let tenants = [None, Some(h.a.clone()), Some(h.c.clone()), Some(h.d.clone())];
        let types = [None, Some(RunType::InventorySync), Some(RunType::PolicySync)];
        let states = [
            (None, None),
            (Some(RunStatus::Running), None),
            (Some(RunStatus::Queued), None),
            (Some(RunStatus::Completed), None),
            (None, Some(Outcome::Blocked)),
            (None, Some(Outcome::Succeeded)),
            (None, Some(Outcome::Pending)),
            (Some(RunStatus::Completed), Some(Outcome::Failed)),
            (Some(RunStatus::Running), Some(Outcome::Pending)),
            // Contradictions match nothing.
            (Some(RunStatus::Queued), Some(Outcome::Succeeded)),
            (Some(RunStatus::Completed), Some(Outcome::Pending)),
        ];
        let windows = [
            (None, None),
            (Some(T0 + 4000), Some(T0 + 8000)),
            (Some(T0 + 11_000), None),
        ];
        let mut cases = 0;
        for vis in &visibilities {
            for tenant_id in &tenants {
                for run_type in types {
                    for (status, outcome) in states {
                        for (created_after, created_before) in windows {
                            let f = RunFilter {
                                tenant_id: tenant_id.clone(),
                                run_type,
                                status,
                                outcome,
                                created_after,
                                created_before,
                                cursor: None,
                                limit: [7, 50, 500][cases % 3],
                            };
                            let want = expected(&h, vis, &f);
                            let f = RunFilter {
                                limit: if want.len() > 1000 { 500 } else { f.limit },
                                ..f
                            };
                            let (got, sizes) = page_through(&store, vis, &f).await;
                            assert_eq!(got, want, "{vis:?} {f:?}: pages {sizes:?}");
                            let filters = [
                                f.tenant_id.is_some(),
                                run_type.is_some(),
                                status.is_some(),
                                outcome.is_some(),
                            ];
                            if vis.tenants.is_none() && filters.iter().filter(|x| **x).count() <= 1 {
                                // One filter reads through its index: full pages.
                                let (_, before_last) = sizes.split_last().unwrap();
                                assert!(
                                    before_last.iter().all(|n| *n == f.limit as usize),
                                    "{f:?}: short pages {sizes:?}"
                                );
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 5 * 4 * 3 * 11 * 3);
    }
);

both_backends!(
    a_sparse_combination_pages_short_where_the_walk_stopped,
    |store: Store| async move {
        let h = history(&store).await;
        // A's runs (1 520) are walked; its 20 blocked policy syncs are spread
        // over all of them: the first page stops after LIST_SCAN_BUDGET runs.
        let f = RunFilter {
            tenant_id: Some(h.a.clone()),
            run_type: Some(RunType::PolicySync),
            limit: 50,
            ..Default::default()
        };
        let (first, next) = store.list_runs(&all(&h.ws), &f).await.unwrap();
        assert!(!first.is_empty() && first.len() < 20, "{} runs", first.len());
        let cursor = next.expect("the walk stopped before the end: a cursor");
        assert!(first.iter().all(|r| r.id > cursor));
        let (rest, next) = store
            .list_runs(
                &all(&h.ws),
                &RunFilter {
                    cursor: Some(cursor.clone()),
                    ..f.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(next, None);
        assert_eq!(first.len() + rest.len(), 20);
        // A cursor in capitals is the same cursor.
        let shouted = RunFilter {
            cursor: Some(cursor.to_uppercase()),
            ..f.clone()
        };
        let (again, _) = store.list_runs(&all(&h.ws), &shouted).await.unwrap();
        assert_eq!(again, rest);

        // Nothing matches: an empty page that still moves on, then the end.
        let f = RunFilter {
            tenant_id: Some(h.b.clone()),
            run_type: Some(RunType::BackupSetAddPolicies),
            limit: 50,
            ..Default::default()
        };
        let (page, next) = store.list_runs(&all(&h.ws), &f).await.unwrap();
        assert!(page.is_empty());
        let cursor = next.expect("a cursor past the walked runs");
        let (page, next) = store
            .list_runs(
                &all(&h.ws),
                &RunFilter {
                    cursor: Some(cursor),
                    ..f
                },
            )
            .await
            .unwrap();
        assert!(page.is_empty());
        assert_eq!(next, None);
    }
);

both_backends!(
    visibility_hides_other_tenants_and_workspace_level_runs,
    |store: Store| async move {
        let h = history(&store).await;
        let f = RunFilter {
            limit: 500,
            ..Default::default()
        };
        let (runs, _) = page_through(&store, &only(&h.ws, &[&h.a, &h.c]), &f).await;
        assert_eq!(runs.len(), 1500 + 20 + 500 + 30);
        let (page, _) = store.list_runs(&only(&h.ws, &[&h.a, &h.c]), &f).await.unwrap();
        assert!(
            page.iter()
                .all(|r| r.tenant_id == Some(h.a.clone()) || r.tenant_id == Some(h.c.clone()))
        );
        // A hidden tenant asked for by name: nothing, not an error.
        let hidden = RunFilter {
            tenant_id: Some(h.b.clone()),
            ..f.clone()
        };
        assert_eq!(
            store.list_runs(&only(&h.ws, &[&h.a]), &hidden).await.unwrap(),
            (Vec::new(), None)
        );
        // A tenant of another workspace, even when "visible": not in this workspace.
        let foreign = RunFilter {
            tenant_id: Some(h.d.clone()),
            ..f
        };
        assert!(store.list_runs(&all(&h.ws), &foreign).await.unwrap().0.is_empty());
        assert!(
            store
                .list_runs(&only(&h.ws, &[&h.d]), &foreign)
                .await
                .unwrap()
                .0
                .is_empty()
        );
    }
);

both_backends!(a_run_id_carries_its_creation_time, |store: Store| async move {
    let s = scope(&store).await;
    let run = store
        .create_run(new_run(&s, RunType::InventorySync))
        .await
        .unwrap()
        .into_run();
    let id = uuid::Uuid::parse_str(&run.id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
    assert_eq!(secs as i64 * 1000 + i64::from(nanos / 1_000_000), run.created_at);
    // So the time window, applied as an id range, is exact at the millisecond.
    let list = |after: Option<i64>, before: Option<i64>| {
        let store = store.clone();
        let ws = s.workspace_id.clone();
        async move {
            let f = RunFilter {
                created_after: after,
                created_before: before,
                limit: 10,
                ..Default::default()
            };
            store.list_runs(&all(&ws), &f).await.unwrap().0.len()
        }
    };
    assert_eq!(list(Some(run.created_at), None).await, 1);
    assert_eq!(list(Some(run.created_at + 1), None).await, 0);
    assert_eq!(list(None, Some(run.created_at + 1)).await, 1);
    assert_eq!(list(None, Some(run.created_at)).await, 0);
    // Times outside what an id can hold bound nothing wrongly.
    assert_eq!(list(Some(-5), Some(i64::MAX)).await, 1);
    assert_eq!(list(Some(i64::MAX), None).await, 0);
    assert_eq!(list(None, Some(i64::MIN)).await, 0);
    // The seeded ids of benchmarks follow the same layout.
    assert_eq!(
        seed_run_id(3, 0x0123_4567_89ab, 42),
        "01234567-89ab-7003-8000-00000000002a"
    );
});

both_backends!(
    a_listed_run_carries_its_first_failures,
    |store: Store| async move {
        let s = scope(&store).await;
        let many = common::running_run(&store, &s, 150).await;
        let units: Vec<UnitRecord> = (0..150)
            .map(|i| UnitRecord {
                failure: Some(Failure::new("throttled", format!("unit {i:03}"))),
                ..UnitRecord::new(format!("u{i:03}"), UnitOutcome::Failed)
            })
            .collect();
        store.record_units(&many, &units).await.unwrap();
        let few = common::queued_run(&store, &s, RunType::PolicySync).await;
        store.claim_run(&few).await.unwrap();
        store.init_total(&few, 2).await.unwrap();
        store
            .record_units(
                &few,
                &[UnitRecord {
                    failure: Some(Failure::new("forbidden", "no access")),
                    ..UnitRecord::new("x", UnitOutcome::Failed)
                }],
            )
            .await
            .unwrap();
        let none = common::queued_run(&store, &s, RunType::ReviewPackGenerate).await;

        let (runs, _) = store
            .list_runs(
                &all(&s.workspace_id),
                &RunFilter {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [none.as_str(), few.as_str(), many.as_str()]);
        assert!(runs[0].failures.is_empty());
        assert_eq!(runs[1].failures.len(), 1);
        assert_eq!(runs[1].failures[0].code, "forbidden");
        let messages: Vec<String> = runs[2].failures.iter().map(|f| f.message.clone()).collect();
        let first: Vec<String> = (0..FAILURES_PER_RUN).map(|i| format!("unit {i:03}")).collect();
        assert_eq!(messages, first);
        let shown = store
            .visible_run(&all(&s.workspace_id), &many)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shown.failures, runs[2].failures);
    }
);

both_backends!(
    a_foreign_run_and_a_random_id_read_alike,
    |store: Store| async move {
        let s = scope(&store).await;
        let mine = common::queued_run(&store, &s, RunType::InventorySync).await;
        let other = scope(&store).await;
        let foreign = common::queued_run(&store, &other, RunType::InventorySync).await;
        let random = uuid::Uuid::now_v7().to_string();
        let ws = all(&s.workspace_id);
        assert!(store.visible_run(&ws, &foreign).await.unwrap().is_none());
        assert!(store.visible_run(&ws, &random).await.unwrap().is_none());
        assert_eq!(store.visible_run(&ws, &mine).await.unwrap().unwrap().id, mine);
        // A tenant outside the caller's restriction reads as absent too.
        let elsewhere = only(&s.workspace_id, &["another-tenant"]);
        assert!(store.visible_run(&elsewhere, &mine).await.unwrap().is_none());
        assert!(
            store
                .visible_run(&only(&s.workspace_id, &[&s.tenant_id]), &mine)
                .await
                .unwrap()
                .is_some()
        );

        // Structurally: the keyed read decides before anything else is read.
        // With the failures table gone, a foreign id and a random id still
        // answer `None` (the keyed read found nothing, so nothing more was
        // read), while a visible run, whose failures must be read, cannot load.
        raw_on_pool!(&store, pool => {
            sqlx::query("ALTER TABLE run_failures RENAME TO run_failures_hidden")
                .execute(pool)
                .await
                .unwrap();
        });
        assert!(store.visible_run(&ws, &foreign).await.unwrap().is_none());
        assert!(store.visible_run(&ws, &random).await.unwrap().is_none());
        assert!(store.visible_run(&ws, &mine).await.is_err());
    }
);

both_backends!(
    a_huge_context_is_omitted_from_list_items_not_from_the_run,
    |store: Store| async move {
        let s = scope(&store).await;
        let ids: Vec<String> = (0..2000)
            .map(|i| format!("deviceConfigurations/p{i:06}"))
            .collect();
        let mut big = new_run(&s, RunType::BackupSetAddPolicies);
        big.context = json!({"params": {"policy_ids": ids}});
        let big = store.create_run(big).await.unwrap().into_run();
        let small = store
            .create_run(new_run(&s, RunType::InventorySync))
            .await
            .unwrap()
            .into_run();
        let filter = RunFilter {
            limit: 50,
            ..Default::default()
        };
        let (listed, _) = store.list_runs(&all(&s.workspace_id), &filter).await.unwrap();
        let of = |id: &str| listed.iter().find(|r| r.id == id).unwrap();
        let size = big.context.to_string().chars().count();
        assert!(size > opsledger_store::LIST_CONTEXT_MAX_CHARS);
        let omitted = &of(&big.id).context["omitted"];
        assert_eq!(omitted["characters"], json!(size), "{omitted}");
        assert!(of(&big.id).context.get("params").is_none());
        assert_eq!(
            of(&small.id).context,
            small.context,
            "a small context is listed whole"
        );
        let whole = store
            .visible_run(&all(&s.workspace_id), &big.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(whole.context, big.context, "the run itself has it whole");
    }
);
