-- Unit waves (kept in step with ../sqlite/0009_unit_waves.sql): a unit job
-- of wave k is claimable only when no unit job of its run in an earlier
-- wave can still run, i.e. every earlier unit is recorded. A restore writes
-- what is referred to before what refers to it.
ALTER TABLE jobs ADD COLUMN wave BIGINT NOT NULL DEFAULT 0 CONSTRAINT jobs_wave_non_negative CHECK (wave >= 0);
-- The claim's wave gate probes this index once per candidate: whether an
-- earlier wave of the run still has an open unit job.
CREATE INDEX jobs_open_units ON jobs (run_id, kind, wave) WHERE state IN ('available', 'running');
