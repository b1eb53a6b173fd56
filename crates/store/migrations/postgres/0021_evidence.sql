-- Evidence snapshots (kept in step with ../sqlite/0021_evidence.sql).
--
-- One snapshot per `evidence.snapshot.generate` run (its proof, by causal
-- link). Its items are planned, payloads and order fixed, when the run
-- starts, so a retried run records the same items; each item's SHA-256 is
-- written by its unit (exactly once, with the unit ledger). `signature` is
-- an HMAC-SHA256 under a key that is NOT in this database, set with
-- `sealed_at` once every item is recorded. `plan_signature` is the same
-- HMAC computed when the items were planned, from the content read then
-- (in memory): the seal must reproduce it from the stored items, so
-- content altered in the database before the seal is never signed.
CREATE TABLE evidence_snapshots (
    id                 TEXT PRIMARY KEY,
    workspace_id       TEXT NOT NULL REFERENCES workspaces(id),
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    created_by_run_id  TEXT NOT NULL REFERENCES operation_runs(id),
    generated_at       BIGINT NOT NULL,
    item_count         BIGINT NOT NULL CHECK (item_count >= 0),
    plan_signature     TEXT NOT NULL,
    signature          TEXT,
    sealed_at          BIGINT,
    UNIQUE (created_by_run_id),
    CHECK ((signature IS NULL) = (sealed_at IS NULL))
);
CREATE INDEX evidence_snapshots_tenant ON evidence_snapshots (tenant_id, generated_at);

CREATE TABLE evidence_snapshot_items (
    snapshot_id  TEXT NOT NULL REFERENCES evidence_snapshots(id),
    seq          BIGINT NOT NULL CHECK (seq >= 0),
    item_key     TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('inventory', 'backup', 'baseline_compare', 'conditional_access', 'assignments')),
    payload      TEXT NOT NULL,
    sha256       TEXT,
    recorded_at  BIGINT,
    PRIMARY KEY (snapshot_id, seq),
    UNIQUE (snapshot_id, item_key),
    CHECK ((sha256 IS NULL) = (recorded_at IS NULL))
);
