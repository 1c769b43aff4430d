-- Per-tenant (the account owning repositories) CI limits, overriding the site's defaults: jobs
-- running at once, and runs not yet completed (a run beyond it fails at once, saying so).
CREATE TABLE ci_tenant_limits (
    account_id       BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    max_running_jobs BIGINT,
    max_queued_runs  BIGINT,
    updated_at       BIGINT NOT NULL
);
