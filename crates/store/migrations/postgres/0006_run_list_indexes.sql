-- Listing runs (GET …/operations, Store::list_runs) at millions of rows.
-- Kept in step with ../sqlite/0006_run_list_indexes.sql.
--
-- A listing is newest first (ORDER BY id DESC; ids are UUIDv7, so id order is
-- creation order and a time window is an id range). Each index below serves
-- one filter as an ordered range: a page reads its rows and stops. Filters no
-- single index serves are checked on at most a bounded number of the driving
-- index's rows (see Store::list_runs).
--
-- (workspace_id, id DESC), operation_runs_hub, stays: no filter, or a time window only.
-- operation_runs_status (status, created_at) WHERE status <> 'completed' stays: the stale sweep's.
CREATE INDEX operation_runs_list_status ON operation_runs (workspace_id, status, id DESC);
CREATE INDEX operation_runs_list_outcome ON operation_runs (workspace_id, outcome, id DESC);
CREATE INDEX operation_runs_list_type ON operation_runs (workspace_id, type, id DESC);
-- Replaces (tenant_id, created_at DESC), which served no query once listings
-- order by id; workspace_id first so that the workspace check needs no row.
DROP INDEX operation_runs_tenant;
CREATE INDEX operation_runs_list_tenant ON operation_runs (workspace_id, tenant_id, id DESC);
