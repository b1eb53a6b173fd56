//! Listing runs at a million rows: every filter of
//! `GET /api/v1/workspaces/{ws}/operations`, through the real router
//! in-process (bearer token, access check, store, rendering), on SQLite and
//! PostgreSQL. The goal is < 5 ms p95 for every case.
//!
//! The history: 1 000 000 runs in one workspace over 90 days, 8 tenants, 4
//! tenant types and 1 % workspace-level runs; nearly all completed and
//! succeeded, 5 000 failed and 3 000 blocked spread over the whole history,
//! 2 000 running (last 2 hours) and 1 000 queued (last 30 minutes). Each
//! case is asked ~200 times (after 5 unmeasured requests), one at a time;
//! "paging on" cases follow `next_cursor` from request to request; "member
//! restricted to 2 tenants" cases are asked by a viewer who sees 2 of the 8
//! tenants. The last `limit=500` cases split a big page's time: the store's
//! `list_runs` alone, and with the page's JSON but no HTTP.
//!
//! ```text
//! cargo bench -p opsledger-server --bench list_runs
//! OPSLEDGER_BENCH_SCALE=0.1 cargo bench -p opsledger-server --bench list_runs   # quick
//! ```
//!
//! Without `--bench` (e.g. `cargo test --benches`) the default scale is
//! 0.01. `OPSLEDGER_BENCH_CASES=TEXT` runs only the cases whose name
//! contains `TEXT`.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use opsledger_core::access::Role;
use opsledger_core::{Outcome, RunStatus, RunType};
use opsledger_server::AppState;
use opsledger_store::testing::{self, SeedRuns, TestStore};
use opsledger_store::{RunFilter, Store, Visibility, now_ms};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const HISTORY: u64 = 1_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const SPAN: i64 = 90 * DAY;
const TENANTS: usize = 8;
const TYPES: [RunType; 4] = [
    RunType::InventorySync,
    RunType::PolicySync,
    RunType::BackupSetAddPolicies,
    RunType::ReviewPackGenerate,
];
const GOAL_MS: f64 = 5.0;
/// The tenants (by index) the restricted member sees.
const RESTRICTED_TO: [usize; 2] = [1, 5];

struct Seeded {
    ws: String,
    tenants: Vec<String>,
    /// A run deep in the history (90 % of the way back), as a cursor.
    deep_id: String,
    /// A run of another workspace.
    foreign_id: String,
    start: i64,
    end: i64,
}

async fn seed(store: &Store, scale: f64) -> (u64, Seeded) {
    let n = |v: u64| ((v as f64 * scale).round() as u64).max(8);
    let (total, blocked, failed, running, queued, workspace_level) =
        (n(HISTORY), n(3_000), n(5_000), n(2_000), n(1_000), n(10_000));
    let main = total - blocked - failed - running - queued - workspace_level;
    let ws = store.create_workspace("bench").await.expect("workspace").id;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let t = store
            .create_tenant(&ws, &format!("tenant-{i}"), "demo:healthy")
            .await
            .expect("tenant");
        tenants.push(t.id);
    }
    let other = store.create_workspace("other").await.expect("workspace").id;
    let other_tenant = store
        .create_tenant(&other, "elsewhere", "demo:healthy")
        .await
        .expect("tenant")
        .id;
    let end = now_ms() - MINUTE;
    let start = end - SPAN;
    let context = json!({"params": {"policy_types": ["deviceConfigurations", "compliancePolicies"]}});
    let block = |block: u16, tenant: Option<&str>, run_type, status, outcome, count: u64, at, every_ms| {
        (
            block,
            tenant.map(str::to_owned),
            run_type,
            status,
            outcome,
            count,
            at,
            every_ms,
        )
    };
    let mut spec = Vec::new();
    // Completed and succeeded, every (tenant, type) interleaved over the span.
    let pairs = (TENANTS * TYPES.len()) as u64;
    let per = main / pairs;
    let step = SPAN / main as i64;
    for (k, (t, run_type)) in tenants
        .iter()
        .flat_map(|t| TYPES.iter().map(move |ty| (t, *ty)))
        .enumerate()
    {
        let count = if k == 0 { main - per * (pairs - 1) } else { per };
        let every = step * pairs as i64;
        spec.push(block(
            1 + k as u16,
            Some(t),
            run_type,
            RunStatus::Completed,
            Outcome::Succeeded,
            count,
            start + k as i64 * step,
            every,
        ));
    }
    // The rarer states, per tenant.
    let spread = |count: u64, over: i64, i: usize| {
        let every = (over / count.max(1) as i64).max(1);
        (every, i as i64 * every / TENANTS as i64)
    };
    for (i, t) in tenants.iter().enumerate() {
        let share = |c: u64| c / TENANTS as u64 + u64::from(i == 0) * (c % TENANTS as u64);
        let (c, ty) = (share(blocked), TYPES[i % 2]);
        let (every, off) = spread(c, SPAN, i);
        spec.push(block(
            100 + i as u16,
            Some(t),
            ty,
            RunStatus::Completed,
            Outcome::Blocked,
            c,
            start + off,
            every,
        ));
        let (c, ty) = (share(failed), TYPES[(i + 1) % 4]);
        let (every, off) = spread(c, SPAN, i);
        spec.push(block(
            200 + i as u16,
            Some(t),
            ty,
            RunStatus::Completed,
            Outcome::Failed,
            c,
            start + off,
            every,
        ));
        let (c, ty) = (share(running), TYPES[i % 2]);
        let (every, off) = spread(c, 2 * HOUR, i);
        spec.push(block(
            300 + i as u16,
            Some(t),
            ty,
            RunStatus::Running,
            Outcome::Pending,
            c,
            end - 2 * HOUR + off,
            every,
        ));
        let (c, ty) = (share(queued), TYPES[i % 2]);
        let (every, off) = spread(c, 30 * MINUTE, i);
        spec.push(block(
            400 + i as u16,
            Some(t),
            ty,
            RunStatus::Queued,
            Outcome::Pending,
            c,
            end - 30 * MINUTE + off,
            every,
        ));
    }
    let (every, _) = spread(workspace_level, SPAN, 0);
    spec.push(block(
        500,
        None,
        RunType::WorkspaceInventorySyncAll,
        RunStatus::Completed,
        Outcome::Succeeded,
        workspace_level,
        start + 3,
        every,
    ));
    let blocks: Vec<SeedRuns> = spec
        .iter()
        .map(
            |(block, tenant, run_type, status, outcome, count, at, every_ms)| SeedRuns {
                block: *block,
                count: *count,
                workspace_id: &ws,
                tenant_id: tenant.as_deref(),
                run_type: *run_type,
                status: *status,
                outcome: *outcome,
                at: *at,
                every_ms: *every_ms,
                context: context.clone(),
            },
        )
        .collect();
    let started = Instant::now();
    testing::seed_runs(store, &blocks).await.expect("seed");
    let foreign = SeedRuns {
        block: 600,
        count: 1,
        workspace_id: &other,
        tenant_id: Some(&other_tenant),
        run_type: RunType::InventorySync,
        status: RunStatus::Completed,
        outcome: Outcome::Succeeded,
        at: end - DAY,
        every_ms: 0,
        context: json!({}),
    };
    testing::seed_runs(store, std::slice::from_ref(&foreign))
        .await
        .expect("seed");
    eprintln!(
        "{}: seeded {total} runs in {:.1}s",
        store.backend_name(),
        started.elapsed().as_secs_f64()
    );
    let seeded = Seeded {
        deep_id: blocks[0].id(blocks[0].count / 10),
        foreign_id: foreign.id(0),
        ws: ws.clone(),
        tenants,
        start,
        end,
    };
    (total, seeded)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What one case asks.
enum Ask {
    /// `GET` through the router.
    Get(String),
    /// `GET` through the router, each request with the `next_cursor` of the
    /// one before (from the start again after the last page): a client
    /// paging through the history, never asking for the same page twice in
    /// a row.
    Paging(String),
    /// `GET` through the router by a member restricted to two tenants
    /// ([`RESTRICTED_TO`]); every item is checked to be theirs.
    Restricted(String),
    /// [`Store::list_runs`] and the page's JSON, without HTTP.
    Store(Visibility, RunFilter),
    /// [`Store::list_runs`] alone: the store's share of a page.
    StoreOnly(Visibility, RunFilter),
}

struct Row {
    case: String,
    p50: f64,
    p95: f64,
    max: f64,
    items: usize,
    next: bool,
}

fn cases(s: &Seeded) -> Vec<(String, Ask)> {
    let ops = format!("/api/v1/workspaces/{}/operations", s.ws);
    let get = |name: &str, query: String| {
        let path = if query.is_empty() {
            ops.clone()
        } else {
            format!("{ops}?{query}")
        };
        (name.to_owned(), Ask::Get(path))
    };
    let t3 = &s.tenants[3];
    let mid = s.start + SPAN / 2;
    vec![
        get("no filter", String::new()),
        get("status=running", "status=running".into()),
        get("status=queued", "status=queued".into()),
        get("status=completed", "status=completed".into()),
        get("outcome=blocked", "outcome=blocked".into()),
        get("outcome=failed", "outcome=failed".into()),
        get("type=policy.sync", "type=policy.sync".into()),
        get("tenant_id=T3", format!("tenant_id={t3}")),
        get(
            "outcome=blocked&type=policy.sync",
            "outcome=blocked&type=policy.sync".into(),
        ),
        get(
            "status=running&tenant_id=T3",
            format!("status=running&tenant_id={t3}"),
        ),
        get(
            "tenant_id=T3&type=policy.sync",
            format!("tenant_id={t3}&type=policy.sync"),
        ),
        get(
            "outcome=failed&tenant_id=T3&type=review_pack (sparse)",
            format!("outcome=failed&tenant_id={t3}&type=review_pack.generate"),
        ),
        (
            "paging on: no filter".into(),
            Ask::Paging(format!("{ops}?limit=50")),
        ),
        (
            "paging on: tenant_id=T3&type=policy.sync".into(),
            Ask::Paging(format!("{ops}?tenant_id={t3}&type=policy.sync")),
        ),
        (
            "paging on: outcome=failed&tenant_id=T3&type=review_pack (sparse)".into(),
            Ask::Paging(format!(
                "{ops}?outcome=failed&tenant_id={t3}&type=review_pack.generate"
            )),
        ),
        get(
            "created 1 day, mid-history",
            format!(
                "created_after={}&created_before={}",
                rfc3339(mid),
                rfc3339(mid + DAY)
            ),
        ),
        get(
            "created_after=1 h ago",
            format!("created_after={}", rfc3339(s.end - HOUR)),
        ),
        get(
            "created 1 day & type=policy.sync",
            format!(
                "created_after={}&created_before={}&type=policy.sync",
                rfc3339(mid),
                rfc3339(mid + DAY)
            ),
        ),
        get("cursor 90 % deep", format!("cursor={}", s.deep_id)),
        get(
            "cursor 90 % deep&outcome=blocked",
            format!("cursor={}&outcome=blocked", s.deep_id),
        ),
        get("type matching nothing", "type=baseline.compare".into()),
        get(
            "status=queued&type=backup_set (nothing)",
            "status=queued&type=backup_set.add_policies".into(),
        ),
        get("limit=500", "limit=500".into()),
        get("limit=500&tenant_id=T3", format!("limit=500&tenant_id={t3}")),
        (
            "member restricted to 2 tenants".into(),
            Ask::Restricted(ops.clone()),
        ),
        (
            "member restricted to 2 tenants&type=policy.sync".into(),
            Ask::Restricted(format!("{ops}?type=policy.sync")),
        ),
        (
            "member restricted to 2 tenants&status=running".into(),
            Ask::Restricted(format!("{ops}?status=running")),
        ),
        (
            "limit=500 (store + JSON, no HTTP)".into(),
            Ask::Store(
                Visibility {
                    workspace_id: s.ws.clone(),
                    tenants: None,
                },
                RunFilter {
                    limit: 500,
                    ..Default::default()
                },
            ),
        ),
        (
            "limit=500 (Store::list_runs only)".into(),
            Ask::StoreOnly(
                Visibility {
                    workspace_id: s.ws.clone(),
                    tenants: None,
                },
                RunFilter {
                    limit: 500,
                    ..Default::default()
                },
            ),
        ),
        (
            "show: run of another workspace (404)".into(),
            Ask::Get(format!("{ops}/{}", s.foreign_id)),
        ),
        (
            "show: random id (404)".into(),
            Ask::Get(format!("{ops}/{}", uuid_like(s.end))),
        ),
    ]
}

/// An id shaped like a run's that no run has.
fn uuid_like(ms: i64) -> String {
    testing::seed_run_id(4095, ms, 0xabcdef)
}

/// The bearer tokens of the two members asking.
struct Callers {
    /// A viewer who sees the whole workspace.
    member: String,
    /// A viewer restricted to the tenants `visible`.
    restricted: String,
    visible: Vec<String>,
}

/// One request (after `cursor`, for a paging case); its time, and the
/// items and cursor of its answer.
async fn ask(
    app: &Router,
    store: &Store,
    callers: &Callers,
    ask: &Ask,
    cursor: Option<&str>,
) -> (Duration, usize, Option<String>) {
    match ask {
        Ask::Get(path) | Ask::Paging(path) | Ask::Restricted(path) => {
            let token = match ask {
                Ask::Restricted(_) => &callers.restricted,
                _ => &callers.member,
            };
            let path = match cursor {
                Some(c) => format!("{path}&cursor={c}"),
                None => path.clone(),
            };
            let req = Request::get(path.as_str())
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request");
            let started = Instant::now();
            let resp = app.clone().oneshot(req).await.expect("response");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            let took = started.elapsed();
            if status == StatusCode::NOT_FOUND {
                return (took, 0, None);
            }
            assert_eq!(
                status,
                StatusCode::OK,
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
            let v: Value = serde_json::from_slice(&body).expect("json");
            let items = v["items"].as_array().expect("items");
            if matches!(ask, Ask::Restricted(_)) {
                assert!(
                    items
                        .iter()
                        .all(|r| callers.visible.iter().any(|t| r["tenant_id"] == *t)),
                    "{path}: a run outside the member's tenants"
                );
            }
            let next = v["next_cursor"].as_str().map(str::to_owned);
            (took, items.len(), next)
        }
        Ask::Store(vis, filter) => {
            let started = Instant::now();
            let (runs, next) = store.list_runs(vis, filter).await.expect("list");
            let body = serde_json::to_vec(
                &runs
                    .iter()
                    .map(|r| opsledger_server::render::run_json(r, &[]))
                    .collect::<Vec<_>>(),
            )
            .expect("json");
            let took = started.elapsed();
            assert!(!body.is_empty());
            (took, runs.len(), next)
        }
        Ask::StoreOnly(vis, filter) => {
            let started = Instant::now();
            let (runs, next) = store.list_runs(vis, filter).await.expect("list");
            (started.elapsed(), runs.len(), next)
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn bench_backend(db: TestStore, scale: f64) -> (u64, Vec<Row>) {
    let store = db.store.clone();
    let (total, seeded) = seed(&store, scale).await;
    let user = store.upsert_user("viewer@bench.test", "x").await.expect("user");
    store
        .set_membership(&seeded.ws, &user, Role::Viewer)
        .await
        .expect("membership");
    let visible: Vec<String> = RESTRICTED_TO.iter().map(|i| seeded.tenants[*i].clone()).collect();
    let restricted = store
        .upsert_user("restricted@bench.test", "x")
        .await
        .expect("user");
    store
        .add_member(&seeded.ws, &restricted, Role::Viewer, &visible)
        .await
        .expect("restricted membership");
    let callers = Callers {
        member: store.issue_token(&user, "bench").await.expect("token"),
        restricted: store.issue_token(&restricted, "bench").await.expect("token"),
        visible,
    };
    let app = opsledger_server::router(AppState {
        files: None,
        evidence_key: None,
        store: store.clone(),
        registry: opsledger_families::registry(Default::default()),
        wake: Arc::new(tokio::sync::Notify::new()),
        providers: Default::default(),
    });
    let reps = ((200.0 * scale).round() as usize).clamp(10, 200);
    let only = std::env::var("OPSLEDGER_BENCH_CASES").unwrap_or_default();
    let mut rows = Vec::new();
    for (case, what) in cases(&seeded) {
        if !case.contains(only.as_str()) {
            continue;
        }
        let paging = matches!(what, Ask::Paging(_));
        let mut cursor = None;
        let mut times = Vec::with_capacity(reps);
        let (mut items, mut next) = (0, false);
        // 5 unmeasured requests first.
        for i in 0..reps + 5 {
            let (took, n, more) = ask(&app, &store, &callers, &what, cursor.as_deref()).await;
            if paging {
                cursor = more.clone();
            }
            if i >= 5 {
                times.push(took);
                (items, next) = (n, more.is_some());
            }
        }
        times.sort();
        let at = |q: f64| ms(times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1]);
        eprintln!("{} {case}: p95 {:.2} ms", store.backend_name(), at(0.95));
        rows.push(Row {
            case,
            p50: at(0.5),
            p95: at(0.95),
            max: ms(*times.last().expect("times")),
            items,
            next,
        });
    }
    db.drop_now().await;
    (total, rows)
}

// One request at a time on one thread: the time measured is the request's
// own work, not thread handoffs of a multi-thread runtime on a 2-core
// machine that also runs PostgreSQL.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let scale = testing::bench_scale();
    eprintln!("list runs benchmark: scale {scale}");
    let (total, sqlite) = bench_backend(testing::sqlite().await, scale).await;
    let postgres = match testing::postgres().await {
        Some(db) => Some(bench_backend(db, scale).await.1),
        None => None,
    };
    let cell = |r: &Row| {
        let over = if r.p95 >= GOAL_MS { " **over**" } else { "" };
        format!(
            "{:.2} | {:.2}{over} | {:.2} | {} | {}",
            r.p50,
            r.p95,
            r.max,
            r.items,
            if r.next { "yes" } else { "no" }
        )
    };
    println!();
    println!("{total} runs; milliseconds per request, server-side, in-process");
    println!();
    println!("| case | sqlite p50 | p95 | max | items | next | postgres p50 | p95 | max | items | next |");
    println!("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|");
    for (i, r) in sqlite.iter().enumerate() {
        let pg = match &postgres {
            Some(rows) => cell(&rows[i]),
            None => "SKIPPED (unreachable) | | | |".into(),
        };
        println!("| {} | {} | {pg} |", r.case, cell(r));
    }
}
