//! The `opsledger` binary: a thin layer over the library crates. Commands
//! parse their flags (each also read from an `OPSLEDGER_*` variable), open
//! the store, and call the engine, server or store.

mod demo;
mod node;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use opsledger_core::RunStatus;
use opsledger_store::{RunFilter, Store};
use std::path::PathBuf;

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
        #[arg(long, env = "OPSLEDGER_DATA", default_value = "./opsledger-data")]
        data: PathBuf,
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
        #[arg(long, default_value_t = 50)]
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
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPSLEDGER_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo { listen, data, node } => demo::run(&listen, &data, node).await,
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
        Command::Tenant {
            command:
                TenantCommand::Add {
                    db,
                    workspace,
                    name,
                    provider,
                },
        } => {
            let store = open(&db).await?;
            let settings = opsledger_providers::ProviderSettings::default();
            opsledger_providers::open(&provider, &name, &settings)
                .with_context(|| format!("provider `{provider}` cannot be used"))?;
            let t = store
                .create_tenant(&workspace, &name, &provider)
                .await
                .context("adding tenant")?;
            println!("{}", t.id);
            Ok(())
        }
    }
}

/// Opens and migrates the database named by `url`.
pub async fn open(url: &str) -> Result<Store> {
    let store = Store::connect(url)
        .await
        .with_context(|| format!("opening database {url}"))?;
    store.migrate().await.context("migrating database")?;
    Ok(store)
}

async fn reconcile(db: &str, node: &node::NodeArgs, json: bool) -> Result<()> {
    let store = open(db).await?;
    let report = opsledger_engine::sweep_once(&store, &node.registry(), &node.sweep_config()).await?;
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
        println!(
            "{} {} ({}): {} via {} — {} [{}] — {}; proof: {}",
            d.run_id,
            d.run_type,
            d.previous_status,
            d.result.verdict.as_str(),
            d.adapter,
            d.result.reason_code,
            d.applied,
            d.result.explanation,
            proof
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
            let status = status.map(|s| s.parse::<RunStatus>()).transpose()?;
            let filter = RunFilter {
                status,
                limit,
                ..Default::default()
            };
            let (runs, _) = store.list_runs(&workspace, &filter).await?;
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
        } => {
            let store = open(&db).await?;
            let outcome: opsledger_core::Outcome = outcome.parse()?;
            anyhow::ensure!(outcome.is_terminal(), "`{outcome}` is not a terminal outcome");
            let by = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "admin".into()));
            match store.force_close(&id, outcome, &reason, &by).await? {
                opsledger_store::CompleteResult::Completed(r) => println!("{} closed as {}", r.id, r.outcome),
                other => anyhow::bail!("run {} was already completed as {}", id, other.run().outcome),
            }
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
