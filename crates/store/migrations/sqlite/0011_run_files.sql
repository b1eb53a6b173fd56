-- File artifacts (kept in step with ../postgres/0011_run_files.sql): a file a
-- run wrote, committed with the unit (or the close) that proves it. The
-- file is written under a temporary name, then moved into place inside the
-- transaction that inserts this row, so a row never names a missing or
-- partial file; its size and SHA-256 are what was written.
CREATE TABLE run_files (
    run_id      TEXT NOT NULL REFERENCES operation_runs(id),
    name        TEXT NOT NULL,
    unit_key    TEXT,
    size_bytes  BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    written_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, name),
    CONSTRAINT run_files_size_non_negative CHECK (size_bytes >= 0),
    CONSTRAINT run_files_sha256_hex CHECK (length(sha256) = 64)
);
