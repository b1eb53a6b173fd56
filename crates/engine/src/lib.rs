//! The engine runs operation runs in the background: a registry maps each
//! run type to its handler, and the [`runner::Runner`] claims queued runs,
//! executes their handlers with heartbeats, and guarantees that every run it
//! picked up reaches a terminal outcome (a handler that errors or returns
//! with its run still open is closed as `failed`, fail-closed).
//!
//! This crate knows nothing about Intune; families plug in through
//! [`Handler`].

pub mod handler;
pub mod registry;
pub mod runner;

pub use handler::{Handler, HandlerError, RunContext};
pub use registry::HandlerRegistry;
pub use runner::{Runner, RunnerConfig};
