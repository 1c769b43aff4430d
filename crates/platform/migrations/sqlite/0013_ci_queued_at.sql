-- When a job last became leasable (queued, or its retry delay over): the scheduler's wait time.
ALTER TABLE ci_jobs ADD COLUMN queued_at BIGINT;
