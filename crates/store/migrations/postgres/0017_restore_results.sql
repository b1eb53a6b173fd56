-- What a `backup_set.restore` did with each of its units (a backup item, or a
-- group it created in the target), written with the unit's ledger row: the
-- proof its reconciliation reads and the restore history of a backup item.
-- `result` is what happened to the target (in a dry run: what would have);
-- `target_id` is the object the unit wrote or found in the target, which a
-- later restore of the same item into the same tenant looks up first.
CREATE TABLE restore_results (
    run_id            TEXT NOT NULL REFERENCES operation_runs(id),
    unit_key          TEXT NOT NULL,
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    target_tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    backup_set_id     TEXT NOT NULL REFERENCES backup_sets(id),
    backup_item_id    TEXT REFERENCES backup_items(id),
    result            TEXT NOT NULL CHECK (result IN ('created', 'updated', 'unchanged', 'failed')),
    dry_run           BIGINT NOT NULL CHECK (dry_run IN (0, 1)),
    target_id         TEXT,
    detail            TEXT NOT NULL DEFAULT '{}',
    recorded_at       BIGINT NOT NULL,
    PRIMARY KEY (run_id, unit_key)
);
CREATE INDEX restore_results_item ON restore_results (backup_item_id, target_tenant_id, recorded_at);
CREATE INDEX restore_results_set ON restore_results (backup_set_id);
