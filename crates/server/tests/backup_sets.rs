//! `GET …/backup-sets`, `…/backup-sets/{id}` and `…/backup-sets/{id}/export`
//! through the real router, on both databases. The sets are real: folder
//! tenants made from the exports in `testdata/`, inventoried and backed up
//! by `backup_set.add_policies` through the runner.
//!
//! What is proven: the answers' shapes; lists newest first, filtered and
//! paged; restore history only into tenants the caller may see; a set of
//! another workspace, of a hidden tenant and a missing id answer one `404`
//! byte for byte; `401` without a token; strict queries. The export is the
//! set in the folder layout (every item a file of its type's folder, each
//! normalizing to the item's stored hash), and it round-trips: added as a
//! `folder:` tenant and synced, its inventory is the set.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::access::Role;
use opsledger_core::normalize::content_hash;
use opsledger_core::{Outcome, Run, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_providers::{Directory, ProviderSettings};
use opsledger_server::AppState;
use opsledger_store::backup_reads::{ExportItem, PAYLOADS_PER_PAGE, PayloadCursor};
use opsledger_store::{NewRun, Store, Visibility, both_backends, raw_on_pool};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

/// Runs one operation to its end through an in-process runner.
async fn finish(store: &Store, ws: &str, tenant: &str, t: RunType) -> Run {
    let new = NewRun::on_tenant(ws, tenant, t, "test", json!({}));
    let id = store.create_run(new).await.unwrap().into_run().id;
    let registry = opsledger_families::registry(ProviderSettings::default());
    let config = RunnerConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let r = store.get_run(&id).await.unwrap().unwrap();
        if r.is_completed() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    done
}

/// Inventory, then a backup of every policy: the set's id and its run.
async fn backed_up(store: &Store, ws: &str, tenant: &str) -> (String, Run) {
    let sync = finish(store, ws, tenant, RunType::InventorySync).await;
    assert_eq!(sync.outcome, Outcome::Succeeded, "{:?}", sync.failures);
    let backup = finish(store, ws, tenant, RunType::BackupSetAddPolicies).await;
    assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
    let set = backup.context["backup_set"]["id"].as_str().unwrap().to_owned();
    (set, backup)
}

struct World {
    state: AppState,
    ws: String,
    /// Tenants of `ws`: the Conditional Access export and the ACSC one.
    ca: String,
    acsc: String,
    set_ca: String,
    set_acsc: String,
    run_acsc: String,
    /// A set of another workspace.
    foreign_set: String,
    admin: String,
    viewer: String,
    /// An operator restricted to tenant `acsc`.
    restricted: String,
    /// Admin of the other workspace.
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
    let folder = |name: &str| format!("folder:{}", testdata(name).display());
    let ca = store
        .create_tenant(&ws, "ca", &folder("ca-baseline"))
        .await
        .unwrap()
        .id;
    let acsc = store
        .create_tenant(&ws, "acsc", &folder("acsc-intune-hardening"))
        .await
        .unwrap()
        .id;
    let o = store
        .create_tenant(&other, "woodgrove", &folder("acsc-intune-hardening"))
        .await
        .unwrap()
        .id;
    let (set_ca, _) = backed_up(&store, &ws, &ca).await;
    let (set_acsc, run_acsc) = backed_up(&store, &ws, &acsc).await;
    let (foreign_set, _) = backed_up(&store, &other, &o).await;
    let admin = user(&store, &ws, "admin@t", Role::Admin).await;
    let viewer = user(&store, &ws, "viewer@t", Role::Viewer).await;
    let outsider = user(&store, &other, "outsider@t", Role::Admin).await;
    let restricted_id = store.upsert_user("restricted@t", "unused").await.unwrap();
    store
        .add_member(&ws, &restricted_id, Role::Operator, std::slice::from_ref(&acsc))
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
            // Folders under the temporary directory may be added over the API.
            providers: ProviderSettings {
                folder_roots: Some(vec![std::env::temp_dir()]),
                ..Default::default()
            },
        },
        ws,
        ca,
        acsc,
        set_ca,
        set_acsc,
        run_acsc: run_acsc.id,
        foreign_set,
        admin,
        viewer,
        restricted,
        outsider,
    }
}

struct Answer {
    status: u16,
    json: Value,
    raw: Vec<u8>,
    headers: axum::http::HeaderMap,
}

/// One request through the real router (edge layers included).
async fn call(w: &World, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&b).unwrap())
        }
        None => Body::empty(),
    };
    let res = opsledger_server::router(w.state.clone())
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let raw = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    if status >= 400 {
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(ctype.as_deref(), Some("application/json"), "{status}");
    }
    Answer {
        status,
        json: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
        headers,
    }
}

async fn get(w: &World, token: &str, path: &str) -> Answer {
    call(w, Some(token), "GET", path, None).await
}

fn ids(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// Every item of a set with its payload, read from the store.
async fn payloads(store: &Store, ws: &str, set: &str) -> Vec<ExportItem> {
    let vis = Visibility {
        workspace_id: ws.to_owned(),
        tenants: None,
    };
    let mut out = Vec::new();
    let mut after: Option<PayloadCursor> = None;
    loop {
        let page = store
            .visible_backup_set_payloads(&vis, set, after.as_ref(), PAYLOADS_PER_PAGE)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        out.extend(page);
    }
    out
}

/// `(policy_type, external_id)` → `(display_name, payload, payload_sha256)` of a tenant's inventory.
async fn inventory(store: &Store, tenant: &str) -> BTreeMap<(String, String), (String, Value, String)> {
    let rows: Vec<(String, String, String, String, String)> = raw_on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT policy_type, external_id, display_name, payload, payload_sha256 \
             FROM inventory_items WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(pool)
        .await
        .unwrap()
    });
    rows.into_iter()
        .map(|(t, id, name, payload, sha)| ((t, id), (name, serde_json::from_str(&payload).unwrap(), sha)))
        .collect()
}

both_backends!(
    sets_items_and_restore_history_through_the_api,
    |store: Store| async move {
        let w = world(store.clone()).await;
        let sets = format!("/api/v1/workspaces/{}/backup-sets", w.ws);

        // The list: newest first, with what a set is.
        let list = get(&w, &w.viewer, &sets).await;
        assert_eq!(list.status, 200, "{}", list.json);
        assert_eq!(ids(&list.json), [w.set_acsc.as_str(), w.set_ca.as_str()]);
        assert_eq!(list.json["next_cursor"], Value::Null);
        let acsc = &list.json["items"][0];
        assert_eq!(
            keys(acsc),
            BTreeSet::from([
                "id",
                "tenant_id",
                "name",
                "created_at",
                "created_by_run_id",
                "item_count",
                "complete",
                "has_directory"
            ])
        );
        assert_eq!(
            (
                &acsc["tenant_id"],
                &acsc["created_by_run_id"],
                &acsc["item_count"],
                &acsc["complete"],
                &acsc["has_directory"]
            ),
            (
                &json!(w.acsc),
                &json!(w.run_acsc),
                &json!(7),
                &json!(true),
                &json!(true)
            )
        );
        assert!(acsc["name"].as_str().unwrap().starts_with("Backup "));
        assert!(chrono::DateTime::parse_from_rfc3339(acsc["created_at"].as_str().unwrap()).is_ok());
        assert_eq!(list.json["items"][1]["item_count"], 39);
        // Filtered and paged.
        let of_ca = get(&w, &w.viewer, &format!("{sets}?tenant_id={}", w.ca)).await;
        assert_eq!(ids(&of_ca.json), [w.set_ca.as_str()]);
        let first = get(&w, &w.viewer, &format!("{sets}?limit=1")).await;
        assert_eq!(ids(&first.json), [w.set_acsc.as_str()]);
        assert_eq!(first.json["next_cursor"], json!(w.set_acsc));
        let second = get(&w, &w.viewer, &format!("{sets}?limit=1&cursor={}", w.set_acsc)).await;
        assert_eq!(ids(&second.json), [w.set_ca.as_str()]);
        assert_eq!(second.json["next_cursor"], Value::Null);
        // A restricted member lists only their tenant's sets.
        let mine = get(&w, &w.restricted, &sets).await;
        assert_eq!(ids(&mine.json), [w.set_acsc.as_str()]);
        let theirs = get(&w, &w.restricted, &format!("{sets}?tenant_id={}", w.ca)).await;
        assert_eq!((theirs.status, ids(&theirs.json).len()), (200, 0));

        // One set with its items, whose hashes are the stored ones.
        let one = get(&w, &w.viewer, &format!("{sets}/{}", w.set_acsc)).await;
        assert_eq!(one.status, 200, "{}", one.json);
        let mut expected_keys = keys(acsc);
        expected_keys.extend(["items", "next_cursor"]);
        assert_eq!(keys(&one.json), expected_keys);
        let items = one.json["items"].as_array().unwrap();
        assert_eq!(items.len(), 7);
        assert_eq!(one.json["next_cursor"], Value::Null);
        let stored: BTreeMap<String, String> = w
            .state
            .store
            .backup_item_hashes(&w.set_acsc)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _, sha)| (id, sha))
            .collect();
        for i in items {
            assert_eq!(
                keys(i),
                BTreeSet::from([
                    "id",
                    "type",
                    "external_id",
                    "name",
                    "sha256",
                    "captured_by_run_id",
                    "captured_at",
                    "refs",
                    "restores",
                    "restores_more"
                ])
            );
            assert_eq!(
                i["sha256"].as_str(),
                stored.get(i["external_id"].as_str().unwrap()).map(String::as_str)
            );
            assert!(
                ["configurationPolicies", "intents"].contains(&i["type"].as_str().unwrap()),
                "{i}"
            );
            assert_eq!(i["captured_by_run_id"], json!(w.run_acsc));
            assert_eq!((&i["restores"], &i["restores_more"]), (&json!([]), &json!(false)));
        }
        // The items after the first.
        let first_item = items[0]["id"].as_str().unwrap().to_owned();
        let rest = get(
            &w,
            &w.viewer,
            &format!("{sets}/{}?cursor={first_item}", w.set_acsc),
        )
        .await;
        assert_eq!(rest.json["items"].as_array().unwrap()[..], items[1..]);

        // Restore history: one restore into each tenant; a restricted member sees only theirs.
        for (unit, target, at) in [
            ("u1", &w.ca, 1_700_000_000_000i64),
            ("u2", &w.acsc, 1_700_000_001_000),
        ] {
            raw_on_pool!(&w.state.store, pool => {
                sqlx::query(
                    "INSERT INTO restore_results (run_id, unit_key, workspace_id, target_tenant_id, backup_set_id, \
                     backup_item_id, result, dry_run, target_id, recorded_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'updated', 0, 'target-1', $7)",
                )
                .bind(&w.run_acsc)
                .bind(unit)
                .bind(&w.ws)
                .bind(target)
                .bind(&w.set_acsc)
                .bind(&first_item)
                .bind(at)
                .execute(pool)
                .await
                .unwrap();
            });
        }
        let one = get(&w, &w.viewer, &format!("{sets}/{}", w.set_acsc)).await;
        assert_eq!(
            one.json["items"][0]["restores"],
            json!([
                {"run_id": w.run_acsc, "target_tenant_id": w.acsc, "result": "updated", "dry_run": false,
                 "target_id": "target-1", "detail": {}, "recorded_at": "2023-11-14T22:13:21.000Z"},
                {"run_id": w.run_acsc, "target_tenant_id": w.ca, "result": "updated", "dry_run": false,
                 "target_id": "target-1", "detail": {}, "recorded_at": "2023-11-14T22:13:20.000Z"},
            ])
        );
        let mine = get(&w, &w.restricted, &format!("{sets}/{}", w.set_acsc)).await;
        let targets: Vec<&Value> = mine.json["items"][0]["restores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["target_tenant_id"])
            .collect();
        assert_eq!(targets, [&json!(w.acsc)]);

        // Not found: another workspace's set, a hidden tenant's, a missing id — one answer.
        let missing = "01900000-0000-7000-8000-000000000001";
        let answers = [
            get(&w, &w.viewer, &format!("{sets}/{}", w.foreign_set)).await,
            get(&w, &w.viewer, &format!("{sets}/{missing}")).await,
            get(&w, &w.restricted, &format!("{sets}/{}", w.set_ca)).await,
            get(&w, &w.viewer, &format!("{sets}/{}/export", w.foreign_set)).await,
            get(&w, &w.viewer, &format!("{sets}/{missing}/export")).await,
            get(&w, &w.restricted, &format!("{sets}/{}/export", w.set_ca)).await,
        ];
        for a in &answers {
            assert_eq!(a.status, 404);
            assert_eq!(a.raw, answers[0].raw, "byte for byte");
        }
        assert_eq!(answers[0].json["error"]["code"], "not_found");
        // An outsider: the workspace itself is not found.
        for path in [
            sets.clone(),
            format!("{sets}/{}", w.set_ca),
            format!("{sets}/{}/export", w.set_ca),
        ] {
            let a = get(&w, &w.outsider, &path).await;
            assert_eq!(
                (a.status, a.json["error"]["code"].as_str()),
                (404, Some("not_found")),
                "{path}"
            );
        }
        // No token, or an unknown one.
        for path in [
            sets.clone(),
            format!("{sets}/{}", w.set_ca),
            format!("{sets}/{}/export", w.set_ca),
        ] {
            let a = call(&w, None, "GET", &path, None).await;
            assert_eq!(
                (a.status, a.json["error"]["code"].as_str()),
                (401, Some("unauthenticated"))
            );
            let a = get(&w, "nope", &path).await;
            assert_eq!(a.status, 401);
        }

        // Bad queries and ids, each refused by its code.
        let set = format!("{sets}/{}", w.set_ca);
        #[rustfmt::skip]
        let cases: Vec<(String, &str)> = vec![
            (format!("{sets}?sort=asc"), "invalid_query"),
            (format!("{sets}?limit=0"), "invalid_query"),
            (format!("{sets}?limit=501"), "invalid_query"),
            (format!("{sets}?limit=x"), "invalid_query"),
            (format!("{sets}?limit=5&limit=6"), "duplicate_query_param"),
            (format!("{sets}?cursor=zzz"), "invalid_cursor"),
            (format!("{sets}?cursor={}", w.set_ca.to_uppercase()), "invalid_cursor"),
            (format!("{sets}?tenant_id=x"), "invalid_query"),
            (format!("{set}?limit=5"), "invalid_query"),
            (format!("{set}?cursor=../x"), "invalid_cursor"),
            (format!("{set}?cursor={first_item}&cursor={first_item}"), "duplicate_query_param"),
            (format!("{set}/export?format=tar"), "invalid_query"),
            (format!("{sets}/123"), "invalid_id"),
            (format!("{sets}/{}", w.set_ca.to_uppercase()), "invalid_id"),
            (format!("{sets}/x'%20OR%201=1/export"), "invalid_id"),
            ("/api/v1/workspaces/nope/backup-sets".to_owned(), "invalid_id"),
        ];
        for (path, code) in cases {
            let a = get(&w, &w.admin, &path).await;
            assert_eq!(
                (a.status, a.json["error"]["code"].as_str()),
                (400, Some(code)),
                "{path}: {}",
                a.json
            );
        }
        let a = call(&w, Some(&w.admin), "POST", &sets, Some(json!({}))).await;
        assert_eq!(
            (a.status, a.json["error"]["code"].as_str()),
            (405, Some("method_not_allowed"))
        );
    }
);

/// Exports `set` (of tenant `source`, `n` items, `groups_expected` directory groups)
/// and checks the archive against the set, then syncs it back as a folder
/// tenant named `name` and checks that tenant's inventory against the set.
async fn export_round_trip(w: &World, set: &str, source: &str, n: usize, groups_expected: usize, name: &str) {
    let store = w.state.store.clone();
    let path = format!("/api/v1/workspaces/{}/backup-sets/{}/export", w.ws, set);
    // The set whole, secrets in clear: an admin's to take, not a viewer's.
    let refused = get(w, &w.viewer, &path).await;
    assert_eq!(
        (refused.status, refused.json["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let a = get(w, &w.admin, &path).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.raw));
    let header = |h: header::HeaderName| a.headers.get(h).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header(header::CONTENT_TYPE), "application/zip");
    assert_eq!(
        header(header::CONTENT_DISPOSITION),
        format!("attachment; filename=\"backup-set-{set}.zip\"")
    );
    assert_eq!(header(header::CONTENT_LENGTH), a.raw.len().to_string());

    // Unzipped: relative path → bytes.
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(a.raw.clone())).unwrap();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for n in 0..archive.len() {
        let mut f = archive.by_index(n).unwrap();
        let name = f.enclosed_name().expect("a path inside the archive");
        let name = name.to_str().unwrap().replace('\\', "/");
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        assert!(files.insert(name.clone(), bytes).is_none(), "{name} twice");
    }
    let lower: BTreeSet<String> = files.keys().map(|k| k.to_lowercase()).collect();
    assert_eq!(lower.len(), files.len(), "two names differ only in case");

    // The set, as stored: its items and its directory.
    let items = payloads(&store, &w.ws, set).await;
    assert_eq!(items.len(), n);
    let vis = Visibility {
        workspace_id: w.ws.clone(),
        tenants: None,
    };
    let directory: Directory = serde_json::from_value(
        store
            .visible_backup_set_directory(&vis, set)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let names = directory.names();

    // Every item is a file of its type's export folder, named after it,
    // normalizing to its stored hash.
    let mut accounted: BTreeSet<&str> = BTreeSet::new();
    for item in &items {
        let folder = opsledger_core::policy_types::lookup(&item.policy_type)
            .unwrap()
            .export_folder;
        let found: Vec<(&String, Value)> = files
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("{folder}/")))
            .map(|(p, b)| (p, serde_json::from_slice::<Value>(b).unwrap()))
            .filter(|(_, v)| v["id"] == json!(item.external_id))
            .collect();
        assert_eq!(found.len(), 1, "{}/{}", item.policy_type, item.external_id);
        let (file, body) = &found[0];
        let stem = opsledger_providers::folder::write::file_stem(&item.display_name);
        assert_eq!(**file, format!("{folder}/{stem}.json"));
        assert_eq!(content_hash(body, &names), item.payload_sha256, "{file}");
        accounted.insert(file.as_str());
    }
    // The directory: a file per group, and the id ↔ name table.
    let groups: Vec<_> = directory
        .entries
        .iter()
        .filter(|e| e.kind == opsledger_providers::DirectoryKind::Group)
        .collect();
    assert_eq!(groups.len(), groups_expected);
    for g in &groups {
        let found: Vec<&String> = files
            .iter()
            .filter(|(p, b)| {
                p.starts_with("Groups/") && serde_json::from_slice::<Value>(b).unwrap()["id"] == json!(g.id)
            })
            .map(|(p, _)| p)
            .collect();
        assert_eq!(found.len(), 1, "{g:?}");
        let body: Value = serde_json::from_slice(&files[found[0]]).unwrap();
        assert_eq!(body["displayName"], json!(g.display_name));
        accounted.insert(found[0].as_str());
    }
    if directory.entries.is_empty() {
        assert!(!files.contains_key("MigrationTable.json"));
    } else {
        let table: Value = serde_json::from_slice(&files["MigrationTable.json"]).unwrap();
        assert_eq!(
            table["Objects"].as_array().unwrap().len(),
            directory.entries.len()
        );
        accounted.insert("MigrationTable.json");
    }
    let extra: Vec<&String> = files.keys().filter(|k| !accounted.contains(k.as_str())).collect();
    assert!(extra.is_empty(), "files that are no part of the set: {extra:?}");

    // The round trip: the export as a folder tenant, added over the API and synced.
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        let dest = dir.path().join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, bytes).unwrap();
    }
    let spec = format!("folder:{}", dir.path().display());
    let tenants = format!("/api/v1/workspaces/{}/tenants", w.ws);
    let added = call(
        w,
        Some(&w.admin),
        "POST",
        &tenants,
        Some(json!({"name": name, "provider": spec})),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.json);
    let restored = added.json["id"].as_str().unwrap().to_owned();
    let sync = finish(&store, &w.ws, &restored, RunType::InventorySync).await;
    assert_eq!(
        sync.outcome,
        Outcome::Succeeded,
        "{:?} {}",
        sync.failures,
        sync.context
    );

    // Its inventory is the set: the same (type, name) pairs, the same
    // content under the folder's own directory, which is the set's.
    let provider = opsledger_providers::open(&spec, &restored, name, &Default::default()).unwrap();
    let folder_directory = provider.directory().await.unwrap();
    let by_id = |d: &Directory| -> BTreeSet<(String, String, String)> {
        d.entries
            .iter()
            .map(|e| (e.kind.as_str().to_owned(), e.id.clone(), e.display_name.clone()))
            .collect()
    };
    assert_eq!(by_id(&folder_directory), by_id(&directory));
    let folder_names = folder_directory.names();
    let got = inventory(&store, &restored).await;
    let pairs = |it: &mut dyn Iterator<Item = (String, String)>| it.collect::<BTreeSet<_>>();
    assert_eq!(
        pairs(&mut got.iter().map(|((t, _), (n, _, _))| (t.clone(), n.clone()))),
        pairs(
            &mut items
                .iter()
                .map(|i| (i.policy_type.clone(), i.display_name.clone()))
        )
    );
    assert_eq!(got.len(), items.len());
    for item in &items {
        let (name, payload, _) = &got[&(item.policy_type.clone(), item.external_id.clone())];
        assert_eq!(name, &item.display_name);
        assert_eq!(
            content_hash(payload, &folder_names),
            item.payload_sha256,
            "{name}"
        );
    }
    // And it is the source tenant's inventory, hash for hash.
    let source = inventory(&store, source).await;
    let hashes =
        |inv: &BTreeMap<(String, String), (String, Value, String)>| -> BTreeMap<(String, String), String> {
            inv.iter()
                .map(|(k, (_, _, sha))| (k.clone(), sha.clone()))
                .collect()
        };
    assert_eq!(hashes(&got), hashes(&source));
}

both_backends!(
    the_export_is_the_set_in_the_folder_layout_and_syncs_back_equal,
    |store: Store| async move {
        let w = world(store).await;
        // Conditional Access: policies referring to groups and named locations by id.
        export_round_trip(&w, &w.set_ca, &w.ca, 39, 34, "restored-ca").await;
        // Settings catalog and endpoint security: deep settings, no directory objects.
        export_round_trip(&w, &w.set_acsc, &w.acsc, 7, 0, "restored-acsc").await;
    }
);
