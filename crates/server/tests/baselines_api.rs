//! Baselines through the real router, on both databases:
//! `…/baseline-profiles` (list, admin create), `…/baseline-snapshots/{id}`,
//! `…/operations/{id}/findings`, and the start checks of `baseline.capture`
//! and `baseline.compare` on the artifacts they name.
//!
//! Profiles are made through the store's API; snapshots and findings only
//! runs write, so they come from real `baseline.capture` and
//! `baseline.compare` runs on `demo:healthy` tenants, executed by an
//! in-process runner. Two demo tenants generate different policies, so a
//! compare of one against the other's snapshot has findings of every kind.
//!
//! What is proven: shapes; a restricted member never sees another tenant's
//! profile, snapshot or findings (hidden from the list, `404` byte for byte
//! as for an id that exists nowhere); admin-only creation with every bad
//! input a precise `400`/`404`/`409` that stores nothing; cursor round trips
//! over snapshot policies and findings that return each exactly once; and
//! refused starts that create no run.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::access::Role;
use opsledger_core::{Outcome, Run, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_server::AppState;
use opsledger_store::{NewRun, RunFilter, Store, Visibility, both_backends};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const MISSING: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

struct World {
    state: AppState,
    ws: String,
    other_ws: String,
    /// The golden tenant and another, both `demo:healthy`.
    contoso: String,
    fabrikam: String,
    /// A tenant of the other workspace.
    foreign_tenant: String,
    admin: String,
    operator: String,
    viewer: String,
    /// An admin restricted to `fabrikam`.
    restricted: String,
    /// Admin of the other workspace.
    outsider: String,
}

async fn user(store: &Store, ws: &str, email: &str, role: Role, tenants: &[String]) -> String {
    let id = store.upsert_user(email, "unused").await.unwrap();
    store.add_member(ws, &id, role, tenants).await.unwrap();
    store.issue_token(&id, "test").await.unwrap()
}

async fn world(store: Store) -> World {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let other_ws = store.create_workspace("other").await.unwrap().id;
    let tenant = |ws: String, name: &'static str| {
        let store = store.clone();
        async move { store.create_tenant(&ws, name, "demo:healthy").await.unwrap().id }
    };
    let contoso = tenant(ws.clone(), "contoso").await;
    let fabrikam = tenant(ws.clone(), "fabrikam").await;
    let foreign_tenant = tenant(other_ws.clone(), "woodgrove").await;
    let admin = user(&store, &ws, "admin@t", Role::Admin, &[]).await;
    let operator = user(&store, &ws, "operator@t", Role::Operator, &[]).await;
    let viewer = user(&store, &ws, "viewer@t", Role::Viewer, &[]).await;
    let restricted = user(
        &store,
        &ws,
        "restricted@t",
        Role::Admin,
        std::slice::from_ref(&fabrikam),
    )
    .await;
    let outsider = user(&store, &other_ws, "outsider@t", Role::Admin, &[]).await;
    World {
        state: AppState {
            files: None,
            evidence_key: None,
            store,
            registry: opsledger_families::registry(Default::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            providers: Default::default(),
        },
        ws,
        other_ws,
        contoso,
        fabrikam,
        foreign_tenant,
        admin,
        operator,
        viewer,
        restricted,
        outsider,
    }
}

struct Answer {
    status: u16,
    json: Value,
    raw: String,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }
}

/// One request through the real router (edge layers included); `body` is
/// sent as it is.
async fn call_raw(w: &World, token: Option<&str>, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let res = opsledger_server::router(w.state.clone())
        .oneshot(req.body(Body::from(body.unwrap_or_default())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ctype.as_deref(), Some("application/json"), "{status} {path}");
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status >= 400 {
        assert!(
            json["error"]["code"].is_string() && json["error"]["message"].is_string(),
            "{json}"
        );
    }
    Answer {
        status,
        json,
        raw: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(w: &World, token: &str, path: &str) -> Answer {
    call_raw(w, Some(token), "GET", path, None).await
}

async fn post(w: &World, token: &str, path: &str, body: Value) -> Answer {
    call_raw(
        w,
        Some(token),
        "POST",
        path,
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await
}

fn profiles_path(w: &World) -> String {
    format!("/api/v1/workspaces/{}/baseline-profiles", w.ws)
}

fn snapshot_path(w: &World, id: &str) -> String {
    format!("/api/v1/workspaces/{}/baseline-snapshots/{id}", w.ws)
}

fn findings_path(w: &World, run: &str) -> String {
    format!("/api/v1/workspaces/{}/operations/{run}/findings", w.ws)
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

/// Runs `ids` (already created) to their end with an in-process runner.
async fn run_to_end(store: &Store, ids: &[&str]) -> Vec<Run> {
    let registry = opsledger_families::registry(Default::default());
    let config = RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut done = Vec::new();
    for id in ids {
        let run = loop {
            let r = store.get_run(id).await.unwrap().unwrap();
            if r.is_completed() {
                break r;
            }
            assert!(tokio::time::Instant::now() < deadline, "still not done: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        done.push(run);
    }
    shutdown.cancel();
    runner.await.unwrap();
    done
}

async fn create_run(store: &Store, ws: &str, tenant: &str, t: RunType, params: Value) -> String {
    let new = NewRun::on_tenant(ws, tenant, t, "test", params);
    store.create_run(new).await.unwrap().into_run().id
}

/// A capture of `tenant` into its default profile, run to its end: the
/// snapshot's id (the run must have sealed one).
async fn capture(store: &Store, ws: &str, tenant: &str) -> (String, Run) {
    let id = create_run(store, ws, tenant, RunType::BaselineCapture, json!({})).await;
    let run = run_to_end(store, &[&id]).await.pop().unwrap();
    assert!(
        matches!(run.outcome, Outcome::Succeeded | Outcome::PartiallySucceeded),
        "baseline.capture did not capture: {:?} {:?} {}",
        run.outcome,
        run.failures,
        run.context
    );
    let snapshot = run.context["baseline_snapshot"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no context.baseline_snapshot.id: {}", run.context))
        .to_owned();
    (snapshot, run)
}

async fn all_runs(store: &Store, ws: &str) -> usize {
    let filter = RunFilter {
        limit: 500,
        ..Default::default()
    };
    let vis = Visibility {
        workspace_id: ws.to_owned(),
        tenants: None,
    };
    store.list_runs(&vis, &filter).await.unwrap().0.len()
}

both_backends!(profiles_listed_and_created_by_admins, |store: Store| async move {
    let w = world(store.clone()).await;
    let path = profiles_path(&w);

    // Empty at first.
    let list = get(&w, &w.viewer, &path).await;
    assert_eq!(list.status, 200, "{}", list.raw);
    assert_eq!(list.json, json!({"items": [], "next_cursor": null}));

    // An admin creates one: trimmed name, policy types sorted.
    let created = post(
        &w,
        &w.admin,
        &path,
        json!({"name": "  Gold standard  ", "tenant_id": w.contoso,
               "policy_types": ["namedLocations", "deviceConfigurations"]}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.raw);
    assert_eq!(
        keys(&created.json),
        BTreeSet::from([
            "id",
            "name",
            "tenant_id",
            "policy_types",
            "is_default",
            "created_at",
            "created_by",
            "latest_snapshot"
        ])
    );
    assert_eq!(created.json["name"], "Gold standard");
    assert_eq!(created.json["tenant_id"], json!(w.contoso));
    assert_eq!(
        created.json["policy_types"],
        json!(["deviceConfigurations", "namedLocations"])
    );
    assert_eq!(created.json["is_default"], false);
    assert_eq!(created.json["latest_snapshot"], Value::Null);
    assert!(created.json["created_by"].as_str().unwrap().starts_with("user:"));
    assert!(chrono::DateTime::parse_from_rfc3339(created.json["created_at"].as_str().unwrap()).is_ok());
    // Without policy types: every type (null).
    let all = post(
        &w,
        &w.admin,
        &path,
        json!({"name": "Fabrikam all", "tenant_id": w.fabrikam}),
    )
    .await;
    assert_eq!(all.status, 201, "{}", all.raw);
    assert_eq!(all.json["policy_types"], Value::Null);
    // The restricted admin may create one for their tenant.
    let theirs = post(
        &w,
        &w.restricted,
        &path,
        json!({"name": "Fabrikam pilot", "tenant_id": w.fabrikam, "policy_types": null}),
    )
    .await;
    assert_eq!(theirs.status, 201, "{}", theirs.raw);
    // Through the store too (a profile is a profile, however made).
    store
        .create_baseline_profile(&w.ws, "Another contoso", &w.contoso, None, "user:x")
        .await
        .unwrap();

    // The list: by name, as created.
    let list = get(&w, &w.viewer, &path).await;
    assert_eq!(list.status, 200, "{}", list.raw);
    assert_eq!(
        names(&list.json),
        [
            "Another contoso",
            "Fabrikam all",
            "Fabrikam pilot",
            "Gold standard"
        ]
    );
    assert_eq!(list.json["items"][3], created.json);
    assert_eq!(list.json["next_cursor"], Value::Null);
    // Paged: each profile once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => format!("{path}?limit=3"),
            Some(c) => format!("{path}?limit=3&cursor={c}"),
        };
        let page = get(&w, &w.viewer, &q).await;
        assert_eq!(page.status, 200, "{}", page.raw);
        seen.extend(names(&page.json).into_iter().map(str::to_owned));
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "Another contoso",
            "Fabrikam all",
            "Fabrikam pilot",
            "Gold standard"
        ]
    );
    // The restricted member sees only their tenant's profiles.
    let mine = get(&w, &w.restricted, &path).await;
    assert_eq!(names(&mine.json), ["Fabrikam all", "Fabrikam pilot"]);
    // Strict queries.
    for (q, code) in [
        ("?limit=0", "invalid_query"),
        ("?limit=201", "invalid_query"),
        ("?tenant_id=x", "invalid_query"),
        ("?cursor=nope", "invalid_cursor"),
        (&format!("?cursor={MISSING}"), "invalid_cursor"),
        ("?limit=1&limit=2", "duplicate_query_param"),
    ] {
        let a = get(&w, &w.viewer, &format!("{path}{q}")).await;
        assert_eq!((a.status, a.code()), (400, Some(code)), "{q}: {}", a.raw);
    }

    // A name taken: 409, whatever the source tenant.
    let taken = post(
        &w,
        &w.admin,
        &path,
        json!({"name": "Gold standard", "tenant_id": w.fabrikam}),
    )
    .await;
    assert_eq!(
        (taken.status, taken.code()),
        (409, Some("profile_exists")),
        "{}",
        taken.raw
    );

    // Not an admin: 403.
    for token in [&w.viewer, &w.operator] {
        let a = post(&w, token, &path, json!({"name": "Nope", "tenant_id": w.contoso})).await;
        assert_eq!((a.status, a.code()), (403, Some("forbidden")), "{}", a.raw);
    }
    // Outside the workspace, or no token.
    let a = post(
        &w,
        &w.outsider,
        &path,
        json!({"name": "Nope", "tenant_id": w.contoso}),
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(get(&w, &w.outsider, &path).await.status, 404);
    assert_eq!(call_raw(&w, None, "GET", &path, None).await.status, 401);

    // A source tenant the caller cannot see is one that exists nowhere.
    let hidden = post(
        &w,
        &w.restricted,
        &path,
        json!({"name": "Nope", "tenant_id": w.contoso}),
    )
    .await;
    let foreign = post(
        &w,
        &w.admin,
        &path,
        json!({"name": "Nope", "tenant_id": w.foreign_tenant}),
    )
    .await;
    let nowhere = post(&w, &w.admin, &path, json!({"name": "Nope", "tenant_id": MISSING})).await;
    for a in [&hidden, &foreign, &nowhere] {
        assert_eq!((a.status, a.code()), (404, Some("tenant_not_found")), "{}", a.raw);
    }
    assert_eq!(hidden.raw, nowhere.raw, "no existence leak");
    assert_eq!(foreign.raw, nowhere.raw, "no existence leak");

    // Bad bodies: 400 naming what is wrong.
    let long = "x".repeat(201);
    let bad: Vec<(Value, &str)> = vec![
        (
            json!({"name": "A", "tenant_id": w.contoso, "is_default": true}),
            "invalid_body",
        ),
        (
            json!({"name": "A", "tenant_id": w.contoso, "extra": 1}),
            "invalid_body",
        ),
        (json!({"tenant_id": w.contoso}), "missing_field"),
        (json!({"name": "A"}), "missing_field"),
        (json!({"name": "   ", "tenant_id": w.contoso}), "invalid_name"),
        (json!({"name": long, "tenant_id": w.contoso}), "invalid_name"),
        (json!({"name": "a\nb", "tenant_id": w.contoso}), "invalid_name"),
        (
            json!({"name": "a\u{200B}b", "tenant_id": w.contoso}),
            "invalid_name",
        ),
        (json!({"name": 5, "tenant_id": w.contoso}), "invalid_body"),
        (json!({"name": "A", "tenant_id": "not-an-id"}), "invalid_id"),
        (
            json!({"name": "A", "tenant_id": w.contoso.to_uppercase()}),
            "invalid_id",
        ),
        (
            json!({"name": "A", "tenant_id": w.contoso, "policy_types": []}),
            "invalid_policy_types",
        ),
        (
            json!({"name": "A", "tenant_id": w.contoso, "policy_types": ["nope"]}),
            "invalid_policy_types",
        ),
        (
            json!({"name": "A", "tenant_id": w.contoso, "policy_types": ["DeviceConfigurations"]}),
            "invalid_policy_types",
        ),
        (
            json!({"name": "A", "tenant_id": w.contoso, "policy_types": "namedLocations"}),
            "invalid_policy_types",
        ),
        (json!(["A"]), "invalid_body"),
    ];
    for (body, code) in bad {
        let a = post(&w, &w.admin, &path, body.clone()).await;
        assert_eq!((a.status, a.code()), (400, Some(code)), "{body}: {}", a.raw);
    }
    let a = call_raw(&w, Some(&w.admin), "POST", &path, Some(b"{\"name\":".to_vec())).await;
    assert_eq!((a.status, a.code()), (400, Some("invalid_body")), "{}", a.raw);
    let a = call_raw(&w, Some(&w.admin), "DELETE", &path, None).await;
    assert_eq!(a.status, 405);

    // Nothing refused was stored.
    let list = get(&w, &w.admin, &path).await;
    assert_eq!(names(&list.json).len(), 4, "{}", list.raw);
});

both_backends!(
    snapshots_and_findings_follow_their_runs,
    |store: Store| async move {
        let w = world(store.clone()).await;
        // The golden tenant's baseline, and one of the other workspace.
        let (golden, capture_run) = capture(&store, &w.ws, &w.contoso).await;
        let (foreign_snapshot, _) = capture(&store, &w.other_ws, &w.foreign_tenant).await;
        // Fabrikam compared with Contoso's snapshot (started over the API: a
        // golden tenant's baseline), and Contoso with its own default profile.
        let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
        let started = post(
            &w,
            &w.admin,
            &ops,
            json!({"type": "baseline.compare", "tenant_id": w.fabrikam,
               "params": {"baseline_snapshot_id": golden}}),
        )
        .await;
        assert_eq!(started.status, 202, "{}", started.raw);
        let drift_run = started.json["id"].as_str().unwrap().to_owned();
        let same_run = create_run(&store, &w.ws, &w.contoso, RunType::BaselineCompare, json!({})).await;
        let done = run_to_end(&store, &[&drift_run, &same_run]).await;
        for r in &done {
            assert!(
                matches!(r.outcome, Outcome::Succeeded | Outcome::PartiallySucceeded),
                "baseline.compare did not compare: {:?} {:?} {}",
                r.outcome,
                r.failures,
                r.context
            );
        }

        // ---- The snapshot.
        let one = get(&w, &w.viewer, &snapshot_path(&w, &golden)).await;
        assert_eq!(one.status, 200, "{}", one.raw);
        let s = &one.json;
        assert_eq!(
            keys(s),
            BTreeSet::from([
                "id",
                "tenant_id",
                "profile_id",
                "created_by_run_id",
                "created_at",
                "sealed_at",
                "policy_types",
                "policy_count",
                "gap_count",
                "sealed",
                "gaps",
                "secrets_redacted",
                "policies",
                "next_cursor"
            ])
        );
        assert_eq!(s["secrets_redacted"], true, "a viewer reads no secret");
        assert_eq!(
            (&s["id"], &s["tenant_id"], &s["created_by_run_id"], &s["sealed"]),
            (
                &json!(golden),
                &json!(w.contoso),
                &json!(capture_run.id),
                &json!(true)
            )
        );
        assert!(s["sealed_at"].is_string());
        let policy_count = s["policy_count"].as_u64().unwrap();
        assert!(
            policy_count > 20,
            "a demo tenant has 120+ policies: {policy_count}"
        );
        assert_eq!(
            s["gap_count"].as_u64().unwrap() as usize,
            s["gaps"].as_array().unwrap().len()
        );
        let first = &s["policies"][0];
        assert_eq!(
            keys(first),
            BTreeSet::from(["type", "external_id", "name", "evidence", "sha256", "payload"])
        );
        assert_eq!(first["evidence"], "full");
        assert!(first["payload"].is_object() && first["sha256"].is_string());

        // The profile list shows it as its profile's latest snapshot.
        let profiles = get(&w, &w.viewer, &profiles_path(&w)).await;
        let golden_profile = profiles.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["tenant_id"] == json!(w.contoso))
            .unwrap_or_else(|| panic!("{}", profiles.raw));
        assert_eq!(golden_profile["is_default"], true);
        assert_eq!(golden_profile["id"], s["profile_id"]);
        assert_eq!(
            golden_profile["latest_snapshot"],
            json!({"id": golden, "sealed_at": s["sealed_at"], "policy_count": policy_count,
               "gap_count": s["gap_count"]})
        );

        // Paged: every policy exactly once, in (type, external id) order.
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = match &cursor {
                None => format!("{}?limit=25", snapshot_path(&w, &golden)),
                Some(c) => format!("{}?limit=25&cursor={c}", snapshot_path(&w, &golden)),
            };
            let page = get(&w, &w.viewer, &q).await;
            assert_eq!(page.status, 200, "{}", page.raw);
            assert_eq!(page.json["id"], json!(golden));
            // The demo tenant's planted secrets: redacted for a viewer.
            for secret in [
                opsledger_providers::demo::WIFI_PRE_SHARED_KEY,
                opsledger_providers::demo::OMA_ADMIN_PASSWORD,
            ] {
                assert!(!page.raw.contains(secret), "a viewer read {secret}");
            }
            let policies = page.json["policies"].as_array().unwrap();
            assert!(policies.len() <= 25);
            seen.extend(policies.iter().map(|p| {
                (
                    p["type"].as_str().unwrap().to_owned(),
                    p["external_id"].as_str().unwrap().to_owned(),
                )
            }));
            pages += 1;
            match page.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert!(pages >= 2, "{pages}");
        // An admin reads the snapshot as captured, secrets included.
        let mut clear = String::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                None => format!("{}?limit=100", snapshot_path(&w, &golden)),
                Some(c) => format!("{}?limit=100&cursor={c}", snapshot_path(&w, &golden)),
            };
            let page = get(&w, &w.admin, &q).await;
            assert_eq!(page.json["secrets_redacted"], false);
            clear.push_str(&page.raw);
            match page.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert!(clear.contains(opsledger_providers::demo::WIFI_PRE_SHARED_KEY));
        assert_eq!(seen.len() as u64, policy_count);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen, sorted, "in order, each once");
        // The default page is all of them here (fewer than 200).
        if policy_count <= 200 {
            assert_eq!(s["policies"].as_array().unwrap().len() as u64, policy_count);
        }
        // Strict queries.
        for (q, code) in [
            ("?cursor=zz", "invalid_cursor"),
            ("?cursor=", "invalid_cursor"),
            ("?cursor=2f61", "invalid_cursor"),
            ("?limit=0", "invalid_query"),
            ("?limit=201", "invalid_query"),
            ("?page=2", "invalid_query"),
        ] {
            let a = get(&w, &w.viewer, &format!("{}{q}", snapshot_path(&w, &golden))).await;
            assert_eq!((a.status, a.code()), (400, Some(code)), "{q}: {}", a.raw);
        }
        let a = get(&w, &w.viewer, &snapshot_path(&w, "nope")).await;
        assert_eq!((a.status, a.code()), (400, Some("invalid_id")));

        // Hidden, foreign and missing snapshots: one 404.
        let hidden = get(&w, &w.restricted, &snapshot_path(&w, &golden)).await;
        let foreign = get(&w, &w.admin, &snapshot_path(&w, &foreign_snapshot)).await;
        let nowhere = get(&w, &w.admin, &snapshot_path(&w, MISSING)).await;
        assert_eq!(
            (nowhere.status, nowhere.code()),
            (404, Some("baseline_snapshot_not_found"))
        );
        assert_eq!(hidden.raw, nowhere.raw, "no existence leak");
        assert_eq!(foreign.raw, nowhere.raw, "no existence leak");
        assert_eq!(
            get(&w, &w.outsider, &snapshot_path(&w, &golden)).await.status,
            404
        );
        // The restricted member's profile list hides Contoso's profile.
        let mine = get(&w, &w.restricted, &profiles_path(&w)).await;
        assert!(
            mine.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["tenant_id"] == json!(w.fabrikam)),
            "{}",
            mine.raw
        );

        // ---- Findings of the drifted compare.
        let all = get(&w, &w.viewer, &findings_path(&w, &drift_run)).await;
        assert_eq!(all.status, 200, "{}", all.raw);
        assert_eq!(
            keys(&all.json),
            BTreeSet::from(["run_id", "secrets_redacted", "compare", "items", "next_cursor"])
        );
        assert_eq!(all.json["run_id"], json!(drift_run));
        let compare = &all.json["compare"];
        assert_eq!(
            keys(compare),
            BTreeSet::from([
                "baseline_snapshot_id",
                "backup_set_id",
                "findings",
                "recorded_at",
                "summary"
            ])
        );
        assert_eq!(compare["baseline_snapshot_id"], json!(golden));
        assert_eq!(compare["backup_set_id"], Value::Null);
        let total = compare["findings"].as_u64().unwrap();
        assert!(total > 10, "two demo tenants differ: {}", all.raw);
        let item = &all.json["items"][0];
        assert_eq!(
            keys(item),
            BTreeSet::from([
                "kind",
                "policy_type",
                "policy_name",
                "baseline_external_id",
                "current_external_id",
                "changes"
            ])
        );
        let kinds: BTreeSet<&str> = all.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.is_subset(&BTreeSet::from(["missing", "unexpected", "changed"])),
            "{kinds:?}"
        );
        for f in all.json["items"].as_array().unwrap() {
            for c in f["changes"].as_array().unwrap() {
                assert_eq!(keys(c), BTreeSet::from(["path", "baseline", "current"]));
            }
        }
        // Paged by position: each finding once, as in the whole list.
        // Pages of the default size (200) hold the same list.
        let mut whole: Vec<Value> = all.json["items"].as_array().unwrap().clone();
        assert_eq!(whole.len() as u64, total.min(200));
        if total > 200 {
            assert_eq!(all.json["next_cursor"], "199");
            let rest = get(
                &w,
                &w.viewer,
                &format!("{}?cursor=199", findings_path(&w, &drift_run)),
            )
            .await;
            assert_eq!(rest.status, 200, "{}", rest.raw);
            whole.extend(rest.json["items"].as_array().unwrap().iter().cloned());
            if total <= 400 {
                assert_eq!(rest.json["next_cursor"], Value::Null);
            }
        } else {
            assert_eq!(all.json["next_cursor"], Value::Null, "a full list ends");
        }
        let mut paged: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = match &cursor {
                None => format!("{}?limit=7", findings_path(&w, &drift_run)),
                Some(c) => format!("{}?cursor={c}&limit=7", findings_path(&w, &drift_run)),
            };
            let page = get(&w, &w.restricted, &q).await;
            assert_eq!(page.status, 200, "{}", page.raw);
            assert_eq!(page.json["compare"], *compare);
            let items = page.json["items"].as_array().unwrap();
            assert!(!items.is_empty(), "no empty page: {}", page.raw);
            paged.extend(items.iter().cloned());
            pages += 1;
            match page.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert!(pages >= 2);
        assert_eq!(paged.len() as u64, total);
        if total <= 400 {
            assert_eq!(paged, whole);
        }
        for (q, code) in [
            ("?cursor=abc", "invalid_cursor"),
            ("?cursor=-1", "invalid_cursor"),
            ("?limit=0", "invalid_query"),
            ("?limit=201", "invalid_query"),
            ("?limit=x", "invalid_query"),
            ("?kind=missing", "invalid_query"),
        ] {
            let a = get(&w, &w.viewer, &format!("{}{q}", findings_path(&w, &drift_run))).await;
            assert_eq!((a.status, a.code()), (400, Some(code)), "{q}: {}", a.raw);
        }

        // The compare with itself: recorded, whatever it found.
        let same = get(&w, &w.viewer, &findings_path(&w, &same_run)).await;
        assert_eq!(same.status, 200, "{}", same.raw);
        assert_eq!(
            same.json["items"].as_array().unwrap().len() as u64,
            same.json["compare"]["findings"].as_u64().unwrap()
        );
        // A run of a tenant the member cannot see, another workspace's view,
        // and a run that exists nowhere: the same 404 as the run itself.
        let hidden = get(&w, &w.restricted, &findings_path(&w, &same_run)).await;
        let nowhere = get(&w, &w.viewer, &findings_path(&w, MISSING)).await;
        assert_eq!((nowhere.status, nowhere.code()), (404, Some("not_found")));
        assert_eq!(hidden.raw, nowhere.raw, "no existence leak");
        let run_itself = get(
            &w,
            &w.restricted,
            &format!("/api/v1/workspaces/{}/operations/{same_run}", w.ws),
        )
        .await;
        assert_eq!(run_itself.raw, nowhere.raw, "as GET …/operations/{{id}} decides");
        assert_eq!(
            get(&w, &w.outsider, &findings_path(&w, &drift_run)).await.status,
            404
        );
        let a = get(&w, &w.viewer, &findings_path(&w, "nope")).await;
        assert_eq!((a.status, a.code()), (400, Some("invalid_id")));
        // Another run type has no findings.
        let a = get(&w, &w.viewer, &findings_path(&w, &capture_run.id)).await;
        assert_eq!(
            (a.status, a.code()),
            (404, Some("findings_not_found")),
            "{}",
            a.raw
        );
        assert!(
            a.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("baseline.capture")
        );
        // A compare not yet recorded: no compare, no findings.
        let queued = create_run(
            &store,
            &w.ws,
            &w.fabrikam,
            RunType::BaselineCompare,
            json!({"profile": golden_profile["name"]}),
        )
        .await;
        let a = get(&w, &w.viewer, &findings_path(&w, &queued)).await;
        assert_eq!(a.status, 200, "{}", a.raw);
        assert_eq!(
            a.json,
            json!({"run_id": queued, "secrets_redacted": true, "compare": null, "items": [], "next_cursor": null})
        );
    }
);

both_backends!(baseline_starts_check_what_they_name, |store: Store| async move {
    let w = world(store.clone()).await;
    let (golden, _) = capture(&store, &w.ws, &w.contoso).await;
    let (foreign_snapshot, _) = capture(&store, &w.other_ws, &w.foreign_tenant).await;
    let golden_profile = store
        .default_baseline_profile(&w.contoso)
        .await
        .unwrap()
        .unwrap()
        .name;
    store
        .create_baseline_profile(&w.ws, "Fabrikam pilot", &w.fabrikam, None, "user:x")
        .await
        .unwrap();
    store
        .create_baseline_profile(&w.other_ws, "Woodgrove gold", &w.foreign_tenant, None, "user:x")
        .await
        .unwrap();
    // A backup set of Contoso, written by real runs.
    let sync = create_run(&store, &w.ws, &w.contoso, RunType::InventorySync, json!({})).await;
    run_to_end(&store, &[&sync]).await;
    let backup = create_run(
        &store,
        &w.ws,
        &w.contoso,
        RunType::BackupSetAddPolicies,
        json!({}),
    )
    .await;
    let backup = run_to_end(&store, &[&backup]).await.pop().unwrap();
    assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
    let set = backup.context["backup_set"]["id"].as_str().unwrap().to_owned();

    let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
    let start = |token: String, t: &'static str, tenant: String, params: Value| {
        let (w, ops) = (&w, ops.clone());
        async move {
            post(
                w,
                &token,
                &ops,
                json!({"type": t, "tenant_id": tenant, "params": params}),
            )
            .await
        }
    };
    let before = all_runs(&store, &w.ws).await;

    // ---- baseline.capture: a profile that exists captures the run's tenant
    // (a new name is made by the capture itself: INTERFACE.md).
    let cases: Vec<(&String, &String, Value, u16, &str)> = vec![
        (
            &w.restricted,
            &w.fabrikam,
            json!({"profile": golden_profile}),
            400,
            "profile_other_tenant",
        ),
        (
            &w.admin,
            &w.fabrikam,
            json!({"profile": golden_profile}),
            400,
            "profile_other_tenant",
        ),
        (
            &w.admin,
            &w.contoso,
            json!({"profile": "Fabrikam pilot"}),
            400,
            "profile_other_tenant",
        ),
        (
            &w.operator,
            &w.contoso,
            json!({"profile": golden_profile}),
            403,
            "forbidden",
        ),
        (
            &w.admin,
            &w.contoso,
            json!({"profile": ""}),
            400,
            "invalid_params",
        ),
    ];
    for (token, tenant, params, status, code) in cases {
        let a = start(token.clone(), "baseline.capture", tenant.clone(), params.clone()).await;
        assert_eq!((a.status, a.code()), (status, Some(code)), "{params}: {}", a.raw);
    }

    // ---- baseline.compare: the named baseline exists for the caller.
    let cases: Vec<(&String, Value, u16, &str)> = vec![
        (
            &w.admin,
            json!({"baseline_snapshot_id": MISSING}),
            404,
            "baseline_snapshot_not_found",
        ),
        (
            &w.admin,
            json!({"baseline_snapshot_id": foreign_snapshot}),
            404,
            "baseline_snapshot_not_found",
        ),
        (
            &w.restricted,
            json!({"baseline_snapshot_id": golden}),
            404,
            "baseline_snapshot_not_found",
        ),
        (
            &w.admin,
            json!({"backup_set_id": MISSING}),
            404,
            "backup_set_not_found",
        ),
        (
            &w.restricted,
            json!({"backup_set_id": set}),
            404,
            "backup_set_not_found",
        ),
        (&w.admin, json!({"profile": "Nope"}), 404, "profile_not_found"),
        (
            &w.admin,
            json!({"profile": "Woodgrove gold"}),
            404,
            "profile_not_found",
        ),
        (
            &w.restricted,
            json!({"profile": golden_profile}),
            404,
            "profile_not_found",
        ),
        (
            &w.operator,
            json!({"baseline_snapshot_id": golden}),
            403,
            "forbidden",
        ),
        (
            &w.admin,
            json!({"baseline_snapshot_id": "nope"}),
            400,
            "invalid_params",
        ),
        (
            &w.admin,
            json!({"baseline_snapshot_id": golden, "profile": golden_profile}),
            400,
            "invalid_params",
        ),
    ];
    let mut bodies: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
    for (token, params, status, code) in cases {
        let a = start(
            token.clone(),
            "baseline.compare",
            w.fabrikam.clone(),
            params.clone(),
        )
        .await;
        assert_eq!((a.status, a.code()), (status, Some(code)), "{params}: {}", a.raw);
        if status == 404 {
            bodies.entry(code).or_default().insert(a.raw);
        }
    }
    for (code, raw) in &bodies {
        assert_eq!(raw.len(), 1, "{code}: no existence leak: {raw:?}");
    }
    assert_eq!(
        all_runs(&store, &w.ws).await,
        before,
        "no refused start created a run"
    );

    // What the caller may see starts: a golden tenant's baseline compares
    // with another tenant, and a capture fills its own tenant's profile.
    for params in [
        json!({"baseline_snapshot_id": golden}),
        json!({"profile": golden_profile}),
        json!({"backup_set_id": set}),
    ] {
        let a = start(
            w.admin.clone(),
            "baseline.compare",
            w.fabrikam.clone(),
            params.clone(),
        )
        .await;
        assert_eq!(a.status, 202, "{params}: {}", a.raw);
        assert_eq!(a.json["type"], "baseline.compare");
    }
    let a = start(
        w.restricted.clone(),
        "baseline.capture",
        w.fabrikam.clone(),
        json!({"profile": "Fabrikam pilot"}),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.raw);
    let a = start(
        w.restricted.clone(),
        "baseline.compare",
        w.fabrikam.clone(),
        json!({"profile": "Fabrikam pilot"}),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.raw);
    assert_eq!(all_runs(&store, &w.ws).await, before + 5);
});
