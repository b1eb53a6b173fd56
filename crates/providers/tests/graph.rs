//! The `graph:` provider against the fake Graph on loopback: every
//! collection read to its last page (policies, directory, settings,
//! assignments, definition and presentation values), throttling and 503s
//! recovered inside the client, an expired token refreshed once, a page
//! that keeps failing surfacing as an error (never fewer items), writes in
//! order, the request budget held by two nodes sharing one source, and the
//! client secret in no Debug string, error or log line.

use opsledger_fakegraph::{FakeGraph, Fault, Model, Tenant};
use opsledger_providers::graph::RetryPolicy;
use opsledger_providers::graph::budget::LocalBudget;
use opsledger_providers::{
    BudgetLimits, DirectoryKind, GraphSettings, Provider, ProviderError, ProviderSettings, RequestBudget,
    Secret,
};
use serde_json::{Value, json};
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cr3t-Graph-client-secret-never-shown";
const TENANT: &str = "contoso.onmicrosoft.com";

/// Every log line of this test binary, at the most verbose level.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INIT: OnceLock<()> = OnceLock::new();
    let buffer = LOGS.get_or_init(Default::default);
    INIT.get_or_init(|| {
        struct W;
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_writer(|| W)
            .try_init();
    });
    buffer
}

fn policies(n: usize, prefix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"id": format!("{prefix}-{i:03}"), "displayName": format!("{prefix} {i}"),
                   "@odata.type": "#microsoft.graph.windows10GeneralConfiguration"})
        })
        .collect()
}

fn groups(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("g-{i:03}"), "displayName": format!("Group {i}"), "mail": "x@y"}))
        .collect()
}

fn model(tenant: Tenant) -> Model {
    Model::new(CLIENT, SECRET).tenant(TENANT, tenant)
}

/// Settings of one node: quick backoff so the tests do not wait long.
fn settings(fake: &FakeGraph) -> ProviderSettings {
    logs();
    ProviderSettings {
        graph: GraphSettings {
            client_id: Some(CLIENT.into()),
            client_secret: Some(Secret::new(SECRET)),
            authority: fake.authority(),
            graph_url: fake.graph_url(),
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_secs(5),
            },
            ..GraphSettings::default()
        },
        ..ProviderSettings::default()
    }
}

fn open(s: &ProviderSettings) -> Arc<dyn Provider> {
    opsledger_providers::open(&format!("graph:{TENANT}"), "t-contoso", "contoso", s).unwrap()
}

/// Every item of a type through `list_page`, page by page: (items, pages).
async fn read_type(p: &dyn Provider, ty: &str) -> Result<(Vec<String>, usize), ProviderError> {
    let (mut ids, mut pages, mut next) = (Vec::new(), 0, None::<String>);
    loop {
        let page = p.list_page(ty, next.as_deref()).await?;
        pages += 1;
        ids.extend(page.items.into_iter().map(|i| i.id));
        match page.next {
            Some(n) => next = Some(n),
            None => return Ok((ids, pages)),
        }
    }
}

#[tokio::test]
async fn sixty_policies_come_in_three_pages_and_all_arrive() {
    let fake = FakeGraph::start(model(
        Tenant::default().with("deviceManagement/deviceConfigurations", policies(60, "dc")),
    ))
    .await
    .unwrap();
    let p = open(&settings(&fake));
    p.check_access().await.unwrap();
    let (ids, pages) = read_type(p.as_ref(), "deviceConfigurations").await.unwrap();
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 60);
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 60);
    // An empty type is one page of nothing, not an error.
    assert_eq!(
        read_type(p.as_ref(), "deviceManagementScripts").await.unwrap(),
        (vec![], 1)
    );
    assert_eq!(fake.requests(TENANT), 4);
    assert_eq!(fake.token_requests(TENANT), 1);
}

#[tokio::test]
async fn the_directory_is_read_whole() {
    let locations: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("nl-{i}"), "displayName": format!("Office {i}")}))
        .collect();
    let filters: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("af-{i}"), "displayName": format!("Filter {i}")}))
        .collect();
    let fake = FakeGraph::start(model(
        Tenant::default()
            .with_groups(groups(60))
            .with("identity/conditionalAccess/namedLocations", locations)
            .with("deviceManagement/assignmentFilters", filters),
    ))
    .await
    .unwrap();
    let p = open(&settings(&fake));
    let dir = p.directory().await.unwrap();
    let count = |k| dir.entries.iter().filter(|e| e.kind == k).count();
    assert_eq!(count(DirectoryKind::Group), 60);
    assert_eq!(count(DirectoryKind::NamedLocation), 30);
    assert_eq!(count(DirectoryKind::AssignmentFilter), 3);
    assert_eq!(dir.by_id("g-059").unwrap().display_name, "Group 59");
    assert_eq!(dir.by_name(DirectoryKind::NamedLocation, "office 29").len(), 1);
    // groups: 3 pages ($select kept in the nextLinks), locations 2, filters 1.
    assert_eq!(fake.requests(TENANT), 6);
}

#[tokio::test]
async fn settings_assignments_and_presentation_values_are_read_to_their_last_page() {
    let settings_list: Vec<Value> = (0..60)
        .map(|i| json!({"id": i.to_string(), "settingInstance": {"settingDefinitionId": format!("s_{i}")}}))
        .collect();
    let assignments: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("a{i}"), "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": format!("g-{i:03}")}}))
        .collect();
    let catalog = json!({"id": "sc-1", "name": "Big settings catalog", "settings": settings_list,
                         "assignments": assignments});
    let dvs: Vec<Value> = (0..26)
        .map(|i| {
            let pvs: Vec<Value> = (0..if i == 0 { 30 } else { 1 })
                .map(|j| json!({"id": format!("pv-{i}-{j}"), "value": j}))
                .collect();
            json!({"id": format!("dv-{i}"), "enabled": true, "presentationValues": pvs})
        })
        .collect();
    let admx = json!({"id": "gp-1", "displayName": "ADMX", "definitionValues": dvs,
                      "assignments": [{"id": "x", "target": {}}]});
    let fake = FakeGraph::start(model(
        Tenant::default()
            .with("deviceManagement/configurationPolicies", vec![catalog])
            .with("deviceManagement/groupPolicyConfigurations", vec![admx]),
    ))
    .await
    .unwrap();
    let p = open(&settings(&fake));
    // The list answers the policy without its nested lists, like Graph.
    let page = p.list_page("configurationPolicies", None).await.unwrap();
    assert_eq!(page.items[0].display_name, "Big settings catalog");
    assert!(page.items[0].payload.get("settings").is_none());
    let whole = p.get_policy("configurationPolicies", "sc-1").await.unwrap();
    assert_eq!(whole.payload["settings"].as_array().unwrap().len(), 60);
    assert_eq!(whole.payload["assignments"].as_array().unwrap().len(), 30);
    assert_eq!(
        whole.payload["settings"][59]["settingInstance"]["settingDefinitionId"],
        "s_59"
    );
    let gp = p.get_policy("groupPolicyConfigurations", "gp-1").await.unwrap();
    let dvs = gp.payload["definitionValues"].as_array().unwrap();
    assert_eq!(dvs.len(), 26);
    assert_eq!(dvs[0]["presentationValues"].as_array().unwrap().len(), 30);
    assert_eq!(dvs[25]["presentationValues"].as_array().unwrap().len(), 1);
    assert_eq!(gp.payload["assignments"].as_array().unwrap().len(), 1);
    // Conditional Access has no assignments to read.
    assert!(matches!(
        p.get_policy("conditionalAccessPolicies", "nope").await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_429_with_retry_after_and_a_503_without_are_recovered() {
    let fake = FakeGraph::start(model(
        Tenant::default()
            .with("deviceManagement/deviceConfigurations", policies(30, "dc"))
            .with("identity/conditionalAccess/policies", policies(3, "ca")),
    ))
    .await
    .unwrap();
    fake.add_fault(Fault::throttle("deviceConfigurations?$skiptoken=25", 1, 1));
    fake.add_fault(Fault::unavailable("conditionalAccess/policies", 2));
    let p = open(&settings(&fake));
    let started = Instant::now();
    let (ids, pages) = read_type(p.as_ref(), "deviceConfigurations").await.unwrap();
    let throttled_for = started.elapsed();
    assert_eq!((ids.len(), pages), (30, 2));
    // The client waited the Retry-After (1 s) before asking again.
    assert!(throttled_for >= Duration::from_secs(1), "{throttled_for:?}");
    let (ca, _) = read_type(p.as_ref(), "conditionalAccessPolicies").await.unwrap();
    assert_eq!(ca.len(), 3);
    // 2 pages + 1 retry; 1 page + 2 retries.
    assert_eq!(fake.requests(TENANT), 6);
    println!("429 recovered after {throttled_for:?}");
}

#[tokio::test]
async fn throttling_that_does_not_end_reaches_the_caller_with_its_retry_after() {
    let fake = FakeGraph::start(model(Tenant::default())).await.unwrap();
    fake.add_fault(Fault {
        matching: "deviceConfigurations".into(),
        status: 429,
        retry_after: Some(3600),
        times: None,
    });
    fake.add_fault(Fault::always("deviceCompliancePolicies", 503));
    let p = open(&settings(&fake));
    // An ask longer than the client waits goes to the caller's retry layer at once.
    let e = p.list_page("deviceConfigurations", None).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(e.code(), "provider_throttled");
    assert!(e.is_transient());
    let e = p.list_page("deviceCompliancePolicies", None).await.unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Service {
                status: 503,
                retry_after: None,
                ..
            }
        ),
        "{e:?}"
    );
    // 1 for the long 429, 4 attempts for the 503.
    assert_eq!(fake.requests(TENANT), 5);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once() {
    let fake = FakeGraph::start(model(
        Tenant::default().with("deviceManagement/deviceConfigurations", policies(60, "dc")),
    ))
    .await
    .unwrap();
    let s = settings(&fake);
    let p = open(&s);
    read_type(p.as_ref(), "deviceConfigurations").await.unwrap();
    // Graph now refuses tokens older than 300 ms (though `expires_in` said an hour).
    fake.set_token_ttl(Some(Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Several readers and a second provider instance of the process: one refresh between them.
    let q = open(&s);
    let (a, b, c) = tokio::join!(
        read_type(p.as_ref(), "deviceConfigurations"),
        read_type(q.as_ref(), "deviceConfigurations"),
        read_type(p.as_ref(), "deviceConfigurations"),
    );
    assert_eq!(a.unwrap().0.len(), 60);
    assert_eq!(b.unwrap().0.len(), 60);
    assert_eq!(c.unwrap().0.len(), 60);
    assert_eq!(fake.token_requests(TENANT), 2);
    // A token refused even fresh is an authentication failure, after one refresh.
    fake.set_token_ttl(Some(Duration::ZERO));
    let e = p.list_page("deviceConfigurations", None).await.unwrap_err();
    assert!(matches!(e, ProviderError::AuthFailed(_)), "{e:?}");
    assert_eq!(fake.token_requests(TENANT), 3);
}

#[tokio::test]
async fn a_page_that_keeps_failing_is_an_error_never_fewer_items() {
    let settings_list: Vec<Value> = (0..60).map(|i| json!({"id": i.to_string()})).collect();
    let fake = FakeGraph::start(model(
        Tenant::default()
            .with("deviceManagement/deviceConfigurations", policies(60, "dc"))
            .with(
                "deviceManagement/configurationPolicies",
                vec![json!({"id": "sc", "name": "n", "settings": settings_list})],
            ),
    ))
    .await
    .unwrap();
    fake.add_fault(Fault::always("deviceConfigurations?$skiptoken=50", 500));
    fake.add_fault(Fault::always("sc/settings?$skiptoken=25", 503));
    let p = open(&settings(&fake));
    let e = read_type(p.as_ref(), "deviceConfigurations").await.unwrap_err();
    assert!(matches!(e, ProviderError::Service { status: 500, .. }), "{e:?}");
    let e = p.get_policy("configurationPolicies", "sc").await.unwrap_err();
    assert!(matches!(e, ProviderError::Service { status: 503, .. }), "{e:?}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn statuses_map_to_typed_errors() {
    let mut tenant = Tenant::default().with("deviceManagement/deviceConfigurations", policies(1, "dc"));
    tenant
        .forbidden
        .push("deviceManagement/deviceCompliancePolicies".into());
    let fake = FakeGraph::start(model(tenant)).await.unwrap();
    let p = open(&settings(&fake));
    assert!(matches!(
        p.list_page("deviceCompliancePolicies", None).await,
        Err(ProviderError::Forbidden(_))
    ));
    assert!(matches!(
        p.get_policy("deviceConfigurations", "missing").await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(matches!(
        p.list_page("nope", None).await,
        Err(ProviderError::UnknownType(_))
    ));
    // A page token that is not on Graph's origin never gets our token.
    assert!(matches!(
        p.list_page("deviceConfigurations", Some("http://evil.test/beta/x"))
            .await,
        Err(ProviderError::Malformed(_))
    ));
    // Nothing listening: no answer is transient.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut s = settings(&fake);
    s.graph.authority = format!("http://{dead}");
    let e = open(&s).check_access().await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
}

#[tokio::test]
async fn a_policy_is_created_before_its_assignments() {
    let fake = FakeGraph::start(model(
        Tenant::default()
            .with_groups(groups(2))
            .with("identity/conditionalAccess/policies", vec![]),
    ))
    .await
    .unwrap();
    let p = open(&settings(&fake));
    let body = json!({
        "id": "old-id", "@odata.context": "x", "createdDateTime": "2020", "name": "Restored",
        "settings": [{"id": "0", "settingInstance": {"settingDefinitionId": "a"}}],
        "assignments": [{"id": "old", "target": {"groupId": "g-000"}}]
    });
    let created = p.create_policy("configurationPolicies", &body).await.unwrap();
    assert_ne!(created.id, "old-id");
    p.assign(
        "configurationPolicies",
        &created.id,
        body["assignments"].as_array().unwrap(),
    )
    .await
    .unwrap();
    let writes: Vec<(String, String)> = fake.writes().into_iter().map(|w| (w.method, w.path)).collect();
    assert_eq!(
        writes,
        vec![
            (
                "POST".to_owned(),
                "deviceManagement/configurationPolicies".to_owned()
            ),
            (
                "POST".to_owned(),
                format!("deviceManagement/configurationPolicies/{}/assign", created.id)
            ),
        ]
    );
    let whole = p.get_policy("configurationPolicies", &created.id).await.unwrap();
    assert_eq!(whole.payload["settings"].as_array().unwrap().len(), 1);
    assert_eq!(whole.payload["assignments"][0]["target"]["groupId"], "g-000");
    // What Graph was sent: no id, annotations, timestamps or assignments.
    let stored = &fake.objects(TENANT, "deviceManagement/configurationPolicies")[0];
    assert!(stored.get("@odata.context").is_none());
    assert_eq!(stored["createdDateTime"], "2026-01-01T00:00:00Z");
    // An update replaces; reading back shows it.
    let updated = p
        .update_policy(
            "configurationPolicies",
            &created.id,
            &json!({"name": "Renamed", "settings": []}),
        )
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Renamed");
    // Administrative Templates: the policy, then each definition value.
    let admx = json!({"displayName": "A", "definitionValues": [
        {"id": "dv", "enabled": true, "presentationValues": [{"id": "pv", "value": 1}]}]});
    let gp = p.create_policy("groupPolicyConfigurations", &admx).await.unwrap();
    let read = p.get_policy("groupPolicyConfigurations", &gp.id).await.unwrap();
    assert_eq!(
        read.payload["definitionValues"][0]["presentationValues"][0]["value"],
        1
    );
    let tail: Vec<String> = fake.writes().into_iter().skip(3).map(|w| w.path).collect();
    assert_eq!(
        tail,
        vec![
            "deviceManagement/groupPolicyConfigurations".to_owned(),
            format!(
                "deviceManagement/groupPolicyConfigurations/{}/definitionValues",
                gp.id
            ),
        ]
    );
    // Conditional Access has no assignments.
    assert!(matches!(
        p.assign("conditionalAccessPolicies", "x", &[]).await,
        Err(ProviderError::UnsupportedType(_))
    ));
    // A group, then it is in the directory.
    let g = p
        .create_directory_object(DirectoryKind::Group, "Restored – Staff")
        .await
        .unwrap();
    assert_eq!(g.display_name, "Restored – Staff");
    let stored = fake.objects(TENANT, "groups").pop().unwrap();
    assert_eq!(stored["mailNickname"], "RestoredStaff");
    assert_eq!(stored["securityEnabled"], true);
    assert!(p.directory().await.unwrap().by_id(&g.id).is_some());
}

/// A budget source that counts its takes, over a shared one.
#[derive(Debug)]
struct Counting(Arc<LocalBudget>, std::sync::atomic::AtomicU32);

#[async_trait::async_trait]
impl RequestBudget for Counting {
    async fn take(
        &self,
        key: &str,
        window: Duration,
        limit: u32,
        want: u32,
    ) -> Result<opsledger_providers::Grant, opsledger_providers::BudgetError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.take(key, window, limit, want).await
    }
}

#[tokio::test]
async fn two_nodes_sharing_one_budget_never_exceed_it() {
    let window = Duration::from_secs(2);
    let mut m = model(Tenant::default().with("deviceManagement/deviceConfigurations", policies(60, "dc")));
    m.window = window;
    let fake = FakeGraph::start(m).await.unwrap();
    let shared = Arc::new(LocalBudget::default());
    let limits = BudgetLimits {
        window,
        requests: 40,
        writes: 10,
        slice: 5,
        write_slice: 2,
    };
    let mut readers = Vec::new();
    let mut sources = Vec::new();
    for _node in 0..2 {
        let source = Arc::new(Counting(shared.clone(), Default::default()));
        sources.push(source.clone());
        let mut s = settings(&fake);
        s.graph = s.graph.with_budget(source, limits);
        for _ in 0..4 {
            let p = open(&s);
            readers.push(tokio::spawn(async move {
                for _ in 0..4 {
                    assert_eq!(
                        read_type(p.as_ref(), "deviceConfigurations")
                            .await
                            .unwrap()
                            .0
                            .len(),
                        60
                    );
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
    assert!(max <= 40, "{max} requests in one window");
    // 96 requests at 40 per 2 s cannot take less than two windows.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    // Both nodes spent slices, not a take per request.
    for s in &sources {
        let takes = s.1.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..96).contains(&takes), "{takes}");
    }
    println!("two nodes, 8 readers: 96 requests in {took:?}, at most {max} per 2 s window");
}

#[tokio::test]
async fn the_secret_shows_in_no_debug_error_or_log() {
    let mut m = model(Tenant::default().with("deviceManagement/deviceConfigurations", policies(30, "dc")));
    m.echo_secret_in_errors = true;
    m.client_secret = "the-fake-wants-another-secret".into();
    let fake = FakeGraph::start(m).await.unwrap();
    let s = settings(&fake);
    let p = open(&s);
    // The fake quotes the refused secret in its description: scrubbed.
    let e = p.check_access().await.unwrap_err();
    assert!(matches!(e, ProviderError::AuthFailed(_)), "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("AADSTS7000215"), "{shown}");
    let mut seen = vec![
        shown,
        format!("{s:?}"),
        format!("{:?}", s.graph),
        format!("{p:?}", p = s.graph.client_secret),
    ];
    seen.push(format!(
        "{:?}",
        p.list_page("deviceConfigurations", None).await.unwrap_err()
    ));
    // And a working flow, traced at the most verbose level.
    let ok = FakeGraph::start(model(
        Tenant::default().with("deviceManagement/deviceConfigurations", policies(30, "dc")),
    ))
    .await
    .unwrap();
    ok.add_fault(Fault::throttle("skiptoken", 0, 1));
    let p = open(&settings(&ok));
    read_type(p.as_ref(), "deviceConfigurations").await.unwrap();
    for text in &seen {
        assert!(!text.contains(SECRET), "the secret shows in {text}");
    }
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logs.contains("graph"), "tracing captured nothing");
    assert!(!logs.contains(SECRET), "the secret is in the logs");
    std::io::stdout().flush().unwrap();
}
