-- Schedules: a run type started on a cron slot for one tenant or for every
-- tenant of the workspace (tenant_id NULL). `next_due_at` is the slot the
-- schedule waits for; the scheduler moves it forward with a compare-and-set,
-- so one node starts a slot. `params` are the runs' parameters (JSON).
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    name            TEXT NOT NULL,
    run_type        TEXT NOT NULL CHECK (run_type IN ('backup.schedule.execute', 'baseline.compare')),
    tenant_id       TEXT REFERENCES tenants(id),
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    params          TEXT NOT NULL DEFAULT '{}',
    retention_keep  BIGINT CHECK (retention_keep IS NULL OR retention_keep >= 1),
    enabled         BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    next_due_at     BIGINT,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE INDEX schedules_due ON schedules (next_due_at) WHERE enabled = 1;

-- What became of each slot, per tenant: the unique key a slot is started
-- once by (whatever node, however often it looks), and the schedule's history.
CREATE TABLE schedule_slots (
    schedule_id  TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    slot_at      BIGINT NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    decision     TEXT NOT NULL CHECK (decision IN ('started', 'skipped_active')),
    run_id       TEXT REFERENCES operation_runs(id),
    missed       BIGINT NOT NULL DEFAULT 0 CHECK (missed >= 0),
    decided_at   BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, slot_at, tenant_id)
);
CREATE INDEX schedule_slots_history ON schedule_slots (schedule_id, slot_at DESC);
