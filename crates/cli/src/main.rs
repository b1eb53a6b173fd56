//! The `opsledger` binary: a thin layer over the library crates. Commands
//! parse their flags (each also read from an `OPSLEDGER_*` variable), open
//! the store, and call the engine, server or store.

mod admin;
mod demo;
mod fake_graph;
mod node;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use opsledger_core::RunStatus;
use opsledger_store::{RunFilter, Store};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "opsledger",
    version,
    about = "Operation runs for MSP tenant governance that never lie"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Console + API + workers on an embedded SQLite with demo data; writes DIR/demo.json.
    Demo {
        #[arg(long, env = "OPSLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        node: node::NodeArgs,
    },
    /// API server with embedded workers.
    Serve {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[arg(long, env = "OPSLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        node: node::NodeArgs,
    },
    /// Workers only (no HTTP); several may share one PostgreSQL.
    Worker {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[command(flatten)]
        node: node::NodeArgs,
    },
    /// One stale sweep and reconciliation pass now; prints per run the decision, reason and proof.
    Reconcile {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[command(flatten)]
        node: node::NodeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Inspect and close runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// A fake Microsoft Graph on loopback serving one tenant read from a demo
    /// profile or an export folder (accepts OPSLEDGER_GRAPH_CLIENT_ID/_SECRET).
    FakeGraph {
        #[arg(long, conflicts_with = "folder", required_unless_present = "folder")]
        demo: Option<String>,
        #[arg(long)]
        folder: Option<PathBuf>,
        /// The tenant id a node names as `graph:TENANT_ID`.
        #[arg(long, default_value = "fake.onmicrosoft.com")]
        tenant_id: String,
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
    },
    /// Set up an installation: workspaces, users, memberships, tokens.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Runs of a workspace, newest first.
    List {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[arg(long, env = "OPSLEDGER_WORKSPACE")]
        workspace: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// An admin closes a non-terminal run with an outcome and a reason.
    ForceClose {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        id: String,
        #[arg(long)]
        outcome: String,
        #[arg(long)]
        reason: String,
        /// Where the run's file artifacts are (to check a review pack's proof).
        #[arg(long, env = "OPSLEDGER_DATA")]
        data: Option<PathBuf>,
        #[arg(long, env = "OPSLEDGER_ARTIFACTS_URL")]
        artifacts_url: Option<String>,
    },
    /// One run.
    Show {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Adds a tenant and prints its id. PROVIDER is demo:PROFILE, folder:PATH or graph:TENANT_ID.
    Add {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[arg(long, env = "OPSLEDGER_WORKSPACE")]
        workspace: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        provider: String,
        #[command(flatten)]
        graph: node::GraphArgs,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPSLEDGER_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain on one line: "what we were doing: why it failed".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Demo { listen, node } => demo::run(&listen, node).await,
        Command::Serve { db, listen, node } => {
            let store = open(&db).await?;
            node::run(store, Some(&listen), node, |_| {}).await
        }
        Command::Worker { db, node } => {
            let store = open(&db).await?;
            node::run(store, None, node, |_| {}).await
        }
        Command::Reconcile { db, node, json } => reconcile(&db, &node, json).await,
        Command::Runs { command } => runs(command).await,
        Command::Admin { command } => admin::run(command).await,
        Command::FakeGraph {
            demo,
            folder,
            tenant_id,
            listen,
        } => {
            let spec = match (demo, folder) {
                (Some(profile), _) => format!("demo:{profile}"),
                (None, Some(path)) => format!("folder:{}", path.display()),
                (None, None) => anyhow::bail!("--demo PROFILE or --folder PATH is required"),
            };
            fake_graph::run(&spec, &tenant_id, &listen).await
        }
        Command::Tenant {
            command:
                TenantCommand::Add {
                    db,
                    workspace,
                    name,
                    provider,
                    graph,
                },
        } => {
            let store = open(&db).await?;
            let settings = opsledger_providers::ProviderSettings {
                graph: graph.settings(Some(&store))?,
                ..Default::default()
            };
            // The provider is checked before anything is stored: the folder
            // exists and can be read, Graph credentials obtain a token (the
            // app's id, its secret and its consent in the tenant all hold).
            opsledger_providers::validate(&provider, &name, &settings)
                .await
                .with_context(|| format!("provider `{provider}` cannot be used"))?;
            // Unknown workspace, duplicate name: the store's typed errors say so.
            let t = store.create_tenant(&workspace, &name, &provider).await?;
            println!("{}", t.id);
            Ok(())
        }
    }
}

/// Opens and migrates the database named by `url`. No message shows the
/// URL's password.
pub async fn open(url: &str) -> Result<Store> {
    let shown = redact_url(url);
    let store = Store::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("opening database {shown}: {}", scrub(&said(&e), url, &shown)))?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("migrating database {shown}: {}", scrub(&said(&e), url, &shown)))?;
    Ok(store)
}

/// What the database server said (e.g. `role "app" does not exist`), without
/// the driver's wrapping; any other error as it displays.
fn said(e: &opsledger_store::StoreError) -> String {
    match e {
        opsledger_store::StoreError::Database(sqlx::Error::Database(d)) => d.message().to_owned(),
        e => e.to_string(),
    }
}

/// `url` with its password (in the user info or a `password=` parameter) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(i + 3);
    // Everything up to the last `@` is taken for user info, so a password
    // with an unescaped `/`, `?` or `@` is hidden whole (at worst, more than
    // the password is hidden).
    let mut out = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{scheme}{}:***{}", &rest[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// `message` with every appearance of `url`, or of its password, replaced.
fn scrub(message: &str, url: &str, shown: &str) -> String {
    let mut out = message.replace(url, shown);
    for secret in url_secrets(url) {
        if secret.len() >= 3 {
            out = out.replace(&secret, "***");
        }
    }
    out
}

/// The password parts of `url` as written (user info and `password=`).
fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let Some(i) = url.find("://") else {
        return secrets;
    };
    let rest = &url[i + 3..];
    if let Some(at) = rest.rfind('@')
        && let Some(colon) = rest[..at].find(':')
    {
        secrets.push(rest[colon + 1..at].to_owned());
    }
    if let Some(q) = rest.find('?') {
        for kv in rest[q + 1..].split('&') {
            if let Some((k, v)) = kv.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                secrets.push(v.to_owned());
            }
        }
    }
    secrets
}

async fn reconcile(db: &str, node: &node::NodeArgs, json: bool) -> Result<()> {
    let store = open(db).await?;
    let report = opsledger_engine::sweep_once(&store, &node.registry(&store)?, &node.sweep_config()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "rescued {} job(s) for retry, failed {} unit(s) out of attempts, completed {} finished bulk run(s)",
        report.rescued_for_retry, report.units_failed_by_rescue, report.bulk_runs_completed
    );
    if report.decisions.is_empty() {
        println!("no stale runs");
    }
    for d in &report.decisions {
        let proof = d
            .result
            .related_artifact
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "none".into());
        let outcome = d
            .outcome
            .map(|o| o.to_string())
            .unwrap_or_else(|| "unchanged".into());
        let proven = d
            .result
            .units_succeeded
            .map(|n| format!("; units proven done: {n}"))
            .unwrap_or_default();
        println!(
            "{} {} ({}): {} via {} — {} [{}] — {}; proof: {}; outcome: {}{}",
            d.run_id,
            d.run_type,
            d.previous_status,
            d.result.verdict.as_str(),
            d.adapter,
            d.result.reason_code,
            d.applied,
            d.result.explanation,
            proof,
            outcome,
            proven
        );
    }
    Ok(())
}

async fn runs(command: RunsCommand) -> Result<()> {
    match command {
        RunsCommand::List {
            db,
            workspace,
            status,
            limit,
            json,
        } => {
            let store = open(&db).await?;
            admin::workspace_named(&store, &workspace).await?;
            let status = status.map(|s| s.parse::<RunStatus>()).transpose()?;
            let filter = RunFilter {
                status,
                limit,
                ..Default::default()
            };
            let (runs, _) = store
                .list_runs(
                    &opsledger_store::Visibility {
                        workspace_id: workspace.clone(),
                        tenants: None,
                    },
                    &filter,
                )
                .await?;
            if json {
                let items: Vec<_> = runs
                    .iter()
                    .map(|r| opsledger_server::render::run_json(r, &[]))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                for r in &runs {
                    let p = opsledger_core::progress::progress_of(r, &[]);
                    println!(
                        "{}  {:<28} {:<10} {:<20} {}",
                        r.id, r.run_type, r.status, r.outcome, p.label
                    );
                }
            }
        }
        RunsCommand::ForceClose {
            db,
            id,
            outcome,
            reason,
            data,
            artifacts_url,
        } => {
            let store = open(&db).await?;
            let outcome: opsledger_core::Outcome = outcome.parse()?;
            anyhow::ensure!(outcome.is_terminal(), "`{outcome}` is not a terminal outcome");
            let run = store
                .get_run(&id)
                .await?
                .with_context(|| format!("run {id} not found"))?;
            let by = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "admin".into()));
            // The adapters that read proof need what the nodes write it with.
            let registry = opsledger_families::registry_with(opsledger_families::Services {
                files: node::file_store(artifacts_url.as_deref(), data.as_deref())?,
                evidence_key: node::evidence_key_with_data(data.as_deref())?,
                ..Default::default()
            });
            let r = opsledger_engine::force_close(&store, &registry, &run, outcome, &reason, &by).await?;
            println!("{} closed as {}", r.id, r.outcome);
        }
        RunsCommand::Show { db, id, json } => {
            let store = open(&db).await?;
            let run = store
                .get_run(&id)
                .await?
                .with_context(|| format!("run {id} not found"))?;
            let children = store.children_of(&id).await?;
            let rendered = opsledger_server::render::run_json(&run, &children);
            if json {
                println!("{}", serde_json::to_string_pretty(&rendered)?);
            } else {
                println!("{} {} — {} / {}", run.id, run.run_type, run.status, run.outcome);
                println!("progress: {}", rendered.progress.label);
                println!("counts:   {}", serde_json::to_string(&run.summary_counts)?);
                for f in &run.failures {
                    println!(
                        "failure:  {} {} {}",
                        f.code,
                        f.unit.as_deref().unwrap_or("-"),
                        f.message
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_shown() {
        for (url, shown) in [
            (
                "postgres://app:s3cret@db:5432/ops",
                "postgres://app:***@db:5432/ops",
            ),
            ("postgres://app@db/ops", "postgres://app@db/ops"),
            ("postgres://app:p@ss/w?rd@db/ops", "postgres://app:***@db/ops"),
            (
                "postgres://db/ops?user=app&password=s3cret&sslmode=require",
                "postgres://db/ops?user=app&password=***&sslmode=require",
            ),
            ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let url = "mysql://app:s3cret@db/ops";
        let msg = format!("unsupported database url `{url}`; s3cret");
        let out = scrub(&msg, url, &redact_url(url));
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("mysql://app:***@db/ops"), "{out}");
    }
}
