-- A tenant's budget of job minutes per calendar month (UTC); past it, its queued jobs fail,
-- saying so, until the month ends.
ALTER TABLE ci_tenant_limits ADD COLUMN max_minutes_per_month BIGINT;
