-- Phases of a phased run (OPERATIONS.md §4, §5), one row each (kept in step
-- with ../postgres/0008_phases.sql). The rows are the truth the writer path
-- checks and moves; operation_runs.phases is their rendering, rewritten in
-- the same transaction, so a run is read in one row.
CREATE TABLE run_phases (
    run_id     TEXT NOT NULL REFERENCES operation_runs(id),
    position   INTEGER NOT NULL CHECK (position >= 0),
    phase_key  TEXT NOT NULL,
    label      TEXT NOT NULL,
    state      TEXT NOT NULL,
    total      BIGINT,
    processed  BIGINT,
    PRIMARY KEY (run_id, phase_key),
    CONSTRAINT run_phases_position_unique UNIQUE (run_id, position),
    CONSTRAINT phase_state_known CHECK (state IN ('pending', 'active', 'done', 'skipped', 'failed')),
    CONSTRAINT phase_total_non_negative CHECK (total IS NULL OR total >= 0),
    CONSTRAINT phase_processed_within_total CHECK (
        processed IS NULL OR (total IS NOT NULL AND processed >= 0 AND processed <= total))
);
