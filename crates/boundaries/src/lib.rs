//! The store's boundaries, proven by the compiler: each example below must
//! **fail to compile** in a build without the store's `test-support` feature
//! (a release build). Run them on their own, so no other crate's
//! dev-dependencies turn the feature on:
//!
//! ```text
//! cargo test -p opsledger-boundaries --doc
//! ```
//!
//! (`cargo test --workspace --doc` would unify the feature on for every
//! crate — the test crates need it — so the README's test command runs this
//! crate separately, and CI runs that command.)
//!
//! ## No crate reaches a pool or runs SQL
//!
//! The store's connections are a private field:
//!
//! ```compile_fail,E0616
//! fn pool(store: &opsledger_store::Store) {
//!     let _ = &store.pool;
//! }
//! ```
//!
//! A store is not an executor for hand-written SQL:
//!
//! ```compile_fail,E0277
//! async fn raw(store: &opsledger_store::Store) {
//!     let _ = sqlx::query("UPDATE operation_runs SET processed = 0").execute(store).await;
//! }
//! ```
//!
//! The per-backend macro that used to expand SQL against the pools is gone,
//! and its test-only successor does not exist without `test-support`:
//!
//! ```compile_fail
//! fn pool(store: &opsledger_store::Store) {
//!     opsledger_store::on_pool!(store, pool => { let _ = pool; });
//! }
//! ```
//!
//! ```compile_fail
//! fn pool(store: &opsledger_store::Store) {
//!     opsledger_store::raw_on_pool!(store, pool => { let _ = pool; });
//! }
//! ```
//!
//! ```compile_fail,E0433
//! fn pool(store: &opsledger_store::Store) {
//!     let _ = opsledger_store::testing::raw_pool(store);
//! }
//! ```
//!
//! ## No unfenced write of a leased run
//!
//! Outside tests the store has no verb that does a handler's work without a
//! lease: recording units, setting `total`, patching the context, planning a
//! fan-out and a handler's completion all go through a `LeasedRun`. (The
//! closing verbs that act on a run from outside — cancel, force-close,
//! reconciliation, bulk completion, closing an idle run — carry their own
//! guard, checked inside the closing transaction.)
//!
//! Error codes below are documentation: stable rustdoc checks only that the
//! example fails to compile. Each example is the smallest use of the thing
//! it names, so no other error can make it fail.
//!
//! ```compile_fail,E0599
//! async fn record(store: &opsledger_store::Store) {
//!     let _ = store.record_units("run", &[]).await;
//! }
//! ```
//!
//! ```compile_fail,E0599
//! async fn total(store: &opsledger_store::Store) {
//!     let _ = store.init_total("run", 3).await;
//! }
//! ```
//!
//! ```compile_fail,E0599
//! async fn close(store: &opsledger_store::Store) {
//!     let c = opsledger_store::Completion::new(opsledger_core::Outcome::Succeeded);
//!     let _ = store.complete_run("run", c).await;
//! }
//! ```
//!
//! ```compile_fail,E0599
//! async fn plan(store: &opsledger_store::Store) {
//!     let _ = store.enqueue_units("run", &[], 3).await;
//! }
//! ```
//!
//! ```compile_fail,E0624
//! async fn patch(store: &opsledger_store::Store) {
//!     let _ = store.patch_context_fenced(None, "run", &[]).await;
//! }
//! ```
//!
//! ## Handlers never hold the store
//!
//! A run handler's context has no store, and its lease's store is private:
//!
//! ```compile_fail,E0609
//! fn handler(ctx: &opsledger_engine::RunContext) {
//!     let _ = &ctx.store;
//! }
//! ```
//!
//! ```compile_fail,E0616
//! fn handler(ctx: &opsledger_engine::RunContext) {
//!     let _ = &ctx.lease;
//! }
//! ```
//!
//! ```compile_fail,E0624
//! fn handler(run: &opsledger_store::lease::LeasedRun) {
//!     let _ = run.store();
//! }
//! ```
//!
//! A unit handler only reads; its unit's result is data the runtime commits:
//!
//! ```compile_fail,E0599
//! async fn unit(ctx: &opsledger_engine::UnitContext) {
//!     let _ = ctx.reads.record_units(&[]).await;
//! }
//! ```
//!
//! ```compile_fail,E0609
//! fn unit(ctx: &opsledger_engine::UnitContext) {
//!     let _ = &ctx.store;
//! }
//! ```
//!
//! ## What a handler does instead (this one compiles)
//!
//! ```no_run
//! use opsledger_engine::{HandlerError, RunContext};
//! use opsledger_store::{Completion, UnitRecord};
//!
//! async fn handler(ctx: RunContext) -> Result<(), HandlerError> {
//!     ctx.init_total(1).await?;
//!     ctx.record_units(&[UnitRecord::new("a", opsledger_core::UnitOutcome::Succeeded)]).await?;
//!     ctx.complete(Completion::new(opsledger_core::Outcome::Succeeded)).await?;
//!     Ok(())
//! }
//! ```
