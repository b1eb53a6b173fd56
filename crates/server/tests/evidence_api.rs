//! Evidence snapshots through the real router, on both databases:
//! `…/evidence-snapshots/{id}` (the snapshot, its signature, its items a
//! page at a time) and `…/evidence-snapshots/{id}/verify`.
//!
//! Snapshots only runs write, so they come from real
//! `evidence.snapshot.generate` runs on `demo:healthy` tenants, executed by
//! an in-process runner holding the evidence key.
//!
//! What is proven: shapes; a cursor round trip returning each item exactly
//! once in signed order; verification true for an untouched snapshot and
//! false, with its reason, after an item is edited in the database — also
//! when the edited item's stored hash is recomputed; a node without the key
//! answering `503 evidence_key_missing` on verify (and still serving the
//! snapshot); and access: a non-member and a member restricted to another
//! tenant get a `404` byte for byte the same as an id that exists nowhere,
//! a malformed id a `400 invalid_id`, bad query parameters a `400`.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::access::Role;
use opsledger_core::evidence::{EvidenceKey, Source, item_sha256};
use opsledger_core::{Outcome, Run, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_server::AppState;
use opsledger_store::{NewRun, Store, both_backends, raw_on_pool};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const MISSING: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

fn key() -> EvidenceKey {
    EvidenceKey::new(b"the evidence key of every node, 41 bytes".to_vec()).unwrap()
}

fn services() -> opsledger_families::Services {
    opsledger_families::Services {
        evidence_key: Some(key()),
        ..Default::default()
    }
}

struct World {
    state: AppState,
    ws: String,
    contoso: String,
    fabrikam: String,
    viewer: String,
    /// An admin restricted to `fabrikam`.
    restricted: String,
    /// Admin of another workspace.
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
    let contoso = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let fabrikam = store
        .create_tenant(&ws, "fabrikam", "demo:healthy")
        .await
        .unwrap()
        .id;
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
            store,
            registry: opsledger_families::registry_with(services()),
            wake: Arc::new(tokio::sync::Notify::new()),
            providers: Default::default(),
            files: None,
            evidence_key: Some(key()),
        },
        ws,
        contoso,
        fabrikam,
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

async fn get_on(state: &AppState, token: &str, path: &str) -> Answer {
    let req = Request::builder()
        .method("GET")
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = opsledger_server::router(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
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
    get_on(&w.state, token, path).await
}

fn snapshot_path(w: &World, id: &str) -> String {
    format!("/api/v1/workspaces/{}/evidence-snapshots/{id}", w.ws)
}

fn verify_path(w: &World, id: &str) -> String {
    format!("{}/verify", snapshot_path(w, id))
}

/// An evidence snapshot of `tenant`, generated by a real run: its id.
async fn generate(w: &World, tenant: &str) -> (String, Run) {
    let store = &w.state.store;
    let new = NewRun::on_tenant(
        &w.ws,
        tenant,
        RunType::EvidenceSnapshotGenerate,
        "test",
        json!({}),
    );
    let id = store.create_run(new).await.unwrap().into_run().id;
    let config = RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(
        Runner::new(
            store.clone(),
            opsledger_families::registry_with(services()),
            config,
        )
        .run(shutdown.clone()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let r = store.get_run(&id).await.unwrap().unwrap();
        if r.is_completed() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "still not done: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    assert_eq!(
        run.outcome,
        Outcome::Succeeded,
        "{:?} {}",
        run.failures,
        run.context
    );
    let snapshot = run.context["evidence_snapshot"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (snapshot, run)
}

async fn sql(store: &Store, q: String) {
    raw_on_pool!(store, pool => {
        sqlx::query(sqlx::AssertSqlSafe(q)).execute(pool).await.unwrap();
    });
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

both_backends!(
    a_snapshot_is_shown_with_its_signature_and_paged_items,
    |store: Store| async move {
        let w = world(store).await;
        let (id, run) = generate(&w, &w.contoso).await;
        let items = run.context["evidence_snapshot"]["items"].as_u64().unwrap();

        let a = get(&w, &w.viewer, &snapshot_path(&w, &id)).await;
        assert_eq!(a.status, 200, "{}", a.raw);
        let keys: BTreeSet<&str> = a.json.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "id",
            "tenant_id",
            "run_id",
            "generated_at",
            "item_count",
            "sealed",
            "sealed_at",
            "signature",
            "signature_algorithm",
            "items",
            "next_cursor",
        ] {
            assert!(keys.contains(k), "{k} missing from {}", a.raw);
        }
        assert_eq!(a.json["id"], id.as_str());
        assert_eq!(a.json["tenant_id"], w.contoso.as_str());
        assert_eq!(a.json["run_id"], run.id.as_str());
        assert_eq!(a.json["item_count"].as_u64(), Some(items));
        assert_eq!(a.json["sealed"], true);
        assert_eq!(a.json["signature"].as_str().unwrap().len(), 64);
        let all = a.json["items"].as_array().unwrap();
        assert_eq!(all.len() as u64, items);
        assert_eq!(a.json["next_cursor"], Value::Null);
        let first = &all[0];
        for k in ["seq", "key", "source", "payload", "sha256", "recorded_at"] {
            assert!(first.get(k).is_some(), "{k} missing from {first}");
        }

        // Page by page: every item once, in signed order.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("{}?limit=7&cursor={c}", snapshot_path(&w, &id)),
                None => format!("{}?limit=7", snapshot_path(&w, &id)),
            };
            let page = get(&w, &w.viewer, &path).await;
            assert_eq!(page.status, 200, "{}", page.raw);
            let got = page.json["items"].as_array().unwrap();
            assert!(got.len() <= 7);
            seen.extend(got.iter().map(|i| i["key"].as_str().unwrap().to_owned()));
            match page.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let whole: Vec<String> = all
            .iter()
            .map(|i| i["key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(seen, whole);

        // Bad inputs.
        for (q, code) in [
            ("?cursor=abc", "invalid_cursor"),
            ("?cursor=-1", "invalid_cursor"),
            ("?limit=0", "invalid_query"),
            ("?limit=501", "invalid_query"),
            ("?colour=red", "invalid_query"),
        ] {
            let a = get(&w, &w.viewer, &format!("{}{q}", snapshot_path(&w, &id))).await;
            assert_eq!((a.status, a.code()), (400, Some(code)), "{q}: {}", a.raw);
        }
    }
);

both_backends!(
    verification_fails_once_an_item_is_edited_in_the_database,
    |store: Store| async move {
        let w = world(store.clone()).await;
        let (id, _) = generate(&w, &w.contoso).await;
        let (other, _) = generate(&w, &w.contoso).await;

        let v = get(&w, &w.viewer, &verify_path(&w, &id)).await;
        assert_eq!(v.status, 200, "{}", v.raw);
        assert_eq!(v.json["valid"], true, "{}", v.raw);
        assert_eq!(v.json["reason_code"], Value::Null);
        assert_eq!(v.json["snapshot_id"], id.as_str());

        // An item's payload edited.
        let page = get(&w, &w.viewer, &snapshot_path(&w, &id)).await;
        let item = page.json["items"][0].clone();
        let item_key = item["key"].as_str().unwrap().to_owned();
        let mut payload = item["payload"].clone();
        payload["items"] = json!(12345);
        sql(
            &store,
            format!(
                "UPDATE evidence_snapshot_items SET payload = {} WHERE snapshot_id = {} AND item_key = {}",
                quoted(&payload.to_string()),
                quoted(&id),
                quoted(&item_key)
            ),
        )
        .await;
        let v = get(&w, &w.viewer, &verify_path(&w, &id)).await;
        assert_eq!(v.status, 200);
        assert_eq!(
            (v.json["valid"].as_bool(), v.json["reason_code"].as_str()),
            (Some(false), Some("item_altered")),
            "{}",
            v.raw
        );
        assert!(v.json["message"].as_str().unwrap().contains(&item_key));

        // ...and its stored hash recomputed: still no.
        let source = Source::parse(item["source"].as_str().unwrap()).unwrap();
        sql(
            &store,
            format!(
                "UPDATE evidence_snapshot_items SET sha256 = {} WHERE snapshot_id = {} AND item_key = {}",
                quoted(&item_sha256(&item_key, source, &payload)),
                quoted(&id),
                quoted(&item_key)
            ),
        )
        .await;
        let v = get(&w, &w.viewer, &verify_path(&w, &id)).await;
        assert_eq!(
            (v.json["valid"].as_bool(), v.json["reason_code"].as_str()),
            (Some(false), Some("signature_mismatch")),
            "{}",
            v.raw
        );

        // The other snapshot is untouched; and its signature copied onto
        // this one does not make it valid.
        let v = get(&w, &w.viewer, &verify_path(&w, &other)).await;
        assert_eq!(v.json["valid"], true);
        let other_sig = get(&w, &w.viewer, &snapshot_path(&w, &other)).await.json["signature"]
            .as_str()
            .unwrap()
            .to_owned();
        sql(
            &store,
            format!(
                "UPDATE evidence_snapshots SET signature = {} WHERE id = {}",
                quoted(&other_sig),
                quoted(&id)
            ),
        )
        .await;
        let v = get(&w, &w.viewer, &verify_path(&w, &id)).await;
        assert_eq!(v.json["valid"], false, "{}", v.raw);

        // A node without the key cannot verify, and says so; it still shows.
        let mut keyless = w.state.clone();
        keyless.evidence_key = None;
        let v = get_on(&keyless, &w.viewer, &verify_path(&w, &other)).await;
        assert_eq!(
            (v.status, v.code()),
            (503, Some("evidence_key_missing")),
            "{}",
            v.raw
        );
        let s = get_on(&keyless, &w.viewer, &snapshot_path(&w, &other)).await;
        assert_eq!(s.status, 200);
    }
);

both_backends!(
    outsiders_and_other_tenants_members_get_the_404_of_an_unknown_id,
    |store: Store| async move {
        let w = world(store).await;
        let (id, _) = generate(&w, &w.contoso).await;
        let (theirs, _) = generate(&w, &w.fabrikam).await;

        for path in [snapshot_path(&w, &id), verify_path(&w, &id)] {
            let nowhere_path = path.replace(&id, MISSING);
            let nowhere = get(&w, &w.viewer, &nowhere_path).await;
            assert_eq!(
                (nowhere.status, nowhere.code()),
                (404, Some("evidence_snapshot_not_found"))
            );
            // A member restricted to another tenant: the same 404.
            let hidden = get(&w, &w.restricted, &path).await;
            assert_eq!(hidden.status, 404);
            assert_eq!(hidden.raw, nowhere.raw, "no existence leak");
            // A non-member: the workspace's 404.
            let outside = get(&w, &w.outsider, &path).await;
            assert_eq!(outside.status, 404, "{}", outside.raw);
        }
        // The restricted member sees their own tenant's snapshot.
        let mine = get(&w, &w.restricted, &snapshot_path(&w, &theirs)).await;
        assert_eq!(mine.status, 200, "{}", mine.raw);
        let v = get(&w, &w.restricted, &verify_path(&w, &theirs)).await;
        assert_eq!(v.json["valid"], true);
        // A malformed id.
        for bad in ["not-a-uuid", "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"] {
            let a = get(&w, &w.viewer, &snapshot_path(&w, bad)).await;
            assert_eq!((a.status, a.code()), (400, Some("invalid_id")), "{}", a.raw);
            let a = get(&w, &w.viewer, &verify_path(&w, bad)).await;
            assert_eq!((a.status, a.code()), (400, Some("invalid_id")), "{}", a.raw);
        }
        // No token at all.
        let req = Request::builder()
            .uri(snapshot_path(&w, &id))
            .body(Body::empty())
            .unwrap();
        let res = opsledger_server::router(w.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }
);
