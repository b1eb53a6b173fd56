-- Baselines and drift (kept in step with ../postgres/0020_baselines.sql).
--
-- A profile names what a baseline covers: a source tenant and the policy
-- types in scope (NULL: every type the tenant exposes). Each tenant has at
-- most one default profile, made by its first capture without `profile`.
CREATE TABLE baseline_profiles (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    name              TEXT NOT NULL,
    source_tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    policy_types      TEXT,
    is_default        BIGINT NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE UNIQUE INDEX baseline_profiles_default ON baseline_profiles (source_tenant_id) WHERE is_default = 1;

-- One snapshot per `baseline.capture` run (its proof, by causal link). Its
-- policies are planned when the scope is resolved, filled as each is
-- captured; `sealed_at` is set, with the gaps, once the evidence is
-- persisted whole. Only a sealed snapshot is ever a baseline.
CREATE TABLE baseline_snapshots (
    id                 TEXT PRIMARY KEY,
    workspace_id       TEXT NOT NULL REFERENCES workspaces(id),
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    profile_id         TEXT NOT NULL REFERENCES baseline_profiles(id),
    created_by_run_id  TEXT NOT NULL REFERENCES operation_runs(id),
    created_at         BIGINT NOT NULL,
    policy_types       TEXT NOT NULL,
    sealed_at          BIGINT,
    policy_count       BIGINT,
    gap_count          BIGINT,
    UNIQUE (created_by_run_id)
);
CREATE INDEX baseline_snapshots_profile ON baseline_snapshots (profile_id, sealed_at);

-- `payload`: the policy normalized with its tenant's directory (references
-- as names), so a compare against another tenant needs no source ids.
CREATE TABLE baseline_snapshot_policies (
    snapshot_id     TEXT NOT NULL REFERENCES baseline_snapshots(id),
    policy_type     TEXT NOT NULL,
    external_id     TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    evidence        TEXT NOT NULL CHECK (evidence IN ('planned', 'full', 'metadata_only')),
    payload         TEXT,
    payload_sha256  TEXT,
    PRIMARY KEY (snapshot_id, policy_type, external_id)
);

CREATE TABLE baseline_snapshot_gaps (
    snapshot_id  TEXT NOT NULL REFERENCES baseline_snapshots(id),
    seq          BIGINT NOT NULL,
    policy_type  TEXT NOT NULL,
    external_id  TEXT,
    reason       TEXT NOT NULL CHECK (reason IN ('type_unreadable', 'type_unsupported', 'settings_unreadable', 'ambiguous_match')),
    message      TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, seq)
);

-- One row per `baseline.compare` run that recorded its findings (its proof),
-- written with the findings in one transaction.
CREATE TABLE baseline_compares (
    run_id                TEXT PRIMARY KEY REFERENCES operation_runs(id),
    workspace_id          TEXT NOT NULL REFERENCES workspaces(id),
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    baseline_snapshot_id  TEXT REFERENCES baseline_snapshots(id),
    backup_set_id         TEXT REFERENCES backup_sets(id),
    findings              BIGINT NOT NULL CHECK (findings >= 0),
    summary               TEXT NOT NULL,
    recorded_at           BIGINT NOT NULL,
    CHECK ((baseline_snapshot_id IS NULL) <> (backup_set_id IS NULL))
);

CREATE TABLE baseline_findings (
    run_id                TEXT NOT NULL REFERENCES baseline_compares(run_id),
    seq                   BIGINT NOT NULL,
    finding_key           TEXT NOT NULL,
    kind                  TEXT NOT NULL CHECK (kind IN ('missing', 'unexpected', 'changed')),
    policy_type           TEXT NOT NULL,
    display_name          TEXT NOT NULL,
    baseline_external_id  TEXT,
    current_external_id   TEXT,
    changes               TEXT NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, finding_key)
);

-- The inventory sync that last read an item's whole type: an inventory
-- sync's proof. `last_seen_operation_run_id` is the last run that saw the
-- item at all (a `policy.sync` re-reading one policy included), which must
-- not take the item out of a concurrent sync's proof.
ALTER TABLE inventory_items ADD COLUMN type_read_by_run_id TEXT REFERENCES operation_runs(id);
UPDATE inventory_items SET type_read_by_run_id = last_seen_operation_run_id;
CREATE INDEX inventory_items_type_read_run ON inventory_items (type_read_by_run_id);
