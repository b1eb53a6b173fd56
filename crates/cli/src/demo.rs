//! `opsledger demo`: an embedded SQLite under DIR, the demo workspace (four
//! tenants, one per demo profile, and four users), a node serving API and
//! workers, and `DIR/demo.json` saying how to reach all of it.
//!
//! Seeding is idempotent: an existing database is reused with its runs;
//! passwords and tokens of the demo users are issued anew on every start (only
//! their hashes are stored), and demo.json carries the new ones.

use crate::node::{self, NodeArgs};
use anyhow::{Context, Result};
use argon2::password_hash::{PasswordHasher, SaltString};
use opsledger_core::access::Role;
use opsledger_store::Store;
use rand::RngCore;
use serde::Serialize;
use std::path::Path;

pub const WORKSPACE: &str = "Demo MSP";
pub const OTHER_WORKSPACE: &str = "Other MSP";
pub const TENANTS: &[(&str, &str)] = &[
    ("contoso", "healthy"),
    ("fabrikam", "throttled"),
    ("northwind", "partial"),
    ("tailspin", "blocked"),
];
const TOKEN_LABEL: &str = "demo";

#[derive(Serialize)]
struct DemoJson {
    url: String,
    workspace_id: String,
    other_workspace_id: String,
    database: String,
    tenants: Vec<TenantJson>,
    users: Vec<UserJson>,
}

#[derive(Serialize)]
struct TenantJson {
    id: String,
    name: String,
    profile: String,
}

#[derive(Serialize)]
struct UserJson {
    email: String,
    role: String,
    password: String,
    token: String,
}

/// The demo's data directory unless `--data` names another.
pub const DEFAULT_DATA_DIR: &str = "./opsledger-data";

pub async fn run(listen: &str, mut args: NodeArgs) -> Result<()> {
    let data = args.data.get_or_insert_with(|| DEFAULT_DATA_DIR.into()).clone();
    let data = data.as_path();
    create_private_dir(data)?;
    ensure_evidence_key(data)?;
    let db_url = format!("sqlite://{}", data.join("opsledger.db").display());
    let store = crate::open(&db_url).await?;
    let (ws, other) = seed(&store).await?;
    let mut users = Vec::new();
    for (email, role, workspace) in [
        ("admin@demo.test", Role::Admin, &ws),
        ("operator@demo.test", Role::Operator, &ws),
        ("viewer@demo.test", Role::Viewer, &ws),
        ("outsider@demo.test", Role::Admin, &other),
    ] {
        let password = random_hex(8);
        let user_id = store.upsert_user(email, &hash_password(&password)?).await?;
        store.set_membership(workspace, &user_id, role).await?;
        store.revoke_tokens(&user_id, TOKEN_LABEL).await?;
        let token = store
            .issue_workspace_token(&user_id, TOKEN_LABEL, workspace, None)
            .await?;
        let role = if workspace == &ws {
            role.as_str().to_owned()
        } else {
            "admin of another workspace".to_owned()
        };
        users.push(UserJson {
            email: email.into(),
            role,
            password,
            token,
        });
    }
    let tenants = store
        .list_tenants(&ws)
        .await?
        .into_iter()
        .map(|t| TenantJson {
            profile: t.provider.strip_prefix("demo:").unwrap_or(&t.provider).to_owned(),
            id: t.id,
            name: t.name,
        })
        .collect();
    let demo_path = data.join("demo.json");
    // A stale demo.json from an earlier start must not be mistaken for this one.
    let _ = std::fs::remove_file(&demo_path);
    let mut demo = DemoJson {
        url: String::new(),
        workspace_id: ws.clone(),
        other_workspace_id: other,
        database: db_url,
        tenants,
        users,
    };
    node::run(store, Some(listen), args, move |addr| {
        demo.url = format!("http://{addr}");
        let json = serde_json::to_string_pretty(&demo).expect("json");
        if let Err(e) = write_private_file(&demo_path, json.as_bytes()) {
            tracing::error!(error = %e, "could not write {}", demo_path.display());
            return;
        }
        // The tokens stay in demo.json (owner-only): never in a log or terminal.
        let tenant = &demo.tenants[0].id;
        eprintln!(
            "\nopsledger demo is up: {url}\n  credentials (passwords, tokens): {path}\n  try: curl -s -X POST -H \"Authorization: Bearer $(jq -r '.users[1].token' {path})\" \\\n        -d '{{\"type\":\"inventory.sync\",\"tenant_id\":\"{tenant}\"}}' {url}/api/v1/workspaces/{ws}/operations\n",
            url = demo.url,
            path = demo_path.display(),
            ws = demo.workspace_id,
        );
    })
    .await
}

/// Creates the demo workspaces and tenants unless they exist; returns the ids
/// of the demo workspace and of the outsider's workspace.
async fn seed(store: &Store) -> Result<(String, String)> {
    let ws = match store.find_workspace_by_name(WORKSPACE).await? {
        Some(ws) => ws,
        None => {
            let ws = store.create_workspace(WORKSPACE).await?;
            for (name, profile) in TENANTS {
                store
                    .create_tenant(&ws.id, name, &format!("demo:{profile}"))
                    .await?;
            }
            ws
        }
    };
    let other = match store.find_workspace_by_name(OTHER_WORKSPACE).await? {
        Some(ws) => ws,
        None => {
            let other = store.create_workspace(OTHER_WORKSPACE).await?;
            store
                .create_tenant(&other.id, "woodgrove", "demo:healthy")
                .await?;
            other
        }
    };
    Ok((ws.id, other.id))
}

/// Evidence snapshots need a signing key outside the database: without
/// `OPSLEDGER_EVIDENCE_KEY(_FILE)`, the demo keeps a random one in
/// `DATA/evidence.key` (owner-only), so snapshots signed before a restart
/// still verify after it (found there as any node's `--data` key).
fn ensure_evidence_key(data: &Path) -> Result<()> {
    if crate::node::evidence_key_from_env()?.is_some() {
        return Ok(());
    }
    let path = data.join("evidence.key");
    if !path.exists() {
        write_private_file(&path, random_hex(32).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The data directory, owner-only (0700) when this creates it.
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `bytes` to `path` readable by its owner only (0600): written whole
/// under a temporary name, then renamed, so a reader never sees half a file.
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut file = open.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))?
        .to_string())
}
