//! The per-tenant request budget, as the Graph client spends it.
//!
//! Microsoft Graph throttles per app and tenant (Intune: 1 000 requests per
//! 20 s, 100 of them writes), not per process, so the budget is shared by
//! every node through a [`RequestBudget`] (the store's implementation is
//! wired in by the cli; without one, [`LocalBudget`] keeps this process
//! within the limits on its own). A node takes *slices* of the current
//! window and spends them locally ([`Budgets`]), so the shared source is
//! asked once per slice, not once per request; when the window is spent the
//! client sleeps until it ends instead of sending and being throttled.

use crate::ProviderError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What one take got from the shared budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Requests granted, at most the ask; 0 when the window is spent.
    pub granted: u32,
    /// How long the window the grant belongs to still runs.
    pub window_left: Duration,
}

/// The shared budget could not be read (e.g. the database is down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request budget unavailable: {0}")]
pub struct BudgetError(pub String);

/// A budget shared by every node: fixed windows of `window`, at most `limit`
/// requests granted per `key` and window, between all takers.
#[async_trait]
pub trait RequestBudget: Send + Sync + Debug {
    async fn take(&self, key: &str, window: Duration, limit: u32, want: u32) -> Result<Grant, BudgetError>;
}

/// An in-process budget: the limits held by one process only (the fallback
/// when no shared budget is configured, e.g. `tenant add`).
#[derive(Debug, Default)]
pub struct LocalBudget {
    used: Mutex<HashMap<String, (u128, u32)>>,
}

#[async_trait]
impl RequestBudget for LocalBudget {
    async fn take(&self, key: &str, window: Duration, limit: u32, want: u32) -> Result<Grant, BudgetError> {
        let window_ms = window.as_millis().max(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let start = now - now % window_ms;
        let mut used = self.used.lock().expect("budget lock");
        let entry = used.entry(key.to_owned()).or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        let granted = want.min(limit.saturating_sub(entry.1));
        entry.1 += granted;
        Ok(Grant {
            granted,
            window_left: Duration::from_millis(u64::try_from(start + window_ms - now).unwrap_or(0)),
        })
    }
}

/// The limits a client keeps to, per app and tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    pub window: Duration,
    /// Requests of any kind per window (Intune: 1 000 per 20 s).
    pub requests: u32,
    /// Writes per window (Intune: 100 per 20 s); a write also spends a request.
    pub writes: u32,
    /// Requests a node takes from the shared budget at once.
    pub slice: u32,
    /// Writes a node takes at once.
    pub write_slice: u32,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        BudgetLimits {
            window: Duration::from_secs(20),
            requests: 1000,
            writes: 100,
            slice: 50,
            write_slice: 5,
        }
    }
}

/// One node's local state: the slice in hand per budget key.
#[derive(Debug)]
pub struct Budgets {
    source: Arc<dyn RequestBudget>,
    limits: BudgetLimits,
    slices: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slice>>>>,
}

#[derive(Debug)]
struct Slice {
    remaining: u32,
    /// Spend the slice only before this (the window's end less a guard).
    spend_until: Option<Instant>,
    /// Where the window of the last take ends.
    window_end: Option<Instant>,
}

impl Budgets {
    pub fn new(source: Arc<dyn RequestBudget>, limits: BudgetLimits) -> Budgets {
        Budgets {
            source,
            limits,
            slices: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    /// Spends one request of `key`'s budget, waiting for the next window
    /// when this one is spent. Holding the key's lock while waiting is on
    /// purpose: the other callers of this node would wait for the same window.
    pub async fn spend(&self, key: &str, write: bool) -> Result<(), ProviderError> {
        let (limit, want) = if write {
            (self.limits.writes, self.limits.write_slice)
        } else {
            (self.limits.requests, self.limits.slice)
        };
        let want = want.clamp(1, limit.max(1));
        let cell = {
            let mut slices = self.slices.lock().expect("budget lock");
            slices
                .entry(key.to_owned())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Slice {
                        remaining: 0,
                        spend_until: None,
                        window_end: None,
                    }))
                })
                .clone()
        };
        let mut slice = cell.lock().await;
        let window = self.limits.window;
        // A request granted near the window's end may reach Graph in the
        // next one, where the other nodes' grants already count: the last
        // tenth of a window (at most 1 s) is not spent.
        let guard = (window / 10).min(Duration::from_secs(1));
        loop {
            let now = Instant::now();
            if slice.remaining > 0 && slice.spend_until.is_some_and(|u| now < u) {
                slice.remaining -= 1;
                return Ok(());
            }
            // In the guard of a known window: taking now would waste a slice.
            if let Some(end) = slice.window_end
                && now < end
                && slice.spend_until.is_some_and(|u| now >= u)
            {
                tokio::time::sleep_until((end + jitter()).into()).await;
                continue;
            }
            let grant = self
                .source
                .take(key, window, limit, want)
                .await
                .map_err(|e| ProviderError::Transient(e.to_string()))?;
            let end = now + grant.window_left;
            slice.window_end = Some(end);
            slice.spend_until = Some(end.checked_sub(guard).unwrap_or(now));
            slice.remaining = grant.granted;
            if grant.granted == 0 {
                tracing::debug!(key, wait = ?grant.window_left, "request budget spent; waiting for the next window");
                tokio::time::sleep_until((end + jitter()).into()).await;
            }
        }
    }
}

/// A few ms so that the nodes waiting for a window do not all ask at once.
fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(1..25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_window_waits_for_the_next_one() {
        let limits = BudgetLimits {
            window: Duration::from_millis(400),
            requests: 6,
            writes: 2,
            slice: 4,
            write_slice: 1,
        };
        let b = Budgets::new(Arc::new(LocalBudget::default()), limits);
        let start = Instant::now();
        for _ in 0..13 {
            b.spend("k", false).await.unwrap();
        }
        // At most 6 per window: 13 need three windows, so one whole window
        // (400 ms) passed at least.
        assert!(
            start.elapsed() >= Duration::from_millis(390),
            "{:?}",
            start.elapsed()
        );
        let local = LocalBudget::default();
        let g = local.take("x", Duration::from_secs(20), 10, 7).await.unwrap();
        assert_eq!(g.granted, 7);
        assert_eq!(
            local
                .take("x", Duration::from_secs(20), 10, 7)
                .await
                .unwrap()
                .granted,
            3
        );
        assert!(g.window_left <= Duration::from_secs(20));
    }
}
