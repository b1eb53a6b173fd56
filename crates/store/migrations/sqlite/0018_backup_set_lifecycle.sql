-- Backup set lifecycle (kept in step with ../postgres/0018_backup_set_lifecycle.sql):
-- what `backup_set.update` changes and what `backup_set.delete` leaves.
--
-- `label`: free text people read, NULL when none. `retention_locked`: 1
-- refuses deletion until an update unlocks the set.
--
-- Deletion removes the items and keeps the set's row as a tombstone:
-- * each item's row is deleted by its unit, in the unit's ledger
--   transaction, so an item is counted deleted if and only if it is gone;
-- * the set's row is marked (`deleted_at`, `deleted_by_run_id`: the run
--   that began the deletion) by the first item removed, and stays, because
--   restore history (`restore_results.backup_set_id`) names it; every read
--   treats a marked set as gone (`backups::SET_IS_DELETED`);
-- * restore results keep their rows, with `backup_item_id` set to NULL
--   when their item is removed: the history of what was written into which
--   tenant (type and name are in their `detail`) outlives the backup.
-- A locked set is never marked: the two CHECKs say it once more.
ALTER TABLE backup_sets ADD COLUMN label TEXT;
ALTER TABLE backup_sets ADD COLUMN retention_locked BIGINT NOT NULL DEFAULT 0
    CONSTRAINT backup_set_lock_flag CHECK (retention_locked IN (0, 1));
ALTER TABLE backup_sets ADD COLUMN deleted_at BIGINT
    CONSTRAINT backup_set_locked_not_deleted CHECK (deleted_at IS NULL OR retention_locked = 0);
ALTER TABLE backup_sets ADD COLUMN deleted_by_run_id TEXT REFERENCES operation_runs(id)
    CONSTRAINT backup_set_tombstone_whole CHECK ((deleted_at IS NULL) = (deleted_by_run_id IS NULL));
