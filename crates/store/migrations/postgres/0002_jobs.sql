-- Durable jobs on the ledger's own database (kept in step with ../sqlite/0002_jobs.sql).
-- A job executes a whole run (`kind = 'run'`) or one unit of a fan-out
-- (`kind = 'unit'`). `lease_token` fences every heartbeat and completion: a
-- worker whose lease was rescued can no longer write.

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    run_id            TEXT NOT NULL REFERENCES operation_runs(id),
    kind              TEXT NOT NULL CHECK (kind IN ('run', 'unit')),
    unit_key          TEXT NOT NULL DEFAULT '',
    state             TEXT NOT NULL CHECK (state IN ('available', 'running', 'completed', 'failed', 'cancelled')),
    attempt           BIGINT NOT NULL DEFAULT 0,
    max_attempts      BIGINT NOT NULL CHECK (max_attempts >= 1),
    run_after         BIGINT NOT NULL,
    lease_token       TEXT,
    lease_expires_at  BIGINT,
    heartbeat_at      BIGINT,
    worker_id         TEXT,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    finalized_at      BIGINT,
    UNIQUE (run_id, kind, unit_key),
    CONSTRAINT lease_iff_running CHECK ((state = 'running') = (lease_token IS NOT NULL)),
    CONSTRAINT attempts_bounded CHECK (attempt >= 0 AND attempt <= max_attempts)
);
CREATE INDEX jobs_available ON jobs (run_after, id) WHERE state = 'available';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_run ON jobs (run_id, state);

-- Backup sets and their items: the artifacts of backup_set.add_policies.
CREATE TABLE backup_sets (
    id                 TEXT PRIMARY KEY,
    workspace_id       TEXT NOT NULL REFERENCES workspaces(id),
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    name               TEXT NOT NULL,
    created_by_run_id  TEXT NOT NULL REFERENCES operation_runs(id),
    created_at         BIGINT NOT NULL
);
CREATE INDEX backup_sets_tenant ON backup_sets (tenant_id, created_at DESC);

CREATE TABLE backup_items (
    id                  TEXT PRIMARY KEY,
    backup_set_id       TEXT NOT NULL REFERENCES backup_sets(id),
    policy_type         TEXT NOT NULL,
    external_id         TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    payload             TEXT NOT NULL,
    payload_sha256      TEXT NOT NULL,
    captured_by_run_id  TEXT NOT NULL REFERENCES operation_runs(id),
    captured_at         BIGINT NOT NULL,
    UNIQUE (backup_set_id, policy_type, external_id)
);
