-- Claims take run jobs before unit jobs ('run' < 'unit'), so a run started
-- behind a large fan-out is picked up at once instead of waiting out (and
-- being failed by) its queue timeout; units stay first-in, first-out.
DROP INDEX jobs_available;
CREATE INDEX jobs_available ON jobs (kind, run_after, id) WHERE state = 'available';
