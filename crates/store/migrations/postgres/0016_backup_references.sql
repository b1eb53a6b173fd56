-- A backup set keeps the tenant's directory as it was when the set was taken
-- (id, kind and display name of every group, named location and assignment
-- filter), and each item the names of what its references point to, so a
-- restore or a compare can map them to another tenant's objects by name.
-- A set taken before this migration has no directory (NULL): not "empty".
ALTER TABLE backup_sets ADD COLUMN directory TEXT;
ALTER TABLE backup_items ADD COLUMN refs TEXT NOT NULL DEFAULT '{}';
