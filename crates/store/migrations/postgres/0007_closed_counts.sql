-- A completed run with a `total` has counts that explain its outcome
-- (OPERATIONS.md §3): succeeded + failed + skipped == processed == total.
-- The closing write records the units a run never recorded; this constraint
-- makes a write that forgets impossible. Kept in step with ../sqlite/0007.
--
-- Runs closed before this rule existed are brought in line first, the way the
-- closing write now does it without proof: the remainder is `skipped` for a
-- cancelled run, else `failed` with one `not_attempted` failure naming how many.
INSERT INTO run_failures (run_id, code, message, unit_key, recorded_at)
SELECT id, 'not_attempted',
       (total - COALESCE(processed, 0)) || ' of ' || total
         || ' units were never recorded before the run closed and have no proof of being done',
       NULL, completed_at
FROM operation_runs
WHERE status = 'completed' AND total IS NOT NULL AND COALESCE(processed, 0) < total AND outcome <> 'cancelled';

UPDATE operation_runs SET
    failed = COALESCE(failed, 0) + CASE WHEN outcome = 'cancelled' THEN 0 ELSE total - COALESCE(processed, 0) END,
    skipped = COALESCE(skipped, 0) + CASE WHEN outcome = 'cancelled' THEN total - COALESCE(processed, 0) ELSE 0 END,
    succeeded = COALESCE(succeeded, 0),
    processed = total
WHERE status = 'completed' AND total IS NOT NULL AND COALESCE(processed, 0) < total;

ALTER TABLE operation_runs ADD CONSTRAINT completed_counts_explain_outcome CHECK (
    status <> 'completed' OR total IS NULL OR (
        COALESCE(processed, -1) = total
        AND COALESCE(succeeded, 0) + COALESCE(failed, 0) + COALESCE(skipped, 0) = total));
