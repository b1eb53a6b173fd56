//! Two nodes (two provider settings, each with its own local slices) share
//! one store's request budget for a Graph tenant: with 8 readers between
//! them and a small limit, the fake Graph never sees more requests in one
//! window than the limit. On SQLite and PostgreSQL.

use opsledger_fakegraph::{FakeGraph, Model, Tenant};
use opsledger_families::request_budget::StoreBudget;
use opsledger_providers::graph::RetryPolicy;
use opsledger_providers::{BudgetLimits, GraphSettings, Provider, ProviderSettings, Secret};
use opsledger_store::{Store, both_backends};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: &str = "fabrikam.onmicrosoft.com";

async fn read_all(p: &dyn Provider) -> usize {
    let (mut n, mut next) = (0, None::<String>);
    loop {
        let page = p
            .list_page("deviceConfigurations", next.as_deref())
            .await
            .unwrap();
        n += page.items.len();
        match page.next {
            Some(link) => next = Some(link),
            None => return n,
        }
    }
}

both_backends!(
    two_nodes_and_eight_readers_stay_within_the_shared_budget,
    |store: Store| async move {
        let window = Duration::from_secs(2);
        let policies = (0..60)
            .map(|i| json!({"id": format!("p{i}"), "displayName": format!("P {i}")}))
            .collect();
        let mut model = Model::new("app", "secret").tenant(
            TENANT,
            Tenant::default().with("deviceManagement/deviceConfigurations", policies),
        );
        model.window = window;
        let fake = FakeGraph::start(model).await.unwrap();
        let limits = BudgetLimits {
            window,
            requests: 40,
            writes: 10,
            slice: 5,
            write_slice: 2,
        };
        let mut readers = Vec::new();
        for _node in 0..2 {
            let settings = ProviderSettings {
                graph: GraphSettings {
                    client_id: Some("app".into()),
                    client_secret: Some(Secret::new("secret")),
                    authority: fake.authority(),
                    graph_url: fake.graph_url(),
                    retry: RetryPolicy::default(),
                    ..GraphSettings::default()
                }
                .with_budget(Arc::new(StoreBudget::new(store.clone())), limits),
                ..ProviderSettings::default()
            };
            for _ in 0..4 {
                let p = opsledger_providers::open(
                    &format!("graph:{TENANT}"),
                    "t-fabrikam",
                    "fabrikam",
                    &settings,
                )
                .unwrap();
                readers.push(tokio::spawn(async move {
                    for _ in 0..4 {
                        assert_eq!(read_all(p.as_ref()).await, 60);
                    }
                }));
            }
        }
        let started = Instant::now();
        for r in readers {
            r.await.unwrap();
        }
        let took = started.elapsed();
        // 8 readers × 4 reads × 3 pages.
        assert_eq!(fake.requests(TENANT), 96);
        let max = fake.max_requests_per_window(TENANT);
        assert!(max <= 40, "{max} requests in one 2 s window");
        // 96 requests at 40 per window need three windows: the readers
        // waited at least one whole window.
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        println!(
            "{}: 96 requests by two nodes in {took:?}, at most {max} per 2 s window",
            store.backend_name()
        );
    }
);

/// Runs the runner with `settings` until the run completes.
async fn run_to_completion(store: &Store, settings: ProviderSettings, id: &str) -> opsledger_core::Run {
    let registry = opsledger_families::registry(settings);
    let config = opsledger_engine::RunnerConfig {
        poll_interval: Duration::from_millis(20),
        retry_base: Duration::from_millis(20),
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runner =
        tokio::spawn(opsledger_engine::Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let run = store.get_run(id).await.unwrap().unwrap();
        if run.is_completed() {
            break run;
        }
        assert!(Instant::now() < deadline, "run did not complete: {run:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    run
}

both_backends!(
    a_graph_type_whose_page_keeps_failing_is_failed_never_covered_with_fewer,
    |store: Store| async move {
        use opsledger_core::inventory::CoverageStatus;
        let tenant_id = "northwind.onmicrosoft.com";
        let items = |n: usize, p: &str| -> Vec<serde_json::Value> {
            (0..n)
                .map(|i| json!({"id": format!("{p}{i}"), "displayName": format!("{p} {i}")}))
                .collect()
        };
        let fake = FakeGraph::start(
            Model::new("app", "secret").tenant(
                tenant_id,
                Tenant::default()
                    .with("deviceManagement/deviceConfigurations", items(60, "dc"))
                    .with("deviceManagement/configurationPolicies", items(30, "sc")),
            ),
        )
        .await
        .unwrap();
        fake.add_fault(opsledger_fakegraph::Fault::always(
            "deviceConfigurations?$skiptoken=50",
            503,
        ));
        let settings = ProviderSettings {
            graph: GraphSettings {
                client_id: Some("app".into()),
                client_secret: Some(Secret::new("secret")),
                authority: fake.authority(),
                graph_url: fake.graph_url(),
                retry: RetryPolicy {
                    max_attempts: 2,
                    base_delay: Duration::from_millis(5),
                    max_delay: Duration::from_secs(1),
                },
                ..GraphSettings::default()
            }
            .with_budget(Arc::new(StoreBudget::new(store.clone())), BudgetLimits::default()),
            ..ProviderSettings::default()
        };
        let ws = store.create_workspace("ws").await.unwrap();
        let t = store
            .create_tenant(&ws.id, "northwind", &format!("graph:{tenant_id}"))
            .await
            .unwrap();
        let new = opsledger_store::NewRun::on_tenant(
            &ws.id,
            &t.id,
            opsledger_core::RunType::InventorySync,
            "test",
            json!({}),
        );
        let id = store.create_run(new).await.unwrap().into_run().id;
        let run = run_to_completion(&store, settings, &id).await;
        assert_eq!(
            run.outcome,
            opsledger_core::Outcome::PartiallySucceeded,
            "{run:?}"
        );
        let coverage = opsledger_families::inventory_sync::coverage_of(&run.context);
        let dc = &coverage["deviceConfigurations"];
        assert_eq!(dc.status, CoverageStatus::Failed);
        assert_eq!(dc.item_count, 0, "a type not fully read writes no items");
        assert_eq!(dc.failure_code.as_deref(), Some("provider_service_error"));
        let sc = &coverage["configurationPolicies"];
        assert_eq!((sc.status, sc.item_count), (CoverageStatus::Covered, 30));
    }
);
