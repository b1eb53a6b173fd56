-- The per-tenant request budget shared by every node (crates/store/src/budget.rs;
-- kept in step with ../sqlite/0014_request_budget.sql). Microsoft Graph
-- counts requests per app and tenant, not per process, so nodes take slices
-- of a fixed window from here: one row per budget key and window, `used`
-- never above the window's limit (the take statement grants at most what is
-- left). `last_grant` is what the latest take got, returned by the same
-- statement (RETURNING shows new values only on both backends).
CREATE TABLE request_budget (
    budget_key   TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    last_grant   BIGINT NOT NULL,
    PRIMARY KEY (budget_key, window_start),
    CONSTRAINT request_budget_used_non_negative CHECK (used >= 0),
    CONSTRAINT request_budget_grant_in_used CHECK (last_grant >= 0 AND last_grant <= used)
);
