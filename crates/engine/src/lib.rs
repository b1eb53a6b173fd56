//! The engine executes operation runs and keeps the queue truthful. It knows
//! jobs, leases, heartbeats, retries, rescue, fan-out, the stale sweep and the
//! adapter registry — nothing about Intune; families plug in through
//! [`Handler`], [`UnitHandler`] and [`ReconciliationAdapter`].
//!
//! | concern | module |
//! |---|---|
//! | handler traits, contexts, errors | [`handler`] |
//! | type → handler / unit handler / adapter | [`registry`] |
//! | claim, heartbeat, retry, release, finish | [`runner`] |
//! | stale sweep (rescue, bulk completion, reconciliation) | [`stale_sweep`] |
//! | adapter trait, decide + apply; admin force-close | [`reconciler`] |

pub mod handler;
pub mod reconciler;
pub mod registry;
pub mod runner;
pub mod stale_sweep;

pub use handler::{Handler, HandlerError, RunContext, UnitContext, UnitHandler};
pub use reconciler::{ForceCloseError, ReconciliationAdapter, force_close};
pub use registry::Registry;
pub use runner::{Runner, RunnerConfig};
pub use stale_sweep::{SweepConfig, SweepReport, sweep_once};
