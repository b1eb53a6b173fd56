//! The API as a hostile caller tries it, on both databases: every bad input
//! on every route is a 4xx JSON error with a precise code and leaves the
//! database exactly as it was; a tenant-restricted member sees and acts only
//! on their tenants; a foreign run id answers exactly like one that exists
//! nowhere.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::RunType;
use opsledger_core::access::Role;
use opsledger_server::AppState;
use opsledger_store::{NewRun, Store, both_backends, raw_on_pool};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct World {
    state: AppState,
    ws: String,
    tenant_a: String,
    tenant_b: String,
    run_a: String,
    run_b: String,
    foreign_run: String,
    admin: String,
    operator: String,
    viewer: String,
    restricted: String,
    outsider: String,
}

async fn user(store: &Store, ws: &str, email: &str, role: Role) -> String {
    let id = store.upsert_user(email, "unused").await.unwrap();
    store.set_membership(ws, &id, role).await.unwrap();
    store.issue_token(&id, "test").await.unwrap()
}

async fn world(store: Store) -> World {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let other = store.create_workspace("other").await.unwrap().id;
    let tenant_a = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let tenant_b = store
        .create_tenant(&ws, "fabrikam", "demo:healthy")
        .await
        .unwrap()
        .id;
    let tenant_o = store
        .create_tenant(&other, "woodgrove", "demo:healthy")
        .await
        .unwrap()
        .id;
    let run = |ws: &str, t: &str| NewRun::on_tenant(ws, t, RunType::InventorySync, "test", json!({}));
    let run_a = store.create_run(run(&ws, &tenant_a)).await.unwrap().into_run().id;
    let run_b = store.create_run(run(&ws, &tenant_b)).await.unwrap().into_run().id;
    let foreign_run = store
        .create_run(run(&other, &tenant_o))
        .await
        .unwrap()
        .into_run()
        .id;
    let admin = user(&store, &ws, "admin@t", Role::Admin).await;
    let operator = user(&store, &ws, "operator@t", Role::Operator).await;
    let viewer = user(&store, &ws, "viewer@t", Role::Viewer).await;
    let outsider = user(&store, &other, "outsider@t", Role::Admin).await;
    let restricted_id = store.upsert_user("restricted@t", "unused").await.unwrap();
    store
        .add_member(
            &ws,
            &restricted_id,
            Role::Operator,
            std::slice::from_ref(&tenant_a),
        )
        .await
        .unwrap();
    let restricted = store.issue_token(&restricted_id, "test").await.unwrap();
    World {
        state: AppState {
            files: None,
            evidence_key: None,
            store,
            registry: opsledger_families::registry(Default::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            // As a server configured with OPSLEDGER_FOLDER_ROOTS: only
            // folders under the temporary directory may be added.
            providers: opsledger_providers::ProviderSettings {
                folder_roots: Some(vec![std::env::temp_dir()]),
                ..Default::default()
            },
        },
        ws,
        tenant_a,
        tenant_b,
        run_a,
        run_b,
        foreign_run,
        admin,
        operator,
        viewer,
        restricted,
        outsider,
    }
}

/// One request through the real router (edge layers included).
async fn call(
    w: &World,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Body::from(body.unwrap_or_default())).unwrap();
    let res = opsledger_server::router(w.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    if status >= 400 {
        assert!(ctype.starts_with("application/json"), "{status} {ctype}: {raw}");
    }
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), raw)
}

/// Every row of every table, as text, so "unchanged" means unchanged.
async fn snapshot(store: &Store) -> Vec<String> {
    let tables = [
        "workspaces",
        "tenants",
        "users",
        "memberships",
        "membership_tenants",
        "api_tokens",
        "operation_runs",
        "run_units",
        "run_failures",
        "jobs",
        "inventory_items",
        "backup_sets",
        "backup_items",
    ];
    let mut out = Vec::new();
    for t in tables {
        let rows: Vec<String> = raw_on_pool!(store, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {t}")))
                .fetch_all(pool)
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    use sqlx::Row;
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .map(|v| format!("{v:?}"))
                                .or_else(|_| r.try_get::<Option<i64>, _>(i).map(|v| format!("{v:?}")))
                                .unwrap_or_else(|_| "?".into())
                        })
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect()
        });
        let mut rows = rows;
        rows.sort();
        out.push(format!("{t}: {}", rows.join("\n")));
    }
    out
}

both_backends!(
    bad_input_is_refused_precisely_and_changes_nothing,
    |store: Store| async move {
        let w = world(store.clone()).await;
        let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
        let run_a = format!("{ops}/{}", w.run_a);
        let start = |body: Value| Some(serde_json::to_vec(&body).unwrap());
        let sync = |params: Value| {
            start(json!({"type": "inventory.sync", "tenant_id": w.tenant_a, "params": params}))
        };
        let backup = |params: Value| {
            start(json!({"type": "backup_set.add_policies", "tenant_id": w.tenant_a, "params": params}))
        };
        let ids: Vec<String> = (0..10_001)
            .map(|i| format!("deviceConfigurations/p{i}"))
            .collect();
        let random = "01900000-0000-7000-8000-000000000000";
        let before = snapshot(&store).await;
        assert!(
            before.iter().all(|t| !t.contains('?')),
            "every column read: {before:?}"
        );
        assert!(
            before
                .iter()
                .any(|t| t.starts_with("operation_runs: ") && t.len() > 100)
        );

        /// (name, method, path, body, expected status, expected code)
        type Case<'a> = (&'a str, &'a str, String, Option<Vec<u8>>, u16, &'a str);
        #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // Start: the body.
        ("malformed json", "POST", ops.clone(), Some(b"{".to_vec()), 400, "invalid_body"),
        ("not an object", "POST", ops.clone(), Some(b"[1]".to_vec()), 400, "invalid_body"),
        ("unknown field", "POST", ops.clone(), start(json!({"type": "inventory.sync", "tenant_id": w.tenant_a, "summary_counts": {"total": 1}})), 400, "invalid_body"),
        ("wrong type of type", "POST", ops.clone(), start(json!({"type": 5, "tenant_id": w.tenant_a})), 400, "invalid_body"),
        ("unknown operation type", "POST", ops.clone(), start(json!({"type": "inventory.synk", "tenant_id": w.tenant_a})), 400, "unknown_operation_type"),
        ("tenant missing", "POST", ops.clone(), start(json!({"type": "inventory.sync"})), 400, "tenant_required"),
        ("tenant not a uuid", "POST", ops.clone(), start(json!({"type": "inventory.sync", "tenant_id": "x' OR 1=1"})), 400, "invalid_id"),
        ("tenant unknown", "POST", ops.clone(), start(json!({"type": "inventory.sync", "tenant_id": random})), 404, "not_found"),
        ("params not an object", "POST", ops.clone(), sync(json!("all")), 400, "invalid_params"),
        ("unknown param", "POST", ops.clone(), sync(json!({"processed": 3})), 400, "unknown_param"),
        ("empty selection", "POST", ops.clone(), sync(json!({"policy_types": []})), 400, "empty_selection"),
        ("unknown policy type", "POST", ops.clone(), sync(json!({"policy_types": ["deviceConfigurationz"]})), 400, "invalid_params"),
        ("case-variant policy type", "POST", ops.clone(), sync(json!({"policy_types": ["DeviceConfigurations"]})), 400, "invalid_params"),
        ("policy type not a string", "POST", ops.clone(), sync(json!({"policy_types": [7]})), 400, "invalid_params"),
        ("NUL in an id", "POST", ops.clone(), backup(json!({"policy_ids": ["deviceConfigurations/a\u{0}b"]})), 400, "invalid_params"),
        ("whitespace id", "POST", ops.clone(), backup(json!({"policy_ids": ["deviceConfigurations/ "]})), 400, "invalid_params"),
        ("RTL override in an id", "POST", ops.clone(), backup(json!({"policy_ids": ["deviceConfigurations/abc\u{202e}"]})), 400, "invalid_params"),
        ("case-variant ids", "POST", ops.clone(), backup(json!({"policy_ids": ["namedLocations/ab", "namedLocations/AB"]})), 400, "invalid_params"),
        ("id too long", "POST", ops.clone(), backup(json!({"policy_ids": [format!("namedLocations/{}", "a".repeat(129))]})), 400, "invalid_params"),
        ("too many ids", "POST", ops.clone(), backup(json!({ "policy_ids": ids })), 400, "param_limit_exceeded"),
        ("empty id list", "POST", ops.clone(), backup(json!({"policy_ids": []})), 400, "empty_selection"),
        ("body over 1 MiB", "POST", ops.clone(), sync(json!({"policy_types": ["x".repeat(2 << 20)]})), 413, "body_too_large"),
        ("workspace not a uuid", "POST", "/api/v1/workspaces/nope/operations".into(), sync(json!({})), 400, "invalid_id"),
        ("workspace-level start by a tenant route", "POST", ops.clone(), start(json!({"type": "workspace.inventory.sync_all", "tenant_id": w.tenant_a})), 400, "tenant_not_allowed"),
        // List: the query.
        ("garbage cursor", "GET", format!("{ops}?cursor=zzz"), None, 400, "invalid_cursor"),
        ("repeated key", "GET", format!("{ops}?limit=5&limit=6"), None, 400, "duplicate_query_param"),
        ("limit zero", "GET", format!("{ops}?limit=0"), None, 400, "invalid_query"),
        ("limit huge", "GET", format!("{ops}?limit=99999999999"), None, 400, "invalid_query"),
        ("unknown status", "GET", format!("{ops}?status=done"), None, 400, "invalid_query"),
        ("unknown key", "GET", format!("{ops}?sort=asc"), None, 400, "invalid_query"),
        ("tenant filter not a uuid", "GET", format!("{ops}?tenant_id=x"), None, 400, "invalid_query"),
        ("time not rfc 3339", "GET", format!("{ops}?created_after=yesterday"), None, 400, "invalid_query"),
        // A run: its id.
        ("run id not a uuid", "GET", format!("{ops}/123"), None, 400, "invalid_id"),
        ("run id in capitals", "GET", format!("{ops}/{}", w.run_a.to_uppercase()), None, 400, "invalid_id"),
        ("run id unknown", "GET", format!("{ops}/{random}"), None, 404, "not_found"),
        ("run of another workspace", "GET", format!("{ops}/{}", w.foreign_run), None, 404, "not_found"),
        ("cancel, id not a uuid", "POST", format!("{ops}/x/cancel"), Some(b"{}".to_vec()), 400, "invalid_id"),
        ("cancel, unknown", "POST", format!("{ops}/{random}/cancel"), Some(b"{}".to_vec()), 404, "not_found"),
        // Force-close: the body and the rule.
        ("force-close malformed", "POST", format!("{run_a}/force-close"), Some(b"{\"outcome\":".to_vec()), 400, "invalid_body"),
        ("force-close unknown field", "POST", format!("{run_a}/force-close"), start(json!({"outcome": "failed", "reason": "x", "by": "me"})), 400, "invalid_body"),
        ("force-close pending", "POST", format!("{run_a}/force-close"), start(json!({"outcome": "pending", "reason": "x"})), 400, "invalid_outcome"),
        ("force-close no reason", "POST", format!("{run_a}/force-close"), start(json!({"outcome": "failed", "reason": "  "})), 400, "reason_required"),
        ("force-close long reason", "POST", format!("{run_a}/force-close"), start(json!({"outcome": "failed", "reason": "r".repeat(1001)})), 400, "reason_too_long"),
        ("force-close success without proof", "POST", format!("{run_a}/force-close"), start(json!({"outcome": "succeeded", "reason": "trust me"})), 409, "no_proof_for_outcome"),
        // Routing.
        ("method not allowed", "DELETE", ops.clone(), None, 405, "method_not_allowed"),
        ("no such route", "GET", "/api/v1/nothing".into(), None, 404, "not_found"),
    ];
        for (name, method, path, body, status, code) in cases {
            let (got, body, raw) = call(&w, &w.admin, method, &path, body).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{name}: {raw}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty() && m.len() < 2000),
                "{name}: {raw}"
            );
        }
        assert_eq!(snapshot(&store).await, before, "bad input changed the database");
    }
);

both_backends!(
    a_foreign_run_id_answers_like_a_missing_one,
    |store: Store| async move {
        let w = world(store).await;
        let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
        let foreign = call(&w, &w.viewer, "GET", &format!("{ops}/{}", w.foreign_run), None).await;
        let missing = call(
            &w,
            &w.viewer,
            "GET",
            &format!("{ops}/01900000-0000-7000-8000-000000000001"),
            None,
        )
        .await;
        assert_eq!(foreign.0, 404);
        assert_eq!(foreign.2, missing.2, "same answer, byte for byte");
        // The outsider's own run, through their workspace, is theirs; ours is not.
        let other_ops = format!(
            "/api/v1/workspaces/{}/operations",
            w.state
                .store
                .get_run(&w.foreign_run)
                .await
                .unwrap()
                .unwrap()
                .workspace_id
        );
        assert_eq!(
            call(
                &w,
                &w.outsider,
                "GET",
                &format!("{other_ops}/{}", w.foreign_run),
                None
            )
            .await
            .0,
            200
        );
        assert_eq!(
            call(&w, &w.outsider, "GET", &format!("{ops}/{}", w.run_a), None)
                .await
                .0,
            404
        );
    }
);

both_backends!(
    a_restricted_member_sees_and_acts_only_on_their_tenants,
    |store: Store| async move {
        let w = world(store.clone()).await;
        let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
        let r = &w.restricted;
        // Lists hold only tenant A's runs, even when asked for tenant B.
        let (status, list, _) = call(&w, r, "GET", &ops, None).await;
        assert_eq!(status, 200);
        let ids: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [w.run_a.as_str()]);
        let (_, list, _) = call(&w, r, "GET", &format!("{ops}?tenant_id={}", w.tenant_b), None).await;
        assert_eq!(list["items"], json!([]));
        // Details, cancels and starts on tenant B are 404; on A they work.
        assert_eq!(
            call(&w, r, "GET", &format!("{ops}/{}", w.run_b), None).await.0,
            404
        );
        assert_eq!(
            call(
                &w,
                r,
                "POST",
                &format!("{ops}/{}/cancel", w.run_b),
                Some(b"{}".to_vec())
            )
            .await
            .0,
            404
        );
        let start_b =
            serde_json::to_vec(&json!({"type": "backup_set.add_policies", "tenant_id": w.tenant_b})).unwrap();
        assert_eq!(call(&w, r, "POST", &ops, Some(start_b)).await.0, 404);
        assert_eq!(
            call(&w, r, "GET", &format!("{ops}/{}", w.run_a), None).await.0,
            200
        );
        let start_a =
            serde_json::to_vec(&json!({"type": "backup_set.add_policies", "tenant_id": w.tenant_a})).unwrap();
        assert_eq!(call(&w, r, "POST", &ops, Some(start_a)).await.0, 202);
        // Workspace-level runs are not theirs to start.
        let all = serde_json::to_vec(&json!({"type": "workspace.inventory.sync_all"})).unwrap();
        let (status, body, _) = call(&w, r, "POST", &ops, Some(all)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
        // Run B is untouched; an unrestricted operator still sees both.
        let b = store.get_run(&w.run_b).await.unwrap().unwrap();
        assert!(!b.is_completed());
        let (_, list, _) = call(&w, &w.operator, "GET", &ops, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 3);
    }
);

both_backends!(
    a_start_that_differs_from_the_active_run_is_409_naming_it,
    |store: Store| async move {
        let w = world(store).await;
        let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
        let start = |types: Value| {
            Some(
                serde_json::to_vec(&json!({"type": "backup_set.add_policies", "tenant_id": w.tenant_a, "params": {"policy_ids": types}}))
                    .unwrap(),
            )
        };
        let (status, first, _) =
            call(&w, &w.operator, "POST", &ops, start(json!(["namedLocations/a"]))).await;
        assert_eq!(status, 202, "{first}");
        // The same work again: the active run, 202.
        let (status, again, _) =
            call(&w, &w.operator, "POST", &ops, start(json!(["namedLocations/a"]))).await;
        assert_eq!((status, &again["id"]), (202, &first["id"]));
        // Other work under the same key: refused, naming the active run; nothing created.
        let before = snapshot(&w.state.store).await;
        let (status, err, _) = call(&w, &w.operator, "POST", &ops, start(json!(["namedLocations/b"]))).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (409, Some("active_run_differs")),
            "{err}"
        );
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(first["id"].as_str().unwrap()), "{message}");
        assert_eq!(snapshot(&w.state.store).await, before);
    }
);

both_backends!(
    a_runs_files_are_listed_under_its_access_rules,
    |store: Store| async move {
        use std::io::Write;
        let w = world(store.clone()).await;
        let dir = std::env::temp_dir().join(format!("opsledger-files-{}", w.run_a));
        let files = opsledger_store::files::FileStore::new(&dir).unwrap();
        store.claim_run(&w.run_a).await.unwrap().unwrap();
        store.init_total(&w.run_a, 1).await.unwrap();
        let mut draft = files.begin(&w.run_a, "pack.zip").unwrap();
        draft.write_all(b"zip bytes").unwrap();
        let staged = draft.finish().await.unwrap();
        let unit = opsledger_store::UnitRecord::new("pack", opsledger_core::UnitOutcome::Succeeded)
            .with_artifact(opsledger_store::artifacts::UnitArtifact::File(staged.clone()));
        store.record_units(&w.run_a, &[unit]).await.unwrap();
        let path = format!("/api/v1/workspaces/{}/operations/{}/files", w.ws, w.run_a);
        let (status, body, _) = call(&w, &w.viewer, "GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"items": [{"name": "pack.zip", "unit_key": "pack", "size_bytes": 9, "sha256": staged.sha256}], "next_cursor": null})
        );
        // Outside the workspace or a restricted member's tenants: 404, as for the run.
        assert_eq!(call(&w, &w.outsider, "GET", &path, None).await.0, 404);
        let foreign = format!("/api/v1/workspaces/{}/operations/{}/files", w.ws, w.foreign_run);
        assert_eq!(call(&w, &w.admin, "GET", &foreign, None).await.0, 404);
        for (query, code) in [
            ("?limit=5", "invalid_query"),
            ("?cursor=../x", "invalid_cursor"),
            ("?cursor=a&cursor=b", "duplicate_query_param"),
        ] {
            let (status, err, _) = call(&w, &w.viewer, "GET", &format!("{path}{query}"), None).await;
            assert_eq!(
                (status, err["error"]["code"].as_str()),
                (400, Some(code)),
                "{query}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
);

both_backends!(
    force_close_through_the_api_never_fabricates_success,
    |store: Store| async move {
        let w = world(store).await;
        let close = format!("/api/v1/workspaces/{}/operations/{}/force-close", w.ws, w.run_a);
        let body =
            |o: &str| Some(serde_json::to_vec(&json!({"outcome": o, "reason": "offboarding"})).unwrap());
        assert_eq!(call(&w, &w.operator, "POST", &close, body("failed")).await.0, 403);
        let (status, err, _) = call(&w, &w.admin, "POST", &close, body("partially_succeeded")).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (409, Some("no_proof_for_outcome"))
        );
        let (status, run, raw) = call(&w, &w.admin, "POST", &close, body("blocked")).await;
        assert_eq!(status, 200, "{raw}");
        assert_eq!(run["outcome"], "blocked");
        assert_eq!(run["reconciliation"]["adapter"], "admin_force_close");
        let (status, err, _) = call(&w, &w.admin, "POST", &close, body("failed")).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (409, Some("already_completed"))
        );
    }
);

both_backends!(
    a_list_never_returns_an_unbounded_body,
    |store: Store| async move {
        use opsledger_store::testing::{SeedRuns, seed_runs};
        let w = world(store.clone()).await;
        // 400 runs whose contexts are just under the size a list item carries
        // whole: 500 of them would make a 6 MB page.
        let ids: Vec<String> = (0..500)
            .map(|i| format!("deviceConfigurations/p{i:05}"))
            .collect();
        let context = json!({"params": {"policy_ids": ids}});
        let chars = context.to_string().len();
        assert!(
            chars < opsledger_store::LIST_CONTEXT_MAX_CHARS && chars > 12_000,
            "{chars}"
        );
        seed_runs(
            &store,
            &[SeedRuns {
                block: 7,
                count: 400,
                workspace_id: &w.ws,
                tenant_id: Some(&w.tenant_a),
                run_type: RunType::BackupSetAddPolicies,
                status: opsledger_core::RunStatus::Completed,
                outcome: opsledger_core::Outcome::Failed,
                at: opsledger_store::now_ms() - 3_600_000,
                every_ms: 1,
                context,
            }],
        )
        .await
        .unwrap();
        let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("{ops}?limit=500&cursor={c}"),
                None => format!("{ops}?limit=500"),
            };
            let (status, page, raw) = call(&w, &w.viewer, "GET", &path, None).await;
            assert_eq!(status, 200, "{raw}");
            assert!(
                raw.len() <= opsledger_server::MAX_LIST_BYTES + 64,
                "page of {} bytes",
                raw.len()
            );
            for item in page["items"].as_array().unwrap() {
                assert!(
                    seen.insert(item["id"].as_str().unwrap().to_owned()),
                    "listed twice"
                );
            }
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 402, "every run of the workspace listed once");
        assert!(pages >= 2, "the 6 MB page was cut");
    }
);

both_backends!(
    tenants_are_listed_by_kind_and_added_only_with_a_valid_provider,
    |store: Store| async move {
        let w = world(store).await;
        let path = format!("/api/v1/workspaces/{}/tenants", w.ws);
        let (status, list, raw) = call(&w, &w.viewer, "GET", &path, None).await;
        assert_eq!(status, 200, "{raw}");
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["contoso", "fabrikam"],
            "the other workspace's tenant is not listed"
        );
        assert_eq!(list["items"][0]["provider_kind"], "demo");
        // A member restricted to one tenant sees that one.
        let (_, list, _) = call(&w, &w.restricted, "GET", &path, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["id"], json!(w.tenant_a));
        let (status, _, _) = call(&w, &w.outsider, "GET", &path, None).await;
        assert_eq!(status, 404);

        let before = snapshot(&w.state.store).await;
        let body = |name: &str, provider: &str| {
            Some(
                json!({"name": name, "provider": provider})
                    .to_string()
                    .into_bytes(),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let folder = format!("folder:{}", dir.path().display());
        for (token, name, provider, want, code) in [
            (&w.operator, "x", folder.as_str(), 403, "forbidden"),
            (&w.outsider, "x", folder.as_str(), 404, "not_found"),
            (
                &w.admin,
                "x",
                "folder:/nonexistent/export",
                422,
                "provider_invalid",
            ),
            (&w.admin, "x", "folder:", 422, "provider_invalid"),
            (&w.admin, "x", "demo:nope", 422, "provider_invalid"),
            (&w.admin, "x", "ftp:somewhere", 422, "provider_invalid"),
            (&w.admin, "", folder.as_str(), 400, "invalid_name"),
            (&w.admin, "a\u{7}b", folder.as_str(), 400, "invalid_name"),
            (&w.admin, "contoso", folder.as_str(), 409, "tenant_exists"),
        ] {
            let (status, err, raw) = call(&w, token, "POST", &path, body(name, provider)).await;
            assert_eq!(
                (status, err["error"]["code"].as_str()),
                (want, Some(code)),
                "{name} {provider}: {raw}"
            );
        }
        let (status, err, _) = call(&w, &w.admin, "POST", &path, Some(b"{\"name\":\"x\"}".to_vec())).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("invalid_body"))
        );
        let long = "x".repeat(201);
        let (status, _, _) = call(&w, &w.admin, "POST", &path, body(&long, folder.as_str())).await;
        assert_eq!(status, 400);
        let (_, err, _) = call(
            &w,
            &w.admin,
            "POST",
            &path,
            body("x", "folder:/nonexistent/export"),
        )
        .await;
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/nonexistent/export")
        );
        assert_eq!(
            snapshot(&w.state.store).await,
            before,
            "refused adds change nothing"
        );

        let (status, created, raw) = call(&w, &w.admin, "POST", &path, body("export", folder.as_str())).await;
        assert_eq!(status, 201, "{raw}");
        assert_eq!(created["provider_kind"], "folder");
        assert_eq!(created["name"], "export");
        let (_, list, _) = call(&w, &w.viewer, "GET", &path, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 3);
    }
);

// A hostile review of `POST …/tenants` (what held).
both_backends!(
    hostile_tenant_adds_are_refused_and_change_nothing,
    |store: Store| async move {
        let w = world(store).await;
        let path = format!("/api/v1/workspaces/{}/tenants", w.ws);
        let before = snapshot(&w.state.store).await;
        let file = tempfile::NamedTempFile::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let raw_bodies: Vec<(Vec<u8>, u16, &str)> = vec![
            // Duplicate keys: not "the last one wins".
            (
                format!(r#"{{"name":"x","name":"y","provider":"folder:{d}"}}"#).into_bytes(),
                400,
                "invalid_body",
            ),
            (
                format!(r#"{{"name":"x","provider":"folder:{d}","extra":1}}"#).into_bytes(),
                400,
                "invalid_body",
            ),
            (b"[]".to_vec(), 400, "invalid_body"),
            (b"\xff\xfe".to_vec(), 400, "invalid_body"),
            (
                json!({"name": "x", "provider": format!("folder:{}", file.path().display())})
                    .to_string()
                    .into_bytes(),
                422,
                "provider_invalid",
            ),
            (
                json!({"name": "x", "provider": format!("folder:{d}\u{0}")})
                    .to_string()
                    .into_bytes(),
                422,
                "provider_invalid",
            ),
            (
                json!({"name": "x", "provider": format!("folder:{d}\n")})
                    .to_string()
                    .into_bytes(),
                422,
                "provider_invalid",
            ),
            (
                json!({"name": "x", "provider": format!("folder:{}", "/a".repeat(3000))})
                    .to_string()
                    .into_bytes(),
                422,
                "provider_invalid",
            ),
            (
                json!({"name": "x", "provider": "graph:../../evil"})
                    .to_string()
                    .into_bytes(),
                422,
                "provider_invalid",
            ),
            (
                json!({"name": "x\u{0}", "provider": format!("folder:{d}")})
                    .to_string()
                    .into_bytes(),
                400,
                "invalid_name",
            ),
            (
                json!({"name": "x", "provider": "demo:healthy:99999999999999999999"})
                    .to_string()
                    .into_bytes(),
                422,
                "provider_invalid",
            ),
        ];
        for (body, want, code) in raw_bodies {
            let (status, err, raw) = call(&w, &w.admin, "POST", &path, Some(body.clone())).await;
            assert_eq!(
                (status, err["error"]["code"].as_str()),
                (want, Some(code)),
                "{}: {raw}",
                String::from_utf8_lossy(&body)
            );
            assert!(
                raw.len() < 2000,
                "an error echoes at most a short spec: {}",
                raw.len()
            );
        }
        // A body over the limit: refused before it is read whole.
        let huge = format!(r#"{{"name":"x","provider":"folder:{}"}}"#, "a".repeat(8 << 20));
        let (status, _, raw) = call(&w, &w.admin, "POST", &path, Some(huge.into_bytes())).await;
        assert!(status == 413 || status == 400, "{status} {raw}");
        // The viewer cannot add.
        let (status, _, _) = call(
            &w,
            &w.viewer,
            "POST",
            &path,
            Some(
                json!({"name": "x", "provider": format!("folder:{d}")})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(
            snapshot(&w.state.store).await,
            before,
            "refused adds change nothing"
        );
    }
);

/// A workspace admin is not the server's operator: a folder spec naming the
/// server's own file system (`/`, `/proc`, `/root`, another workspace's
/// export) lets any workspace admin read every JSON file the server can read
/// into its ledger, and a sync of `/` walks the whole file system.
#[tokio::test]
async fn a_folder_spec_cannot_name_the_servers_own_file_system() {
    let db = opsledger_store::testing::sqlite().await;
    let w = world(db.store.clone()).await;
    let path = format!("/api/v1/workspaces/{}/tenants", w.ws);
    for (n, spec) in ["folder:/", "folder:/proc", "folder:/root", "folder:/etc"]
        .iter()
        .enumerate()
    {
        let body = json!({"name": format!("fs{n}"), "provider": spec})
            .to_string()
            .into_bytes();
        let (status, _, raw) = call(&w, &w.admin, "POST", &path, Some(body)).await;
        assert_ne!(status, 201, "{spec} was accepted: {raw}");
    }
}
