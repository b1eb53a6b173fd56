-- A completed run with a `total` has counts that explain its outcome
-- (OPERATIONS.md §3): succeeded + failed + skipped == processed == total.
-- The closing write records the units a run never recorded; this rule makes
-- a write that forgets impossible. Kept in step with ../postgres/0007: SQLite
-- cannot add a CHECK to an existing table, so two triggers enforce the same
-- condition with the same name in their message.
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

CREATE TRIGGER completed_counts_explain_outcome_insert BEFORE INSERT ON operation_runs
WHEN NEW.status = 'completed' AND NEW.total IS NOT NULL AND NOT (
    COALESCE(NEW.processed, -1) = NEW.total
    AND COALESCE(NEW.succeeded, 0) + COALESCE(NEW.failed, 0) + COALESCE(NEW.skipped, 0) = NEW.total)
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: completed_counts_explain_outcome');
END;

CREATE TRIGGER completed_counts_explain_outcome_update BEFORE UPDATE ON operation_runs
WHEN NEW.status = 'completed' AND NEW.total IS NOT NULL AND NOT (
    COALESCE(NEW.processed, -1) = NEW.total
    AND COALESCE(NEW.succeeded, 0) + COALESCE(NEW.failed, 0) + COALESCE(NEW.skipped, 0) = NEW.total)
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: completed_counts_explain_outcome');
END;
