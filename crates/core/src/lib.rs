//! Pure rules of opsledger operation runs.
//!
//! Every rule of `OPERATIONS.md` that can be a pure function lives here, one
//! module per rule, so a reader finds each in one obvious place:
//!
//! | rule (OPERATIONS.md)                | module        |
//! |-------------------------------------|---------------|
//! | §2 run record, statuses, outcomes   | [`run`], [`status`] |
//! | §3 summary counts whitelist         | [`counts`]    |
//! | §3 counts of a run closed early, §8 force-close | [`closing`] |
//! | §4 progress contract                | [`progress`]  |
//! | §4/§5 phases: plan, forward moves, closing | [`phases`] |
//! | §5 bulk outcome derivation          | [`outcome`]   |
//! | §6 catalog of run families (one [`catalog::TypeSpec`] per type: scope, capability, dedup key, progress, attempts, timeouts) | [`catalog`]   |
//! | start parameters and their validation | [`params`]  |
//! | policy types opsledger knows        | [`policy_types`] |
//! | normalization and content hashes (backup items, read-back equality, drift) | [`normalize`] |
//! | drift: a baseline compared with a tenant (pure diff and matching) | [`drift`] |
//! | §7 stale timeouts, retries          | [`catalog`]   |
//! | §8 adapter results, reconciliation record | [`reconcile`] |
//! | §8 inventory coverage decision      | [`inventory`] |
//! | §9 roles → capabilities             | [`access`]    |
//!
//! This crate has no IO and no async: it is the part that must never be wrong,
//! so it is the part that is cheapest to test exhaustively.

pub mod access;
pub mod baseline;
pub mod catalog;
pub mod closing;
pub mod counts;
pub mod drift;
pub mod evidence;
pub mod failure;
pub mod inventory;
pub mod normalize;
pub mod outcome;
pub mod params;
pub mod phases;
pub mod policy_types;
pub mod progress;
pub mod reconcile;
pub mod review_pack;
pub mod run;
pub mod schedule;
pub mod status;

pub use catalog::{ProgressKind, RunType, Scope};
pub use counts::{CountKey, CountsError, SummaryCounts};
pub use failure::Failure;
pub use progress::{Progress, ProgressMode};
pub use run::{Phase, PhaseState, Run};
pub use status::{Outcome, RunStatus, UnitOutcome};
