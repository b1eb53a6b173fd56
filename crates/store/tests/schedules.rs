//! The scheduler's write on both databases: two nodes — each its own
//! connection pool and its own clock, a few seconds apart — tick at once
//! over five due slots and start exactly five runs; after downtime a
//! schedule starts one late run; a slot due while the previous run is
//! active is skipped and recorded; a disabled schedule starts nothing.

use opsledger_core::RunType;
use opsledger_store::clock::ManualClock;
use opsledger_store::schedules::ScheduleSpec;
use opsledger_store::testing::TestStore;
use opsledger_store::{ContextPatch, Store};
use serde_json::json;
use std::sync::Arc;

const MINUTE: i64 = 60_000;

struct Nodes {
    a: Store,
    b: Store,
    clock_a: ManualClock,
    clock_b: ManualClock,
    ws: String,
    tenant: String,
}

async fn nodes(db: &TestStore) -> Nodes {
    // Both clocks at 20 s past a minute (slots are on the minute), node b's
    // 7 s ahead: the nodes disagree on "now", never on which minute it is
    // (a skew across a slot boundary would rightly decide the next slot).
    let clock_a = ManualClock::new();
    let at = opsledger_store::clock::Clock::now_ms(&clock_a);
    clock_a.advance(at.div_euclid(MINUTE) * MINUTE + MINUTE + 20_000 - at);
    let clock_b = ManualClock::new();
    let at_b = opsledger_store::clock::Clock::now_ms(&clock_b);
    clock_b.advance(opsledger_store::clock::Clock::now_ms(&clock_a) + 7_000 - at_b);
    let a = db.store.with_clock(Arc::new(clock_a.clone()));
    let b = Store::connect(&db.url)
        .await
        .unwrap()
        .with_clock(Arc::new(clock_b.clone()));
    let ws = a.create_workspace("msp").await.unwrap().id;
    let tenant = a.create_tenant(&ws, "contoso", "demo:healthy").await.unwrap().id;
    Nodes {
        a,
        b,
        clock_a,
        clock_b,
        ws,
        tenant,
    }
}

impl Nodes {
    fn advance(&self, ms: i64) {
        self.clock_a.advance(ms);
        self.clock_b.advance(ms);
    }
}

fn spec(tenant: Option<&str>, cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: "nightly".into(),
        run_type: RunType::BackupScheduleExecute,
        tenant_id: tenant.map(str::to_owned),
        cron: cron.into(),
        timezone: "Europe/Brussels".into(),
        params: json!({"policy_types": ["deviceConfigurations"]}),
        retention_keep: Some(3),
        enabled: true,
    }
}

async fn finish(store: &Store, run: &str) {
    store
        .cancel_run(run, ContextPatch::new(["test"], json!("done")))
        .await
        .unwrap();
}

async fn five_slots_on_two_nodes_start_exactly_five_runs(db: TestStore) {
    let n = nodes(&db).await;
    let s =
        n.a.create_schedule(&n.ws, &spec(Some(&n.tenant), "* * * * *"), "test")
            .await
            .unwrap();
    let mut started = Vec::new();
    for _ in 0..5 {
        n.advance(MINUTE);
        // Both nodes tick at once, several times.
        let (ta, tb) = tokio::join!(n.a.fire_due_schedules(10), n.b.fire_due_schedules(10));
        let (ta2, tb2) = tokio::join!(n.a.fire_due_schedules(10), n.b.fire_due_schedules(10));
        let mut slot: Vec<String> = [ta, tb, ta2, tb2]
            .into_iter()
            .flat_map(|t| t.unwrap().started)
            .collect();
        assert_eq!(slot.len(), 1, "one run per slot: {slot:?}");
        let run = slot.pop().unwrap();
        let r = n.a.get_run(&run).await.unwrap().unwrap();
        assert_eq!(r.run_type, RunType::BackupScheduleExecute);
        assert_eq!(r.initiator, format!("schedule:{}", s.id));
        assert_eq!(r.context["params"]["schedule_id"], s.id.as_str());
        assert_eq!(
            r.context["params"]["policy_types"],
            json!(["deviceConfigurations"])
        );
        finish(&n.a, &run).await;
        started.push(run);
    }
    started.sort();
    started.dedup();
    assert_eq!(started.len(), 5);
    let history = n.a.schedule_history(&s.id, 100).await.unwrap();
    assert_eq!(history.len(), 5);
    assert!(
        history.iter().all(|h| h.decision == "started" && h.missed == 0),
        "{history:?}"
    );
}

async fn downtime_starts_one_late_run(db: TestStore) {
    let n = nodes(&db).await;
    let s =
        n.a.create_schedule(&n.ws, &spec(None, "0 * * * *"), "test")
            .await
            .unwrap();
    // Down for five hours and a bit.
    n.advance(5 * 60 * MINUTE + 20 * MINUTE);
    let tick = n.b.fire_due_schedules(10).await.unwrap();
    assert_eq!(tick.started.len(), 1, "{tick:?}");
    assert!(n.a.fire_due_schedules(10).await.unwrap().started.is_empty());
    let h = n.a.schedule_history(&s.id, 10).await.unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].missed >= 4, "the missed slots are counted, not run: {h:?}");
    let after = n.a.schedule(&n.ws, &s.id).await.unwrap().unwrap();
    assert!(
        after.next_due_at.unwrap() > n.a.now_ms(),
        "waits for the next slot after now"
    );
}

async fn a_slot_due_while_the_previous_run_is_active_is_skipped(db: TestStore) {
    let n = nodes(&db).await;
    let other =
        n.a.create_tenant(&n.ws, "fabrikam", "demo:healthy")
            .await
            .unwrap()
            .id;
    // Every tenant of the workspace: one run each per slot.
    let s =
        n.a.create_schedule(&n.ws, &spec(None, "*/5 * * * *"), "test")
            .await
            .unwrap();
    n.advance(5 * MINUTE);
    let first = n.a.fire_due_schedules(10).await.unwrap();
    assert_eq!(first.started.len(), 2);
    // Contoso's run finished, fabrikam's is still running at the next slot.
    let runs: Vec<_> = futures_runs(&n.a, &first.started).await;
    let contoso = runs
        .iter()
        .find(|r| r.tenant_id.as_deref() == Some(n.tenant.as_str()))
        .unwrap();
    finish(&n.a, &contoso.id).await;
    n.advance(5 * MINUTE);
    let second = n.b.fire_due_schedules(10).await.unwrap();
    assert_eq!((second.started.len(), second.skipped_active), (1, 1));
    let h = n.a.schedule_history(&s.id, 10).await.unwrap();
    let skipped = h.iter().find(|x| x.decision == "skipped_active").unwrap();
    assert_eq!(skipped.tenant_id, other);
    let still = runs
        .iter()
        .find(|r| r.tenant_id.as_deref() == Some(other.as_str()))
        .unwrap();
    assert_eq!(
        skipped.run_id.as_deref(),
        Some(still.id.as_str()),
        "names the run it waited for"
    );
}

async fn futures_runs(store: &Store, ids: &[String]) -> Vec<opsledger_core::Run> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.get_run(id).await.unwrap().unwrap());
    }
    out
}

async fn a_disabled_schedule_starts_nothing_and_resumes_from_now(db: TestStore) {
    let n = nodes(&db).await;
    let mut sp = spec(Some(&n.tenant), "* * * * *");
    sp.enabled = false;
    let s = n.a.create_schedule(&n.ws, &sp, "test").await.unwrap();
    assert_eq!(s.next_due_at, None);
    n.advance(30 * MINUTE);
    assert!(n.a.fire_due_schedules(10).await.unwrap().started.is_empty());
    sp.enabled = true;
    let s = n.a.update_schedule(&n.ws, &s.id, &sp).await.unwrap().unwrap();
    assert!(
        s.next_due_at.unwrap() > n.a.now_ms(),
        "no catch-up of the disabled time"
    );
    n.advance(MINUTE);
    assert_eq!(n.a.fire_due_schedules(10).await.unwrap().started.len(), 1);
    // Names are unique in a workspace; an unknown zone is refused.
    let e = n.a.create_schedule(&n.ws, &sp, "test").await.unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    sp.name = "other".into();
    sp.timezone = "Nowhere/Else".into();
    assert!(n.a.create_schedule(&n.ws, &sp, "test").await.is_err());
    // Deleting it keeps its runs, drops its history.
    assert!(n.a.delete_schedule(&n.ws, &s.id).await.unwrap());
    assert!(n.a.schedule(&n.ws, &s.id).await.unwrap().is_none());
    assert!(n.a.schedule_history(&s.id, 10).await.unwrap().is_empty());
}

macro_rules! on_both {
    ($($name:ident),*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(opsledger_store::testing::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = opsledger_store::testing::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    )*};
}

on_both!(
    five_slots_on_two_nodes_start_exactly_five_runs,
    downtime_starts_one_late_run,
    a_slot_due_while_the_previous_run_is_active_is_skipped,
    a_disabled_schedule_starts_nothing_and_resumes_from_now
);
