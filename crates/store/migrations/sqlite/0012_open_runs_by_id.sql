-- The stale sweep pages through the runs that are not completed in id order
-- (`stale_run_candidates`: `status <> 'completed' AND id > $after ORDER BY
-- id LIMIT n`). Without this index the page walks the primary key over the
-- whole history (a million completed runs) to find the open few.
-- (Kept in step with ../postgres/0012_open_runs_by_id.sql.)
CREATE INDEX operation_runs_open ON operation_runs (id) WHERE status <> 'completed';
