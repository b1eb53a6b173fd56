-- The job cleaner (crates/store/src/job_cleaner.rs) deletes finished jobs
-- past their retention, oldest first, a bounded batch at a time: this index
-- finds them without reading live jobs or the whole table.
-- (Kept in step with ../sqlite/0013_job_cleaner.sql.)
CREATE INDEX jobs_finished ON jobs (finalized_at) WHERE state IN ('completed', 'failed', 'cancelled');
