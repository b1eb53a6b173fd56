//! One opsledger node: the background runner, and optionally the HTTP API,
//! sharing one store, stopped together on Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_providers::ProviderSettings;
use opsledger_server::AppState;
use opsledger_store::Store;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// Runs executed at once by this node.
    #[arg(
        long = "workers",
        alias = "concurrency",
        env = "OPSLEDGER_WORKERS",
        default_value_t = 4
    )]
    pub workers: usize,
    #[arg(long, env = "OPSLEDGER_HEARTBEAT_INTERVAL_MS", default_value_t = 5000)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, env = "OPSLEDGER_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,
    /// Added to every demo provider call, so progress can be watched.
    #[arg(long, env = "OPSLEDGER_DEMO_LATENCY_MS", default_value_t = 0)]
    pub demo_latency_ms: u64,
}

/// Runs the node until interrupted. `on_listening` gets the bound address
/// (useful with port 0) before requests are served.
pub async fn run(
    store: Store,
    listen: Option<&str>,
    args: NodeArgs,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    let registry = opsledger_families::registry(ProviderSettings {
        demo_latency: Duration::from_millis(args.demo_latency_ms),
    });
    let runner = Runner::new(
        store.clone(),
        registry.clone(),
        RunnerConfig {
            concurrency: args.workers,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
        },
    );
    let shutdown = CancellationToken::new();
    let wake = runner.notifier();
    let runner = tokio::spawn(runner.run(shutdown.clone()));
    let server = match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!("API on http://{local}/api/v1");
            on_listening(local);
            let state = AppState {
                store: store.clone(),
                registry,
                wake,
            };
            Some(tokio::spawn(opsledger_server::serve(
                listener,
                state,
                shutdown.clone(),
            )))
        }
        None => {
            tracing::info!("worker started");
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
