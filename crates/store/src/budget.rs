//! The per-tenant request budget shared by every node.
//!
//! Microsoft Graph throttles per app and tenant (Intune: 1 000 requests per
//! 20 s, 100 writes), whatever process sends them; so the budget lives in
//! the database, and each node takes a *slice* of the current fixed window
//! and spends it locally (one statement per slice, not per request). A take
//! grants at most what the window has left — possibly nothing, and then the
//! caller waits for the window's end instead of sending.
//!
//! Windows are aligned to multiples of their length since the Unix epoch on
//! the store's clock, so every node agrees on where a window starts.

use crate::db::sql;
use crate::{Store, StoreError};

/// What one take got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSlice {
    /// Requests granted (0 when the window is spent), at most what was asked.
    pub granted: u32,
    /// The window the slice belongs to, `[start, end)` in ms since the epoch.
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// The store's time when the slice was taken.
    pub now_ms: i64,
}

impl Store {
    /// Takes up to `want` requests of `key`'s current window of `window_ms`
    /// whose limit is `limit`: one atomic statement on both backends (an
    /// upsert whose `used` never passes `limit`), so concurrent nodes never
    /// get more than the limit between them. Rows of the key's earlier
    /// windows are deleted in the same transaction (nothing reads them).
    pub async fn take_request_budget(
        &self,
        key: &str,
        window_ms: u64,
        limit: u32,
        want: u32,
    ) -> Result<BudgetSlice, StoreError> {
        let window = i64::try_from(window_ms.max(1)).unwrap_or(i64::MAX);
        let now = self.now_ms();
        let start = now - now.rem_euclid(window);
        let slice = |granted| BudgetSlice {
            granted,
            window_start_ms: start,
            window_end_ms: start.saturating_add(window),
            now_ms: now,
        };
        if want == 0 || limit == 0 {
            return Ok(slice(0));
        }
        let first = i64::from(want.min(limit));
        let mut tx = self.begin_write().await?;
        // In an UPDATE's SET every right-hand side reads the row as it was
        // (SQL standard; SQLite and PostgreSQL agree), so `last_grant` and
        // `used` are computed from the same old `used`. A limit lowered under
        // what was already used grants 0, never a negative slice.
        let granted: (i64,) = tx
            .fetch_one(
                sql(
                    "INSERT INTO request_budget (budget_key, window_start, used, last_grant) \
                     VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (budget_key, window_start) DO UPDATE SET \
                     last_grant = CASE WHEN $4 - request_budget.used <= 0 THEN 0 \
                                       WHEN $4 - request_budget.used < $5 THEN $4 - request_budget.used \
                                       ELSE $5 END, \
                     used = request_budget.used + \
                            CASE WHEN $4 - request_budget.used <= 0 THEN 0 \
                                 WHEN $4 - request_budget.used < $5 THEN $4 - request_budget.used \
                                 ELSE $5 END \
                     RETURNING last_grant",
                )
                .bind(key)
                .bind(start)
                .bind(first)
                .bind(i64::from(limit))
                .bind(i64::from(want)),
            )
            .await?;
        tx.execute(
            sql("DELETE FROM request_budget WHERE budget_key = $1 AND window_start < $2")
                .bind(key)
                .bind(start),
        )
        .await?;
        tx.commit().await?;
        Ok(slice(u32::try_from(granted.0.max(0)).unwrap_or(0)))
    }
}
