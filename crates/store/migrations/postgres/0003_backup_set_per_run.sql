-- A run creates at most one backup set, and a unit job finds it by the run id
-- on every unit: unique, so the schema enforces the first and indexes the second.
CREATE UNIQUE INDEX backup_sets_created_by_run ON backup_sets (created_by_run_id);
