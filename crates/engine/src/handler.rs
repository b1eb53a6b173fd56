//! What a family implements to execute one run type.

use async_trait::async_trait;
use opsledger_core::Run;
use opsledger_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

/// Everything a handler gets: the claimed run, the store's writer path, and a
/// token that is cancelled when the process shuts down.
#[derive(Clone)]
pub struct RunContext {
    pub run: Run,
    pub store: Store,
    pub shutdown: CancellationToken,
}

/// A handler failure the runner must close the run for.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{message}")]
    Failed { code: &'static str, message: String },
}

/// Executes runs of one type. A handler records units and completes its run
/// through the store; if it returns while the run is still open, the runner
/// closes it as failed.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError>;
}
