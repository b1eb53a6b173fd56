-- Child runs of a composite (kept in step with ../sqlite/0010_run_children.sql).
-- A child is a run of its own, holding its own dedup key: one the parent
-- started (origin 'started', also its parent_id) or an already-active run
-- the parent adopted (origin 'adopted'). The parent's outcome is derived
-- from its children in the last child's closing transaction; cancelling the
-- parent cancels only the children it started.
CREATE TABLE run_children (
    parent_id  TEXT NOT NULL REFERENCES operation_runs(id),
    child_id   TEXT NOT NULL REFERENCES operation_runs(id),
    origin     TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id),
    CONSTRAINT run_children_origin_known CHECK (origin IN ('started', 'adopted')),
    CONSTRAINT run_children_not_self CHECK (parent_id <> child_id)
);
CREATE INDEX run_children_child ON run_children (child_id);
