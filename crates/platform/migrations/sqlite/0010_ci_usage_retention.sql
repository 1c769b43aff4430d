-- CI usage: one row per job attempt that ran (completed, or lost with its runner), for metering by
-- tenant (the account owning the repository), repository and runner labels. No foreign keys: usage
-- outlives the runs and repositories it counts.
CREATE TABLE ci_usage (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         BIGINT NOT NULL,
    attempt        BIGINT NOT NULL,
    repo_id        BIGINT NOT NULL,
    tenant_id      BIGINT NOT NULL,
    labels         TEXT   NOT NULL,          -- the job's runs-on labels, space-separated
    conclusion     TEXT   NOT NULL,          -- or "lost"
    duration_ms    BIGINT NOT NULL,
    log_bytes      BIGINT NOT NULL DEFAULT 0, -- the attempt's stored (compressed) log
    completed_at   BIGINT NOT NULL,
    UNIQUE (job_id, attempt)
);
CREATE INDEX ci_usage_tenant ON ci_usage(tenant_id, completed_at);

-- Set when the retention sweeper deleted the job's logs.
ALTER TABLE ci_jobs ADD COLUMN logs_expired_at BIGINT;
