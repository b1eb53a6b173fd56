-- Access (OPERATIONS.md §9). Kept in step with ../sqlite/0005_access.sql.
--
-- A member with rows in membership_tenants is restricted to those tenants;
-- a member with none sees every tenant of the workspace. The tenant must be
-- of the membership's workspace: the foreign key names (workspace_id,
-- tenant_id) together, so the database refuses a tenant of another workspace.
CREATE UNIQUE INDEX tenants_workspace_id_id ON tenants (workspace_id, id);

CREATE TABLE membership_tenants (
    workspace_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    PRIMARY KEY (workspace_id, user_id, tenant_id),
    FOREIGN KEY (workspace_id, user_id) REFERENCES memberships (workspace_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, tenant_id) REFERENCES tenants (workspace_id, id)
);

-- When a token stops working (ms since the Unix epoch); NULL = never.
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
-- The one workspace a token acts in (`admin create-token --workspace`); any
-- other workspace is a 404 to it, even one its user belongs to. NULL (tokens
-- issued before this column) = every workspace of its user.
ALTER TABLE api_tokens ADD COLUMN workspace_id TEXT REFERENCES workspaces(id);
