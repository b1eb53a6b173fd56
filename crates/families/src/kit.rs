//! What every family needs from a provider, written once: the tenant's
//! provider opened from its record, provider calls that give way to a
//! cancellation and retry what Microsoft Graph asks to retry, and provider
//! errors mapped to handler errors.

use opsledger_core::Failure;
use opsledger_engine::{HandlerError, Liveness};
use opsledger_providers::{Provider, ProviderError, ProviderSettings};
use opsledger_store::StoreError;
use opsledger_store::lease::RunReads;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts per provider call before a transient error (429, 5xx) is final.
pub const MAX_ATTEMPTS: u32 = 4;
/// The longest `Retry-After` honoured; longer asks end the call.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why the run's provider could not be opened.
#[derive(Debug)]
pub enum OpenFailed {
    /// The tenant is gone or its provider cannot be opened: the work cannot
    /// start, and retrying will not change that (a run ends `blocked`).
    Unavailable(Failure),
    /// The database could not be read.
    Store(StoreError),
}

impl From<OpenFailed> for HandlerError {
    /// For a unit handler: an unavailable provider fails the unit for good.
    fn from(e: OpenFailed) -> HandlerError {
        match e {
            OpenFailed::Unavailable(failure) => HandlerError::Failed {
                failure,
                retry_after: None,
            },
            OpenFailed::Store(e) => e.into(),
        }
    }
}

/// The provider of the run's tenant.
pub async fn open_provider(
    reads: &RunReads,
    settings: &ProviderSettings,
) -> Result<Arc<dyn Provider>, OpenFailed> {
    let head = reads.head();
    let Some(tenant_id) = head.tenant_id.as_deref() else {
        return Err(OpenFailed::Unavailable(Failure::new(
            "tenant_missing",
            format!("{} needs a tenant", head.run_type),
        )));
    };
    let Some(tenant) = reads.tenant().await.map_err(OpenFailed::Store)? else {
        return Err(OpenFailed::Unavailable(Failure::new(
            "tenant_not_found",
            format!("tenant {tenant_id} does not exist"),
        )));
    };
    opsledger_providers::open(&tenant.provider, &tenant.id, &tenant.name, settings)
        .map_err(|e| OpenFailed::Unavailable(Failure::new(e.code(), e.to_string())))
}

/// What a fan-out's units of one run share, computed once per run and
/// process (a set's directory, a restore's plan): a few runs' values, the
/// oldest dropped first. Values are never refreshed, so only what a run
/// never changes may be cached here.
pub struct RunCache<T> {
    runs: std::sync::Mutex<Vec<(String, Arc<T>)>>,
    capacity: usize,
}

impl<T> RunCache<T> {
    pub const fn new(capacity: usize) -> RunCache<T> {
        RunCache {
            runs: std::sync::Mutex::new(Vec::new()),
            capacity,
        }
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<T>> {
        let runs = self.runs.lock().expect("lock");
        runs.iter().find(|(id, _)| id == run_id).map(|(_, v)| v.clone())
    }

    pub fn put(&self, run_id: &str, value: Arc<T>) {
        let mut runs = self.runs.lock().expect("lock");
        if runs.len() >= self.capacity {
            runs.remove(0);
        }
        runs.push((run_id.to_owned(), value));
    }
}

/// Where a phased run stands, so a retried attempt re-does the work of the
/// phases it passed (idempotent) without moving its phases back.
pub struct PhaseCursor {
    keys: Vec<String>,
    /// The index of the phase the run is in (or about to enter).
    reached: usize,
}

impl PhaseCursor {
    /// The cursor of `run` over its declared `plan`.
    pub fn of(run: &opsledger_core::Run, plan: &[opsledger_core::phases::PhasePlan]) -> PhaseCursor {
        use opsledger_core::PhaseState;
        let reached = run
            .phases
            .as_ref()
            .and_then(|ps| {
                let at = ps.iter().rposition(|p| p.state != PhaseState::Pending)?;
                Some(if ps[at].state == PhaseState::Active {
                    at
                } else {
                    at + 1
                })
            })
            .unwrap_or(0);
        PhaseCursor {
            keys: plan.iter().map(|p| p.key.clone()).collect(),
            reached,
        }
    }

    /// Enters phase `key` (with `total` units when it counts them) unless
    /// an earlier attempt has already passed it.
    pub async fn enter(
        &mut self,
        ctx: &opsledger_engine::RunContext,
        key: &str,
        total: Option<u64>,
    ) -> Result<(), StoreError> {
        let at = self.keys.iter().position(|k| k == key).unwrap_or(usize::MAX);
        if at < self.reached {
            return Ok(());
        }
        ctx.set_phase(key, total).await?;
        self.reached = at;
        Ok(())
    }
}

/// The call was interrupted: the run was cancelled or the node shuts down.
/// Nothing of the interrupted work may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Calls `f`, retrying throttling (after its `Retry-After`) and 5xx (with
/// exponential backoff) up to [`MAX_ATTEMPTS`]. A cancellation interrupts
/// the call or the wait. Each call that returns marks `liveness`.
pub async fn with_retries<T, F, Fut>(
    cancel: &CancellationToken,
    liveness: &Liveness,
    mut f: F,
) -> Result<T, Result<ProviderError, Stopped>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Err(Stopped)),
            r = f() => r,
        };
        // A call that came back, even throttled, is progress: the stall
        // check must leave a slow but answering tenant alone.
        liveness.mark();
        let err = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !err.is_transient() {
            return Err(Ok(err));
        }
        // The source's Retry-After when it gave one (a longer ask than we
        // honour ends the call), else exponential backoff.
        let wait = match err.retry_after() {
            Some(after) if after <= MAX_RETRY_AFTER => after,
            Some(_) => return Err(Ok(err)),
            None => Duration::from_millis(100 << attempt.min(6)),
        };
        if attempt >= MAX_ATTEMPTS {
            return Err(Ok(err));
        }
        tracing::debug!(attempt, ?wait, error = %err, "retrying provider call");
        tokio::select! {
            _ = cancel.cancelled() => return Err(Err(Stopped)),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A provider error that ends the job's attempt: throttling and 5xx are
/// transient (the runner retries the job after backoff), the rest final.
pub fn provider_error(e: ProviderError, unit: Option<&str>) -> HandlerError {
    let mut failure = Failure::new(e.code(), e.to_string());
    if let Some(unit) = unit {
        failure = failure.for_unit(unit.to_owned());
    }
    let retry_after = if e.is_transient() {
        Some(e.retry_after().unwrap_or(Duration::ZERO))
    } else {
        None
    };
    HandlerError::Failed { failure, retry_after }
}

/// Waits `pace` when the run's tenant is a demo tenant (`demo:PROFILE`), so
/// that work making no provider call (a delete's units, an update) can be
/// watched running in the demo like the work that does
/// (`OPSLEDGER_DEMO_LATENCY_MS`, [`ProviderSettings::demo_latency`]). No wait
/// for any other tenant, or when `pace` is zero; a cancel ends the wait.
pub async fn demo_pace(
    reads: &RunReads,
    pace: Duration,
    cancel: &CancellationToken,
) -> Result<(), HandlerError> {
    if pace.is_zero()
        || !reads
            .tenant()
            .await?
            .is_some_and(|t| t.provider.starts_with("demo:"))
    {
        return Ok(());
    }
    tokio::select! {
        _ = cancel.cancelled() => Err(HandlerError::Stopped),
        _ = tokio::time::sleep(pace) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_cache_keeps_its_last_runs() {
        let c: RunCache<u8> = RunCache::new(2);
        c.put("a", Arc::new(1));
        c.put("b", Arc::new(2));
        c.put("c", Arc::new(3));
        assert_eq!(c.get("a"), None, "the oldest was dropped");
        assert_eq!(
            (c.get("b").as_deref(), c.get("c").as_deref()),
            (Some(&2), Some(&3))
        );
    }

    #[test]
    fn transient_errors_are_retried_later_and_the_rest_are_final() {
        let retry = |e| match provider_error(e, Some("t/1")) {
            HandlerError::Failed { failure, retry_after } => {
                assert_eq!(failure.unit.as_deref(), Some("t/1"));
                retry_after
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            retry(ProviderError::throttled(Some(Duration::from_secs(3)), "429")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry(ProviderError::service(503, "x")), Some(Duration::ZERO));
        assert_eq!(retry(ProviderError::service(400, "x")), None);
        assert_eq!(retry(ProviderError::NotFound("x".into())), None);
    }

    #[tokio::test]
    async fn a_cancelled_call_stops_without_another_attempt() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut calls = 0;
        let r: Result<(), _> = with_retries(&cancel, &Liveness::default(), || {
            calls += 1;
            async { Err(ProviderError::throttled(Some(Duration::ZERO), "429")) }
        })
        .await;
        assert_eq!(r.unwrap_err().unwrap_err(), Stopped);
        assert!(calls <= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn every_answer_even_throttled_is_progress() {
        let liveness = Liveness::default();
        let before = format!("{liveness:?}");
        let mut calls = 0;
        let r: Result<(), _> = with_retries(&CancellationToken::new(), &liveness, || {
            calls += 1;
            let answer = if calls < 3 {
                Err(ProviderError::throttled(Some(Duration::from_secs(30)), "429"))
            } else {
                Ok(())
            };
            async move { answer }
        })
        .await;
        assert!(r.is_ok());
        assert_ne!(format!("{liveness:?}"), before);
        assert_eq!(format!("{liveness:?}"), "Liveness(3)");
    }

    #[test]
    fn every_types_stall_timeout_outlasts_the_longest_wait_the_kit_makes() {
        // A honoured Retry-After is the longest a working handler sits
        // without an answer; twice that leaves room for the slow call after it.
        for t in opsledger_core::RunType::ALL {
            assert!(
                Duration::from_millis(t.stall_timeout_ms()) > 2 * MAX_RETRY_AFTER,
                "{t}"
            );
        }
    }
}
