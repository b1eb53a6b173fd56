//! A job's heartbeat: renews its lease and its run's heartbeat every
//! interval, and fires the handler's cancel token — saying why — when the
//! process shuts down, the lease is lost, or the run was closed.

use crate::finish::Stop;
use opsledger_store::Store;
use opsledger_store::jobs::{Fence, Heartbeat};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the token fired, shared with the executor.
pub(crate) type StopSlot = Arc<Mutex<Stop>>;

pub(crate) struct HeartbeatTask {
    pub store: Store,
    pub fence: Fence,
    pub run_id: String,
    pub every: Duration,
    pub lease: Duration,
    pub shutdown: CancellationToken,
    pub cancel: CancellationToken,
    pub stop: StopSlot,
}

impl HeartbeatTask {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.beat())
    }

    fn fire(&self, why: Stop) {
        *self.stop.lock().expect("lock") = why;
        self.cancel.cancel();
    }

    async fn beat(self) {
        let lease_ms = self.lease.as_millis() as u64;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return self.fire(Stop::Shutdown),
                _ = tokio::time::sleep(self.every) => {}
            }
            match self
                .store
                .heartbeat_job(&self.fence, &self.run_id, lease_ms)
                .await
            {
                Ok(Heartbeat::Alive) => {}
                Ok(Heartbeat::LeaseLost) => return self.fire(Stop::LeaseLost),
                Ok(Heartbeat::RunClosed) => return self.fire(Stop::RunClosed),
                Err(e) => tracing::warn!(run = %self.run_id, error = %e, "heartbeat failed"),
            }
        }
    }
}
