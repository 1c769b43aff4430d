-- CI: the actions of other repositories a job attempt used, with the commit each reference
-- resolved to (recorded when the server resolves it for the job's runner).
CREATE TABLE ci_job_actions (
    job_id      BIGINT NOT NULL REFERENCES ci_jobs(id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    uses        TEXT   NOT NULL,          -- owner/repo@ref
    commit_sha  TEXT   NOT NULL,
    PRIMARY KEY (job_id, attempt, uses)
);
