-- Objects written into demo tenants (crates/store/src/demo_objects.rs; kept
-- in step with ../sqlite/0015_demo_objects.sql): a restore into a demo
-- tenant creates or updates policies and groups, and they must survive a
-- restart and be seen by every node, as a real tenant's would. One row per
-- object, keyed by tenant, collection (a policy type key, or `#groups`) and
-- object id; `body` is the object's JSON as the demo serves it. Listed in
-- first-write order (`created_at`, ids breaking ties); an update keeps it.
CREATE TABLE demo_objects (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    collection  TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, collection, object_id),
    CONSTRAINT demo_objects_ids_not_empty CHECK (length(collection) > 0 AND length(object_id) > 0)
);
