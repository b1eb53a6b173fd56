-- opsledger ledger schema (PostgreSQL). Kept in step with ../sqlite/0001_ledger.sql:
-- the same tables, columns and CHECK constraints, so both backends refuse the
-- same invalid states. Times are milliseconds since the Unix epoch; JSON is TEXT.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    name          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE memberships (
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    user_id       TEXT NOT NULL REFERENCES users(id),
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE api_tokens (
    token_sha256  TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE operation_runs (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    tenant_id     TEXT REFERENCES tenants(id),
    parent_id     TEXT REFERENCES operation_runs(id),
    type          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed')),
    outcome       TEXT NOT NULL CHECK (outcome IN ('pending', 'succeeded', 'partially_succeeded', 'blocked', 'failed', 'cancelled')),
    -- "type|workspace|tenant" while the run is active; NULL once completed.
    -- Its unique index deduplicates concurrent starts of one type on one scope.
    active_key    TEXT UNIQUE,
    total         BIGINT CHECK (total >= 0),
    processed     BIGINT CHECK (processed >= 0),
    succeeded     BIGINT CHECK (succeeded >= 0),
    failed        BIGINT CHECK (failed >= 0),
    skipped       BIGINT CHECK (skipped >= 0),
    created       BIGINT CHECK (created >= 0),
    updated       BIGINT CHECK (updated >= 0),
    phases        TEXT,
    context       TEXT NOT NULL DEFAULT '{}',
    initiator     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    heartbeat_at  BIGINT,
    completed_at  BIGINT,
    CONSTRAINT outcome_pending_iff_not_completed CHECK ((status = 'completed') = (outcome <> 'pending')),
    CONSTRAINT completed_at_iff_completed CHECK ((status = 'completed') = (completed_at IS NOT NULL)),
    CONSTRAINT active_key_only_while_active CHECK (active_key IS NULL OR status <> 'completed'),
    CONSTRAINT processed_within_total CHECK (processed IS NULL OR (total IS NOT NULL AND processed <= total)),
    CONSTRAINT unit_outcomes_within_processed CHECK (
        COALESCE(succeeded, 0) + COALESCE(failed, 0) + COALESCE(skipped, 0) <= COALESCE(processed, 0))
);
CREATE INDEX operation_runs_hub ON operation_runs (workspace_id, id DESC);
CREATE INDEX operation_runs_tenant ON operation_runs (tenant_id, created_at DESC);
CREATE INDEX operation_runs_status ON operation_runs (status, created_at) WHERE status <> 'completed';
CREATE INDEX operation_runs_parent ON operation_runs (parent_id) WHERE parent_id IS NOT NULL;

-- The per-run unit ledger: a unit is counted when, and only when, its row is new.
CREATE TABLE run_units (
    run_id       TEXT NOT NULL REFERENCES operation_runs(id),
    unit_key     TEXT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'skipped')),
    recorded_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, unit_key)
);

CREATE TABLE run_failures (
    id           BIGSERIAL PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES operation_runs(id),
    code         TEXT NOT NULL,
    message      TEXT NOT NULL,
    unit_key     TEXT,
    recorded_at  BIGINT NOT NULL
);
CREATE INDEX run_failures_run ON run_failures (run_id, id);

CREATE TABLE inventory_items (
    id                          TEXT PRIMARY KEY,
    workspace_id                TEXT NOT NULL REFERENCES workspaces(id),
    tenant_id                   TEXT NOT NULL REFERENCES tenants(id),
    policy_type                 TEXT NOT NULL,
    external_id                 TEXT NOT NULL,
    display_name                TEXT NOT NULL,
    payload                     TEXT NOT NULL,
    payload_sha256              TEXT NOT NULL,
    first_seen_at               BIGINT NOT NULL,
    last_seen_at                BIGINT NOT NULL,
    last_seen_operation_run_id  TEXT NOT NULL REFERENCES operation_runs(id),
    UNIQUE (tenant_id, policy_type, external_id)
);
CREATE INDEX inventory_items_last_seen_run ON inventory_items (last_seen_operation_run_id);
