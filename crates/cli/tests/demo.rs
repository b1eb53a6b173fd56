//! `opsledger demo` as a user runs it: the real binary, a real SQLite, the
//! HTTP API. Inventory syncs on each demo profile, progress observed while
//! running, and the access rules (401, 403, 404, 400).

use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

struct Demo {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    info: Value,
    http: reqwest::Client,
}

impl Demo {
    async fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsledger"))
            .args(["demo", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .env("OPSLEDGER_DEMO_LATENCY_MS", "100")
            .env("OPSLEDGER_POLL_INTERVAL_MS", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let info = wait_for_json(&dir.path().join("demo.json")).await;
        Demo {
            _child: child,
            _dir: dir,
            info,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.info["url"].as_str().unwrap())
    }
    fn ws(&self) -> &str {
        self.info["workspace_id"].as_str().unwrap()
    }
    fn token(&self, email: &str) -> String {
        let users = self.info["users"].as_array().unwrap();
        users.iter().find(|u| u["email"] == email).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
    fn tenant(&self, profile: &str) -> String {
        let ts = self.info["tenants"].as_array().unwrap();
        ts.iter().find(|t| t["profile"] == profile).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn post(&self, who: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(self.token(who))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, who: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(self.token(who))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn start_sync(&self, profile: &str) -> String {
        let (status, run) = self
            .post(
                "operator@demo.test",
                &format!("/api/v1/workspaces/{}/operations", self.ws()),
                json!({"type": "inventory.sync", "tenant_id": self.tenant(profile)}),
            )
            .await;
        assert_eq!(status, 202, "{run}");
        assert_eq!(run["status"], "queued");
        assert_eq!(run["progress"]["mode"], "none");
        run["id"].as_str().unwrap().to_owned()
    }

    /// Polls the run until completed; returns every observed state.
    async fn follow(&self, id: &str) -> Vec<Value> {
        let path = format!("/api/v1/workspaces/{}/operations/{id}", self.ws());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let (status, run) = self.get("viewer@demo.test", &path).await;
            assert_eq!(status, 200, "{run}");
            let done = run["status"] == "completed";
            seen.push(run);
            if done {
                return seen;
            }
            assert!(Instant::now() < deadline, "run {id} did not complete");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn wait_for_json(path: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let parsed = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(v) = parsed {
            return v;
        }
        assert!(Instant::now() < deadline, "demo.json never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// No state shows a percentage that the contract forbids.
fn assert_truthful(states: &[Value]) {
    for s in states {
        let p = &s["progress"];
        if let Some(percent) = p["percent"].as_u64() {
            assert_eq!(p["mode"], "counted", "{s}");
            assert_eq!(s["status"], "running");
            let (processed, total) = (p["processed"].as_u64().unwrap(), p["total"].as_u64().unwrap());
            assert!(processed <= total);
            assert_eq!(percent, processed * 100 / total);
            assert_eq!(percent == 100, processed == total);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_syncs_every_profile_truthfully() {
    let demo = Demo::start().await;
    let r = demo.http.get(demo.url("/api/v1/health")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let tenants = demo.info["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 4);
    assert_eq!(demo.info["users"].as_array().unwrap().len(), 4);

    // healthy: counted progress while running, then succeeded with processed == total.
    let id = demo.start_sync("healthy").await;
    let states = demo.follow(&id).await;
    assert_truthful(&states);
    let mid = states
        .iter()
        .filter(|s| s["status"] == "running" && s["progress"]["mode"] == "counted")
        .find(|s| {
            let p = &s["progress"];
            p["processed"].as_u64().unwrap() > 0 && p["processed"].as_u64() < p["total"].as_u64()
        });
    assert!(mid.is_some(), "never saw 0 < processed < total while running");
    let last = states.last().unwrap();
    assert_eq!(last["outcome"], "succeeded");
    assert_eq!(
        last["summary_counts"]["processed"],
        last["summary_counts"]["total"]
    );
    assert_eq!(last["progress"]["mode"], "none");
    assert_eq!(
        last["context"]["inventory"]["coverage"]
            .as_object()
            .unwrap()
            .len(),
        15
    );

    // partial → partially_succeeded; blocked → blocked, no total, never a percentage.
    let partial = demo.start_sync("partial").await;
    let blocked = demo.start_sync("blocked").await;
    let partial_states = demo.follow(&partial).await;
    assert_truthful(&partial_states);
    assert_eq!(partial_states.last().unwrap()["outcome"], "partially_succeeded");
    let blocked_states = demo.follow(&blocked).await;
    assert_truthful(&blocked_states);
    let b = blocked_states.last().unwrap();
    assert_eq!(b["outcome"], "blocked");
    assert!(b["summary_counts"].get("total").is_none_or(|t| t == 0), "{b}");
    assert!(blocked_states.iter().all(|s| s["progress"]["percent"].is_null()));
    assert_eq!(b["failures"][0]["code"], "provider_permission_missing");

    // The hub lists them newest first, filterable.
    let (status, list) = demo
        .get(
            "viewer@demo.test",
            &format!("/api/v1/workspaces/{}/operations?outcome=blocked", demo.ws()),
        )
        .await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], blocked.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_enforces_access_and_input_rules() {
    let demo = Demo::start().await;
    let ops = format!("/api/v1/workspaces/{}/operations", demo.ws());
    let start = json!({"type": "inventory.sync", "tenant_id": demo.tenant("healthy")});

    // No token → 401.
    let r = demo.http.get(demo.url(&ops)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    // Viewer cannot start (403); operator can; a second start returns the active run.
    let (status, body) = demo.post("viewer@demo.test", &ops, start.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (status, first) = demo.post("operator@demo.test", &ops, start.clone()).await;
    assert_eq!(status, 202);
    let (status, second) = demo.post("admin@demo.test", &ops, start.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(
        first["id"], second["id"],
        "concurrent start returns the active run"
    );
    let run_path = format!("{ops}/{}", first["id"].as_str().unwrap());

    // An outsider (admin elsewhere) sees nothing: 404 for the workspace and the run.
    let (status, body) = demo.get("outsider@demo.test", &ops).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(demo.get("outsider@demo.test", &run_path).await.0, 404);
    assert_eq!(demo.post("outsider@demo.test", &ops, start.clone()).await.0, 404);
    // …and their own workspace's run ids do not resolve through ours.
    let other_ops = format!(
        "/api/v1/workspaces/{}/operations",
        demo.info["other_workspace_id"].as_str().unwrap()
    );
    assert_eq!(demo.get("viewer@demo.test", &other_ops).await.0, 404);
    // A tenant of another workspace is not found.
    let (status, _) = demo.post("operator@demo.test", &other_ops, start.clone()).await;
    assert_eq!(status, 404);

    // Bad input → 400 naming what is wrong.
    let (status, body) = demo
        .post(
            "operator@demo.test",
            &ops,
            json!({"type": "inventory.synk", "tenant_id": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_operation_type"))
    );
    let mut with_counts = start.clone();
    with_counts["summary_counts"] = json!({"total": 5});
    let (status, body) = demo.post("operator@demo.test", &ops, with_counts).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("summary_counts"),
        "{body}"
    );
    let mut bad_param = start.clone();
    bad_param["params"] = json!({"processed": 3});
    let (status, body) = demo.post("operator@demo.test", &ops, bad_param).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_param"))
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("`processed`"),
        "{body}"
    );
    let (status, body) = demo.get("viewer@demo.test", &format!("{ops}?status=done")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, _) = demo
        .post(
            "admin@demo.test",
            &ops,
            json!({"type": "workspace.inventory.sync_all", "tenant_id": demo.tenant("healthy")}),
        )
        .await;
    assert_eq!(status, 400);

    // Cancel: viewer 403, operator cancels, a second cancel is 409.
    assert_eq!(
        demo.post("viewer@demo.test", &format!("{run_path}/cancel"), json!({}))
            .await
            .0,
        403
    );
    let (status, cancelled) = demo
        .post("operator@demo.test", &format!("{run_path}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["outcome"].as_str()),
        (Some("completed"), Some("cancelled"))
    );
    let (status, body) = demo
        .post("operator@demo.test", &format!("{run_path}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_completed"))
    );

    // Force-close: operator 403, outsider 404, a non-terminal outcome 400;
    // an admin closes with a reason, recorded like a reconciliation.
    let throttled = json!({"type": "inventory.sync", "tenant_id": demo.tenant("throttled")});
    let (status, run) = demo.post("operator@demo.test", &ops, throttled).await;
    assert_eq!(status, 202, "{run}");
    let close = format!("{ops}/{}/force-close", run["id"].as_str().unwrap());
    let reason = json!({"outcome": "failed", "reason": "tenant is being offboarded"});
    assert_eq!(
        demo.post("operator@demo.test", &close, reason.clone()).await.0,
        403
    );
    assert_eq!(
        demo.post("outsider@demo.test", &close, reason.clone()).await.0,
        404
    );
    let (status, body) = demo
        .post(
            "admin@demo.test",
            &close,
            json!({"outcome": "pending", "reason": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_outcome"))
    );
    let (status, closed) = demo.post("admin@demo.test", &close, reason.clone()).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(
        (
            closed["outcome"].as_str(),
            closed["reconciliation"]["adapter"].as_str()
        ),
        (Some("failed"), Some("admin_force_close"))
    );
    assert_eq!(
        closed["reconciliation"]["explanation"],
        "tenant is being offboarded"
    );
    assert_eq!(demo.post("admin@demo.test", &close, reason).await.0, 409);

    // The catalog lists every type.
    let r: Value = demo
        .http
        .get(demo.url("/api/v1/operation-types"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["items"].as_array().unwrap().len(), 12);
}

/// Secrets stay in files only their owner can read: demo.json and the
/// database are 0600, the data directory 0700, and neither the terminal
/// nor the log (not a terminal here: no colour codes) shows a token.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_keeps_its_secrets_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("demo.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let info = wait_for_json(&data.join("demo.json")).await;
    // The banner is printed right after demo.json is written.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains("opsledger demo is up")
    {
        assert!(Instant::now() < deadline, "no banner");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data.join("demo.json")), 0o600);
    assert_eq!(mode(&data.join("opsledger.db")), 0o600);
    assert_eq!(mode(&data), 0o700);
    for side in ["opsledger.db-wal", "opsledger.db-shm"] {
        let p = data.join(side);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{side}");
        }
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    for u in info["users"].as_array().unwrap() {
        let token = u["token"].as_str().unwrap();
        assert!(!log.contains(token), "a token reached the log:\n{log}");
        assert!(!log.contains(u["password"].as_str().unwrap()));
    }
    assert!(!log.contains('\u{1b}'), "colour codes in a log file:\n{log}");
    child.kill().await.unwrap();
}

/// A run started by `who`, followed to its end; every state truthful, and
/// counted progress seen strictly between 0 and total while running.
async fn started_and_followed(demo: &Demo, who: &str, body: Value, expect: &str) -> Value {
    let states = states_of(demo, who, &body, expect).await;
    let last = states.last().unwrap().clone();
    if expect != "blocked" {
        let mid = states.iter().any(|s| {
            let p = &s["progress"];
            s["status"] == "running"
                && p["mode"] == "counted"
                && p["processed"].as_u64().unwrap() > 0
                && p["processed"].as_u64() < p["total"].as_u64()
        });
        assert!(mid, "{body}: never saw 0 < processed < total while running");
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backs_up_restores_and_schedules_truthfully() {
    let demo = Demo::start().await;
    let admin = "admin@demo.test";
    let healthy = demo.tenant("healthy");
    started_and_followed(
        &demo,
        admin,
        json!({"type": "inventory.sync", "tenant_id": healthy}),
        "succeeded",
    )
    .await;
    let backup = started_and_followed(
        &demo,
        admin,
        json!({"type": "backup_set.add_policies", "tenant_id": healthy}),
        "succeeded",
    )
    .await;
    let set = backup["context"]["backup_set"]["id"].as_str().unwrap().to_owned();
    let (status, detail) = demo
        .get(
            admin,
            &format!("/api/v1/workspaces/{}/backup-sets/{set}", demo.ws()),
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["complete"], true);
    // Twenty device configurations and compliance policies: assigned to groups
    // (and filters) every demo tenant has by name, so they map everywhere.
    let items: Vec<Value> = detail["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "deviceConfigurations" || i["type"] == "deviceCompliancePolicies")
        .filter(|i| {
            i["refs"]
                .as_object()
                .unwrap()
                .values()
                .all(|n| n.as_str().unwrap().starts_with("group:"))
        })
        .take(20)
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(items.len(), 20);
    // And one Conditional Access policy, a type the partial tenant may not write.
    let ca = detail["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "conditionalAccessPolicies")
        .unwrap()["id"]
        .clone();
    let mut with_ca = items.clone();
    with_ca.push(ca);
    for (profile, selected, expect) in [
        ("healthy", &items, "succeeded"),
        ("throttled", &items, "succeeded"),
        ("partial", &with_ca, "partially_succeeded"),
        ("blocked", &items, "blocked"),
    ] {
        let run = started_and_followed(
            &demo,
            admin,
            json!({"type": "backup_set.restore", "tenant_id": demo.tenant(profile),
                   "params": {"backup_set_id": set, "item_ids": selected}}),
            expect,
        )
        .await;
        let c = &run["summary_counts"];
        let written = c["created"].as_u64().unwrap_or(0) + c["updated"].as_u64().unwrap_or(0);
        if profile == "healthy" {
            // Its own backup, restored into itself: every item as it was.
            assert_eq!((written, c["processed"].as_u64()), (0, Some(20)), "{run}");
        } else if expect != "blocked" {
            // Created, or updated where the target has a policy of that name.
            assert_eq!(written, 20, "{run}");
        }
    }
    // A backup schedule, executed now: counted by policy types.
    let (status, schedule) = demo
        .post(
            admin,
            &format!("/api/v1/workspaces/{}/schedules", demo.ws()),
            json!({"name": "nightly", "run_type": "backup.schedule.execute", "tenant_id": healthy,
                   "cron": "0 2 * * *", "timezone": "Europe/Brussels"}),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    let run = started_and_followed(
        &demo,
        admin,
        json!({"type": "backup.schedule.execute", "tenant_id": healthy,
               "params": {"schedule_id": schedule["id"]}}),
        "succeeded",
    )
    .await;
    assert_eq!(run["context"]["backup_schedule_id"], schedule["id"]);
    assert_eq!(run["summary_counts"]["total"], 15, "one unit per policy type");

    // policy.sync: one policy re-read (activity: no counts, ever).
    let policy = detail["items"].as_array().unwrap()[0].clone();
    let policy_id = format!(
        "{}/{}",
        policy["type"].as_str().unwrap(),
        policy["external_id"].as_str().unwrap()
    );
    for (profile, expect) in [("healthy", "succeeded"), ("blocked", "blocked")] {
        let run = activity_followed(
            &demo,
            admin,
            json!({"type": "policy.sync", "tenant_id": demo.tenant(profile),
                   "params": {"policy_id": policy_id}}),
            expect,
        )
        .await;
        if expect == "succeeded" {
            assert_eq!(
                run["context"]["policy_sync"]["policy_id"], policy["external_id"],
                "{run}"
            );
        }
    }
    // backup_set.update locks the set; a delete is then refused (409) before
    // any run; unlocked, the delete removes it, counted over its items.
    let lock = activity_followed(
        &demo,
        admin,
        json!({"type": "backup_set.update", "tenant_id": healthy,
               "params": {"backup_set_id": set, "retention_locked": true, "label": "before the rollout"}}),
        "succeeded",
    )
    .await;
    assert_eq!(lock["context"]["backup_set"]["retention_locked"], true, "{lock}");
    let (status, refused) = demo
        .post(
            admin,
            &format!("/api/v1/workspaces/{}/operations", demo.ws()),
            json!({"type": "backup_set.delete", "tenant_id": healthy, "params": {"backup_set_id": set}}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    followed(
        &demo,
        admin,
        json!({"type": "backup_set.update", "tenant_id": healthy,
               "params": {"backup_set_id": set, "retention_locked": false}}),
        "succeeded",
    )
    .await;
    let items = detail["item_count"].as_u64().unwrap();
    let deleted = started_and_followed(
        &demo,
        admin,
        json!({"type": "backup_set.delete", "tenant_id": healthy, "params": {"backup_set_id": set}}),
        "succeeded",
    )
    .await;
    assert_eq!(deleted["summary_counts"]["total"], items, "{deleted}");
    let (status, _) = demo
        .get(
            admin,
            &format!("/api/v1/workspaces/{}/backup-sets/{set}", demo.ws()),
        )
        .await;
    assert_eq!(status, 404, "a deleted set is gone");
}

/// A run started by `who`, followed to its end; every state truthful.
async fn followed(demo: &Demo, who: &str, body: Value, expect: &str) -> Value {
    states_of(demo, who, &body, expect).await.pop().unwrap()
}

/// Every observed state of a run started by `who`, followed to its end:
/// each truthful, the last with the `expect`ed outcome.
async fn states_of(demo: &Demo, who: &str, body: &Value, expect: &str) -> Vec<Value> {
    let (status, run) = demo
        .post(
            who,
            &format!("/api/v1/workspaces/{}/operations", demo.ws()),
            body.clone(),
        )
        .await;
    assert_eq!(status, 202, "{body}: {run}");
    let states = demo.follow(run["id"].as_str().unwrap()).await;
    assert_truthful(&states);
    let last = states.last().unwrap();
    assert_eq!(last["outcome"], expect, "{body}: {last}");
    states
}

/// An activity run started by `who`, followed to its end: never a total or a
/// percentage, and (unless it ends blocked) seen running in activity mode.
async fn activity_followed(demo: &Demo, who: &str, body: Value, expect: &str) -> Value {
    let states = states_of(demo, who, &body, expect).await;
    for s in &states {
        assert!(s["summary_counts"]["total"].is_null(), "{body}: {s}");
        assert!(s["progress"]["percent"].is_null(), "{body}: {s}");
    }
    if expect != "blocked" {
        assert!(
            states
                .iter()
                .any(|s| s["status"] == "running" && s["progress"]["mode"] == "activity"),
            "{body}: never seen running in activity mode"
        );
    }
    states.last().unwrap().clone()
}

/// A phased run started by `who`, followed to its end: never counted at the
/// top level, the active phase seen moving, and (unless it ends blocked)
/// counted sub-progress seen strictly inside a phase while running.
async fn phased_and_followed(demo: &Demo, who: &str, body: Value, expect: &str) -> Value {
    let states = states_of(demo, who, &body, expect).await;
    let last = states.last().unwrap().clone();
    for s in &states {
        assert_ne!(
            s["progress"]["mode"], "counted",
            "{body}: a phased run shown counted: {s}"
        );
        assert!(s["progress"]["percent"].is_null(), "{s}");
        assert!(s["summary_counts"]["total"].is_null(), "{s}");
    }
    let active: Vec<String> = states
        .iter()
        .filter(|s| s["status"] == "running" && s["progress"]["mode"] == "phased")
        .filter_map(|s| {
            s["progress"]["phases"]
                .as_array()?
                .iter()
                .find(|p| p["state"] == "active")
                .map(|p| p["key"].as_str().unwrap().to_owned())
        })
        .collect();
    if expect != "blocked" {
        let mut moves = active.clone();
        moves.dedup();
        assert!(!moves.is_empty(), "{body}: never seen in a phase");
        // The active phase seen moving. A compare's diff and record are too
        // quick to be caught active (its load is one read of our own
        // database), so its moves are seen from the states around "read".
        let phases_done = |s: &Value| {
            s["progress"]["phases"]
                .as_array()
                .map_or(0, |ps| ps.iter().take_while(|p| p["state"] == "done").count())
        };
        // Seen running past a finished phase, then later with more done: the
        // active phase moved at least twice.
        let moved = states.iter().enumerate().any(|(i, s)| {
            s["status"] == "running"
                && phases_done(s) >= 1
                && states[i + 1..]
                    .iter()
                    .any(|later| phases_done(later) > phases_done(s))
        });
        assert!(moved, "{body}: the active phase never moved: {moves:?}");
        if body["type"] == "baseline.capture" {
            // A capture's phases are each long enough to be caught active.
            assert!(
                moves.len() >= 2,
                "{body}: the active phase never moved: {moves:?}"
            );
        }
        let inside = states.iter().any(|s| {
            s["status"] == "running"
                && s["progress"]["phases"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p["state"] == "active"
                            && p["processed"].as_u64().is_some_and(|n| n > 0)
                            && p["processed"].as_u64() < p["total"].as_u64()
                    })
                })
        });
        assert!(inside, "{body}: never saw 0 < processed < total inside a phase");
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_captures_baselines_and_compares_truthfully() {
    let demo = Demo::start().await;
    let admin = "admin@demo.test";
    for (profile, expect) in [
        ("healthy", "succeeded"),
        ("partial", "partially_succeeded"),
        ("blocked", "blocked"),
    ] {
        let capture = phased_and_followed(
            &demo,
            admin,
            json!({"type": "baseline.capture", "tenant_id": demo.tenant(profile)}),
            expect,
        )
        .await;
        if expect == "partially_succeeded" {
            let by_type = capture["context"]["baseline_snapshot"]["gaps"]["by_type"]
                .as_object()
                .unwrap();
            assert!(by_type.contains_key("conditionalAccessPolicies"), "{capture}");
        }
        if expect == "blocked" {
            continue;
        }
        let snapshot = capture["context"]["baseline_snapshot"]["id"].as_str().unwrap();
        let (status, body) = demo
            .get(
                "viewer@demo.test",
                &format!("/api/v1/workspaces/{}/baseline-snapshots/{snapshot}", demo.ws()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        // The healthy tenant against its own baseline: no drift.
        if expect == "succeeded" {
            let compare = phased_and_followed(
                &demo,
                admin,
                json!({"type": "baseline.compare", "tenant_id": demo.tenant(profile)}),
                "succeeded",
            )
            .await;
            assert_eq!(compare["context"]["compare"]["drift_found"], false, "{compare}");
            let (status, findings) = demo
                .get(
                    "viewer@demo.test",
                    &format!(
                        "/api/v1/workspaces/{}/operations/{}/findings",
                        demo.ws(),
                        compare["id"].as_str().unwrap()
                    ),
                )
                .await;
            assert_eq!(status, 200, "{findings}");
            assert_eq!(findings["items"], json!([]));
            // The healthy golden baseline against the throttled tenant:
            // a compare of another tenant against the MSP's standard.
            let golden = phased_and_followed(
                &demo,
                admin,
                json!({"type": "baseline.compare", "tenant_id": demo.tenant("throttled"),
                       "params": {"baseline_snapshot_id": snapshot}}),
                "succeeded",
            )
            .await;
            assert!(
                golden["context"]["compare"]["drift_found"].is_boolean(),
                "{golden}"
            );
            // The same standard against the partial tenant, which cannot
            // read its Conditional Access types: partially succeeded, never
            // a clean bill or a failure.
            let partial = phased_and_followed(
                &demo,
                admin,
                json!({"type": "baseline.compare", "tenant_id": demo.tenant("partial"),
                       "params": {"baseline_snapshot_id": snapshot}}),
                "partially_succeeded",
            )
            .await;
            let c = &partial["context"]["compare"];
            let unreadable = c["unreadable_types"].as_object().unwrap();
            assert!(
                unreadable.contains_key("conditionalAccessPolicies")
                    && unreadable.contains_key("namedLocations"),
                "the types it could not read, each named: {c}"
            );
            // Drift in what it could read, or unknown: never a clean bill.
            assert_ne!(c["drift_found"], false, "{c}");
        }
    }
    let blocked = phased_and_followed(
        &demo,
        admin,
        json!({"type": "baseline.compare", "tenant_id": demo.tenant("blocked")}),
        "blocked",
    )
    .await;
    assert_eq!(
        blocked["failures"][0]["code"], "no_baseline_snapshot",
        "{blocked}"
    );
}

/// The bytes of `path` fetched by `who` (status, body).
async fn download(demo: &Demo, who: &str, path: &str) -> (u16, Vec<u8>) {
    let r = demo
        .http
        .get(demo.url(path))
        .bearer_auth(demo.token(who))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// A counted run never shows a total that changes.
fn total_held_still(states: &[Value]) -> Option<u64> {
    let totals: Vec<u64> = states
        .iter()
        .filter_map(|s| {
            s["progress"]["total"]
                .as_u64()
                .or(s["summary_counts"]["total"].as_u64())
        })
        .collect();
    let first = *totals.first()?;
    assert!(
        totals.iter().all(|t| *t == first),
        "the total changed: {totals:?}"
    );
    Some(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_generates_review_packs_evidence_and_syncs_every_tenant_truthfully() {
    use std::io::Read;
    let demo = Demo::start().await;
    let ops = format!("/api/v1/workspaces/{}/operations", demo.ws());
    let healthy = demo.tenant("healthy");

    // One sync of every tenant: composite while running, its children
    // ordinary runs listed with their parent, the outcome by the rule.
    let body = json!({"type": "workspace.inventory.sync_all"});
    let states = states_of(&demo, "operator@demo.test", &body, "partially_succeeded").await;
    let parent = states.last().unwrap()["id"].as_str().unwrap().to_owned();
    let composite = states
        .iter()
        .find(|s| {
            s["status"] == "running"
                && s["progress"]["mode"] == "composite"
                && s["progress"]["children"]["active"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|c| c["progress"]["mode"] == "counted"))
        })
        .expect("composite progress with an active child's own progress seen while running");
    assert_eq!(composite["progress"]["children"]["total"], 4, "{composite}");
    for s in &states {
        assert!(
            s["progress"]["percent"].is_null(),
            "never a top-level percentage: {s}"
        );
        assert!(s["tenant_id"].is_null(), "{s}");
    }
    let (status, page) = demo
        .get("viewer@demo.test", &format!("{ops}?type=inventory.sync&limit=50"))
        .await;
    assert_eq!(status, 200, "{page}");
    let children: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["parent_id"] == parent.as_str())
        .collect();
    assert_eq!(children.len(), 4, "one child per tenant: {page}");
    let mut outcomes: Vec<&str> = children.iter().map(|c| c["outcome"].as_str().unwrap()).collect();
    outcomes.sort();
    assert!(
        outcomes.contains(&"succeeded") && outcomes.contains(&"blocked"),
        "{outcomes:?}"
    );

    // A review pack of the healthy tenant: counted, 0 < processed < total seen.
    let body = json!({"type": "review_pack.generate", "tenant_id": healthy});
    let states = states_of(&demo, "operator@demo.test", &body, "succeeded").await;
    let full_total = total_held_still(&states).expect("a total");
    assert!(
        states.iter().any(|s| s["status"] == "running"
            && s["progress"]["mode"] == "counted"
            && s["progress"]["processed"].as_u64().unwrap_or(0) > 0
            && s["progress"]["processed"].as_u64() < s["progress"]["total"].as_u64()),
        "never saw 0 < processed < total while running"
    );
    let pack = &states.last().unwrap()["context"]["review_pack"];
    assert_eq!(pack["files"], full_total, "{pack}");
    let url = pack["download_url"].as_str().expect("download_url").to_owned();
    let path = url.trim_start_matches(demo.info["url"].as_str().unwrap());
    let (status, zip_bytes) = download(&demo, "viewer@demo.test", path).await;
    assert_eq!(status, 200);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&zip_bytes))
    };
    assert_eq!(
        pack["sha256"],
        sha.as_str(),
        "the download is the pack the run recorded"
    );
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    assert_eq!(
        archive.len() as u64,
        full_total + 1,
        "exactly `total` files besides the manifest"
    );
    let mut manifest = String::new();
    archive
        .by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let listed = manifest["files"].as_array().unwrap();
    assert_eq!(listed.len() as u64, full_total);
    for f in listed {
        let mut entry = Vec::new();
        archive
            .by_name(f["path"].as_str().unwrap())
            .unwrap()
            .read_to_end(&mut entry)
            .unwrap();
        use sha2::Digest;
        assert_eq!(
            f["sha256"],
            hex::encode(sha2::Sha256::digest(&entry)).as_str(),
            "{f}"
        );
    }
    // Redaction is on by default: the secrets planted in the demo appear nowhere.
    for i in 0..archive.len() {
        let mut entry = Vec::new();
        let mut file = archive.by_index(i).unwrap();
        let name = file.name().unwrap().to_string();
        file.read_to_end(&mut entry).unwrap();
        let text = String::from_utf8_lossy(&entry);
        use opsledger_providers::demo::{
            CERTIFICATE_BLOB, OMA_ADMIN_PASSWORD, OMA_WIFI_KEY_MATERIAL, WIFI_PRE_SHARED_KEY,
        };
        for secret in [
            WIFI_PRE_SHARED_KEY,
            CERTIFICATE_BLOB,
            OMA_ADMIN_PASSWORD,
            OMA_WIFI_KEY_MATERIAL,
        ] {
            assert!(!text.contains(secret), "{name} holds a planted secret");
        }
    }
    // Outsiders get 404, like for the run.
    let (status, _) = download(&demo, "outsider@demo.test", path).await;
    assert_eq!(status, 404);
    let outsider_path = path.replace(demo.ws(), demo.info["other_workspace_id"].as_str().unwrap());
    let (status, _) = download(&demo, "outsider@demo.test", &outsider_path).await;
    assert_eq!(status, 404);

    // An option that removes files lowers the total before the first file.
    let body = json!({"type": "review_pack.generate", "tenant_id": healthy,
                      "params": {"include_policies": false}});
    let states = states_of(&demo, "operator@demo.test", &body, "succeeded").await;
    let fewer = total_held_still(&states).expect("a total");
    assert!(fewer < full_total, "{fewer} < {full_total}");
    assert_eq!(states.last().unwrap()["context"]["review_pack"]["files"], fewer);

    // An evidence snapshot: every item counted once, and it verifies.
    let body = json!({"type": "evidence.snapshot.generate", "tenant_id": healthy});
    let last = followed(&demo, "operator@demo.test", body, "succeeded").await;
    let snap = &last["context"]["evidence_snapshot"];
    let items = snap["items"].as_u64().expect("items");
    assert!(items > 0);
    assert_eq!(
        (
            last["summary_counts"]["processed"].as_u64(),
            last["summary_counts"]["total"].as_u64()
        ),
        (Some(items), Some(items))
    );
    let snap_path = format!(
        "/api/v1/workspaces/{}/evidence-snapshots/{}",
        demo.ws(),
        snap["id"].as_str().unwrap()
    );
    let (status, verify) = demo.get("viewer@demo.test", &format!("{snap_path}/verify")).await;
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["valid"], true, "{verify}");
    let (status, _) = demo.get("outsider@demo.test", &snap_path).await;
    assert_eq!(status, 404);
}
