//! The engine executes operation runs and keeps the queue truthful. It knows
//! jobs, leases, heartbeats, retries, rescue, fan-out, the stale sweep and the
//! adapter registry — nothing about Intune; families plug in through
//! [`Handler`], [`UnitHandler`] and [`ReconciliationAdapter`].
//!
//! | concern | module |
//! |---|---|
//! | handler traits, contexts, errors | [`handler`] |
//! | type → handler / unit handler / adapter | [`registry`] |
//! | claiming jobs into free slots (the producer); when it claims | [`runner`], [`claim_pacing`] |
//! | executing one job; the node's heartbeat and stall check | [`executor`], [`heartbeat`] |
//! | how a job ends: the pure decision, then its writes | [`finish`], [`completer`] |
//! | unit results committed many per transaction | [`batch_completer`] |
//! | stale sweep (rescue, bulk completion, reconciliation) | [`stale_sweep`] |
//! | adapter trait, decide + apply; admin force-close | [`reconciler`] |

pub mod batch_completer;
pub mod claim_pacing;
mod completer;
mod executor;
pub mod finish;
pub mod handler;
pub mod heartbeat;
pub mod reconciler;
pub mod registry;
pub mod runner;
pub mod scheduler;
pub mod stale_sweep;

pub use batch_completer::FlushPolicy;
pub use handler::{Handler, HandlerError, Liveness, RunContext, UnitContext, UnitHandler, UnitResult};
pub use reconciler::{ForceCloseError, ReconciliationAdapter, force_close};
pub use registry::{Family, Registry};
pub use runner::{Runner, RunnerConfig};
pub use stale_sweep::{SweepConfig, SweepReport, sweep_once};
