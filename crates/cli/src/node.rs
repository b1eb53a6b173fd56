//! One opsledger node: the job runner, the periodic stale sweep, and
//! optionally the HTTP API, sharing one store, stopped together on Ctrl-C or
//! SIGTERM (in-flight jobs are released, not failed).

use anyhow::{Context, Result};
use opsledger_core::evidence::EvidenceKey;
use opsledger_engine::stale_sweep::run_periodically;
use opsledger_engine::{FlushPolicy, Registry, Runner, RunnerConfig, SweepConfig};
use opsledger_families::Services;
use opsledger_families::request_budget::StoreBudget;
use opsledger_providers::graph::budget::LocalBudget;
use opsledger_providers::{BudgetLimits, GraphSettings, ProviderSettings, Secret};
use opsledger_server::{AppState, HttpLimits, http};
use opsledger_store::Store;
use opsledger_store::files::FileStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `--workers`: at least one (a node runs what it claims: zero would still
/// claim nothing and say it is a worker), at most [`MAX_WORKERS`].
fn workers_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of workers from 1 to {MAX_WORKERS}"
        )),
    }
}

/// More jobs at once than one node's database pool and provider budget serve.
pub const MAX_WORKERS: usize = 256;

#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// Jobs executed at once by this node.
    #[arg(
        long = "workers",
        alias = "concurrency",
        env = "OPSLEDGER_WORKERS",
        default_value_t = 4,
        value_parser = workers_count
    )]
    pub workers: usize,
    /// How often a running job writes its heartbeat.
    #[arg(long, env = "OPSLEDGER_HEARTBEAT_INTERVAL_MS", default_value_t = 5000)]
    pub heartbeat_interval_ms: u64,
    /// A job without a heartbeat for this long loses its lease; overrides every type's timeout.
    #[arg(long, env = "OPSLEDGER_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// A run queued this long without pickup is stale; overrides every type's timeout.
    #[arg(long, env = "OPSLEDGER_QUEUE_TIMEOUT_MS")]
    pub queue_timeout_ms: Option<u64>,
    /// How often this node runs the stale sweep.
    #[arg(long, env = "OPSLEDGER_RECONCILE_INTERVAL_MS", default_value_t = 30_000)]
    pub reconcile_interval_ms: u64,
    /// Finished jobs older than this are deleted by the stale sweep (the
    /// unit ledger stays: it is the proof).
    #[arg(long, env = "OPSLEDGER_JOB_RETENTION_MS", default_value_t = opsledger_store::job_cleaner::DEFAULT_JOB_RETENTION_MS)]
    pub job_retention_ms: u64,
    /// How often this node's scheduler looks for due schedule slots.
    #[arg(long, env = "OPSLEDGER_SCHEDULER_INTERVAL_MS", default_value_t = 5000)]
    pub scheduler_interval_ms: u64,
    /// How often to look for jobs when not woken.
    #[arg(long, env = "OPSLEDGER_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,
    /// First retry delay of a failed job; doubles per attempt.
    #[arg(long, env = "OPSLEDGER_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Unit results committed together (1: each on its own).
    #[arg(
        long,
        env = "OPSLEDGER_FLUSH_MAX_RESULTS",
        default_value_t = FlushPolicy::default().max_results as u32,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub flush_max_results: u32,
    /// The longest a unit result waits for its batch: how stale a run's
    /// counters may be.
    #[arg(
        long,
        env = "OPSLEDGER_FLUSH_MAX_WAIT_MS",
        default_value_t = FlushPolicy::default().max_wait.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub flush_max_wait_ms: u64,
    /// Added to every demo provider call, so progress can be watched.
    #[arg(long, env = "OPSLEDGER_DEMO_LATENCY_MS", default_value_t = 0)]
    pub demo_latency_ms: u64,
    /// Folders under which `folder:` tenants may be added over the API
    /// (`:`-separated); none by default. The CLI's `tenant add` is not confined.
    #[arg(long, env = "OPSLEDGER_FOLDER_ROOTS", value_delimiter = ':')]
    pub folder_roots: Vec<std::path::PathBuf>,
    /// Time a client has to send a complete request head (from connecting,
    /// or from the first byte of a next request on a kept-alive connection).
    #[arg(
        long,
        env = "OPSLEDGER_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = http::DEFAULT_HEADER_READ_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http_header_timeout_ms: u64,
    /// A kept-alive connection with no request in progress is closed after this.
    #[arg(
        long,
        env = "OPSLEDGER_HTTP_IDLE_TIMEOUT_MS",
        default_value_t = http::DEFAULT_IDLE_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http_idle_timeout_ms: u64,
    /// Time from a complete request head to the response, body included (408 past it).
    #[arg(
        long,
        env = "OPSLEDGER_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = http::DEFAULT_REQUEST_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http_request_timeout_ms: u64,
    /// Open HTTP connections on this node; at the cap, new ones wait to be accepted.
    #[arg(
        long,
        env = "OPSLEDGER_HTTP_MAX_CONNECTIONS",
        default_value_t = http::DEFAULT_MAX_CONNECTIONS as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub http_max_connections: u32,
    /// This node's data directory: file artifacts (review-pack ZIPs) under
    /// `DIR/artifacts` unless `--artifacts-url` names a shared bucket, and
    /// drafts being written in either case. Without it (and without a
    /// bucket) this node does not generate review packs.
    #[arg(long = "data", env = "OPSLEDGER_DATA")]
    pub data: Option<std::path::PathBuf>,
    /// An S3-compatible bucket every node shares for file artifacts
    /// (`s3://BUCKET[/PREFIX]`; endpoint and credentials from `AWS_ENDPOINT`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).
    #[arg(long, env = "OPSLEDGER_ARTIFACTS_URL")]
    pub artifacts_url: Option<String>,
    #[command(flatten)]
    pub graph: GraphArgs,
}

/// Where file artifacts are kept: the shared bucket `artifacts_url`, else
/// `DATA/artifacts`; `None` without either.
pub fn file_store(artifacts_url: Option<&str>, data: Option<&std::path::Path>) -> Result<Option<FileStore>> {
    let files = match (artifacts_url, data) {
        (Some(url), data) => {
            // Drafts are written on local disk first: in the node's own
            // data directory, never a shared one such as /tmp.
            let Some(data) = data else {
                anyhow::bail!(
                    "--artifacts-url needs --data (OPSLEDGER_DATA): drafts are written there before upload"
                );
            };
            FileStore::bucket(url, &[], data.join("artifacts").join("tmp"))
        }
        (None, Some(data)) => FileStore::new(data.join("artifacts")),
        (None, None) => return Ok(None),
    };
    Ok(Some(files.map_err(|e| anyhow::anyhow!("{e}"))?))
}

/// The evidence signing key, never a flag (it would show in `ps` and
/// `--help`): `OPSLEDGER_EVIDENCE_KEY`, or the file named by
/// `OPSLEDGER_EVIDENCE_KEY_FILE`; the same on every node. `None` when
/// neither is set.
pub fn evidence_key_from_env() -> Result<Option<EvidenceKey>> {
    evidence_key(None)
}

/// The key from the environment, else `DATA/evidence.key` when `data`
/// holds one (the demo keeps its key there; every command given that
/// `--data` finds it, `runs force-close` included).
pub fn evidence_key_with_data(data: Option<&std::path::Path>) -> Result<Option<EvidenceKey>> {
    let demo_key = data.map(|d| d.join("evidence.key")).filter(|p| p.is_file());
    evidence_key(demo_key.as_deref())
}

/// The key from the environment, else from `fallback_file`.
fn evidence_key(fallback_file: Option<&std::path::Path>) -> Result<Option<EvidenceKey>> {
    let inline = std::env::var("OPSLEDGER_EVIDENCE_KEY")
        .ok()
        .filter(|s| !s.is_empty());
    let file = std::env::var_os("OPSLEDGER_EVIDENCE_KEY_FILE").filter(|s| !s.is_empty());
    anyhow::ensure!(
        inline.is_none() || file.is_none(),
        "both OPSLEDGER_EVIDENCE_KEY and OPSLEDGER_EVIDENCE_KEY_FILE are set: set one"
    );
    let bytes = match (
        inline,
        file.or_else(|| fallback_file.map(|p| p.as_os_str().to_owned())),
    ) {
        (Some(key), _) => key.trim().as_bytes().to_vec(),
        (None, Some(path)) => read_key_file(std::path::Path::new(&path))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(
        EvidenceKey::new(bytes).map_err(|e| anyhow::anyhow!("OPSLEDGER_EVIDENCE_KEY: {e}"))?,
    ))
}

/// A key file's bytes, trimmed: opened once, a regular file (not a FIFO
/// that would hang the start, nor a device that never ends), read at most
/// one byte past the largest key. The error names the file, never its content.
fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let shown = || format!("reading OPSLEDGER_EVIDENCE_KEY_FILE {}", path.display());
    let file = std::fs::File::open(path).with_context(shown)?;
    let meta = file.metadata().with_context(shown)?;
    anyhow::ensure!(
        meta.is_file(),
        "OPSLEDGER_EVIDENCE_KEY_FILE {} is not a regular file",
        path.display()
    );
    #[cfg(unix)]
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
        tracing::warn!(
            "the evidence key file {} is readable by others than its owner",
            path.display()
        );
    }
    let limit = opsledger_core::evidence::MAX_KEY_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    file.take(limit + 64)
        .read_to_end(&mut bytes)
        .with_context(shown)?;
    let trimmed = bytes.trim_ascii().to_vec();
    anyhow::ensure!(
        (trimmed.len() as u64) < limit,
        "OPSLEDGER_EVIDENCE_KEY_FILE {} is larger than a key",
        path.display()
    );
    Ok(trimmed)
}

/// How `graph:` tenants are reached. The client secret is not a flag: it is
/// read from `OPSLEDGER_GRAPH_CLIENT_SECRET` (or the file named by
/// `OPSLEDGER_GRAPH_CLIENT_SECRET_FILE`) straight into a [`Secret`], so it
/// never shows in `--help`, in a `Debug` of the arguments, or in `ps`.
#[derive(clap::Args, Clone, Debug)]
pub struct GraphArgs {
    /// The app (client) id of the Entra application.
    #[arg(long, env = "OPSLEDGER_GRAPH_CLIENT_ID")]
    pub graph_client_id: Option<String>,
    /// Token endpoints are `{authority}/{TENANT_ID}/oauth2/v2.0/token`.
    #[arg(long, env = "OPSLEDGER_GRAPH_AUTHORITY", default_value = opsledger_providers::graph::DEFAULT_AUTHORITY)]
    pub graph_authority: String,
    /// Microsoft Graph's base URL (national clouds, the fake Graph).
    #[arg(long, env = "OPSLEDGER_GRAPH_URL", default_value = opsledger_providers::graph::DEFAULT_GRAPH_URL)]
    pub graph_url: String,
    /// Requests per window per app and tenant, shared by every node of the database.
    #[arg(long, env = "OPSLEDGER_GRAPH_BUDGET_REQUESTS", default_value_t = BudgetLimits::default().requests,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub graph_budget_requests: u32,
    /// Writes per window per app and tenant.
    #[arg(long, env = "OPSLEDGER_GRAPH_BUDGET_WRITES", default_value_t = BudgetLimits::default().writes,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub graph_budget_writes: u32,
    /// The budget's window.
    #[arg(long, env = "OPSLEDGER_GRAPH_BUDGET_WINDOW_MS", default_value_t = BudgetLimits::default().window.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub graph_budget_window_ms: u64,
    /// Requests a node takes from the shared budget at once.
    #[arg(long, env = "OPSLEDGER_GRAPH_BUDGET_SLICE", default_value_t = BudgetLimits::default().slice,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub graph_budget_slice: u32,
}

impl GraphArgs {
    /// The Graph settings; with a store, the budget is the database's (shared
    /// by every node), else this process's own.
    pub fn settings(&self, store: Option<&Store>) -> Result<GraphSettings> {
        let secret = match (
            std::env::var("OPSLEDGER_GRAPH_CLIENT_SECRET")
                .ok()
                .filter(|s| !s.is_empty()),
            std::env::var_os("OPSLEDGER_GRAPH_CLIENT_SECRET_FILE").filter(|s| !s.is_empty()),
        ) {
            (Some(s), _) => Some(Secret::new(s)),
            (None, Some(path)) => {
                // The error names the file, never its content.
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "reading OPSLEDGER_GRAPH_CLIENT_SECRET_FILE {}",
                        std::path::Path::new(&path).display()
                    )
                })?;
                Some(Secret::new(text.trim()))
            }
            (None, None) => None,
        };
        let limits = BudgetLimits {
            window: Duration::from_millis(self.graph_budget_window_ms),
            requests: self.graph_budget_requests,
            writes: self.graph_budget_writes,
            slice: self.graph_budget_slice.min(self.graph_budget_requests),
            write_slice: BudgetLimits::default().write_slice.min(self.graph_budget_writes),
        };
        let base = GraphSettings {
            client_id: self.graph_client_id.clone().filter(|s| !s.is_empty()),
            client_secret: secret,
            authority: self.graph_authority.clone(),
            graph_url: self.graph_url.clone(),
            ..GraphSettings::default()
        };
        Ok(match store {
            Some(store) => base.with_budget(Arc::new(StoreBudget::new(store.clone())), limits),
            None => base.with_budget(Arc::new(LocalBudget::default()), limits),
        })
    }
}

impl NodeArgs {
    /// What every provider of this node is built with: `graph:` tenants
    /// spend the store's shared request budget; demo tenants keep their
    /// writes in the store (a restore into one survives a restart and every
    /// node sees it).
    pub fn provider_settings(&self, store: &Store) -> Result<ProviderSettings> {
        Ok(ProviderSettings {
            demo_latency: Duration::from_millis(self.demo_latency_ms),
            graph: self.graph.settings(Some(store))?,
            demo_state: Some(std::sync::Arc::new(
                opsledger_families::demo_state::StoreDemoState::new(store.clone()),
            )),
            folder_roots: Some(self.folder_roots.clone()),
        })
    }

    /// Where this node keeps file artifacts ([`file_store`]).
    pub fn file_store(&self) -> Result<Option<FileStore>> {
        file_store(self.artifacts_url.as_deref(), self.data.as_deref())
    }

    /// What this node's families are built with.
    pub fn services(&self, store: &Store) -> Result<Services> {
        Ok(Services {
            providers: self.provider_settings(store)?,
            files: self.file_store()?,
            evidence_key: evidence_key_with_data(self.data.as_deref())?,
        })
    }

    /// The families with this node's services.
    pub fn registry(&self, store: &Store) -> Result<Registry> {
        Ok(opsledger_families::registry_with(self.services(store)?))
    }

    pub fn sweep_config(&self) -> SweepConfig {
        SweepConfig {
            queue_timeout_ms: self.queue_timeout_ms,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            batch: 1000,
            job_retention_ms: Some(self.job_retention_ms),
        }
    }

    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(self.http_header_timeout_ms),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            request_timeout: Duration::from_millis(self.http_request_timeout_ms),
            max_connections: self.http_max_connections as usize,
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_millis(
            self.heartbeat_timeout_ms
                .unwrap_or(opsledger_core::catalog::DEFAULT_HEARTBEAT_TIMEOUT_MS),
        )
    }
}

/// Runs the node until interrupted. `on_listening` gets the bound address
/// (useful with port 0) before requests are served.
pub async fn run(
    store: Store,
    listen: Option<&str>,
    args: NodeArgs,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    anyhow::ensure!(
        args.heartbeat_interval_ms < args.lease().as_millis() as u64,
        "the heartbeat interval ({} ms) must be shorter than the heartbeat timeout ({} ms)",
        args.heartbeat_interval_ms,
        args.lease().as_millis()
    );
    // A result waiting for its batch stays under the heartbeat, but a wait
    // near the lease would make every flush a race with the rescuer.
    anyhow::ensure!(
        args.flush_max_wait_ms.saturating_mul(4) <= args.lease().as_millis() as u64,
        "the flush wait ({} ms) must be at most a quarter of the heartbeat timeout ({} ms)",
        args.flush_max_wait_ms,
        args.lease().as_millis()
    );
    let services = args.services(&store)?;
    if let Some(files) = &services.files {
        files
            .probe()
            .await
            .map_err(|e| anyhow::anyhow!("artifact storage: {e}"))?;
    }
    let registry = opsledger_families::registry_with(services.clone());
    let runner = Runner::new(
        store.clone(),
        registry.clone(),
        RunnerConfig {
            concurrency: args.workers,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
            lease: args.lease(),
            retry_base: Duration::from_millis(args.retry_base_ms),
            flush: FlushPolicy {
                max_results: args.flush_max_results as usize,
                max_wait: Duration::from_millis(args.flush_max_wait_ms),
            },
            ..RunnerConfig::default()
        },
    );
    let shutdown = CancellationToken::new();
    let wake = runner.notifier();
    let runner = tokio::spawn(runner.run(shutdown.clone()));
    let sweeper = tokio::spawn(run_periodically(
        store.clone(),
        registry.clone(),
        args.sweep_config(),
        Duration::from_millis(args.reconcile_interval_ms),
        shutdown.clone(),
    ));
    let scheduler = tokio::spawn(opsledger_engine::scheduler::run_periodically(
        store.clone(),
        Duration::from_millis(args.scheduler_interval_ms),
        wake.clone(),
        shutdown.clone(),
    ));
    let server = match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!("API on http://{local}/api/v1");
            on_listening(local);
            let state = AppState {
                files: services.files.clone(),
                evidence_key: services.evidence_key.clone(),
                store: store.clone(),
                registry,
                wake,
                providers: services.providers.clone(),
            };
            Some(tokio::spawn(opsledger_server::serve(
                listener,
                state,
                args.http_limits(),
                shutdown.clone(),
            )))
        }
        None => {
            tracing::info!(workers = args.workers, "worker started");
            None
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    if let Some(server) = server {
        server.await?.context("server")?;
    }
    runner.await?;
    sweeper.await?;
    scheduler.await?;
    store.close().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
