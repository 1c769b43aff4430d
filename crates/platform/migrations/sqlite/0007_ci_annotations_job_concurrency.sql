-- CI: annotations (::error::, ::warning::, ::notice:: printed by steps), job events beside run
-- events (for workflow_job webhooks), and job-level concurrency groups.
CREATE TABLE ci_annotations (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         BIGINT NOT NULL REFERENCES ci_jobs(id) ON DELETE CASCADE,
    attempt        BIGINT NOT NULL,
    step           BIGINT NOT NULL,          -- the step's number
    level          TEXT   NOT NULL,          -- error, warning, notice
    message        TEXT   NOT NULL,
    title          TEXT,
    file           TEXT,
    line           BIGINT,
    end_line       BIGINT,
    col            BIGINT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX ci_annotations_job ON ci_annotations(job_id, attempt);

-- A job's concurrency group (evaluated when its needs are met; per repository, apart from
-- workflow-level groups), whether it cancels the group's jobs in progress, and whether it is
-- pending behind a running job of its group.
ALTER TABLE ci_jobs ADD COLUMN repo_id BIGINT;
ALTER TABLE ci_jobs ADD COLUMN concurrency_group TEXT;
ALTER TABLE ci_jobs ADD COLUMN concurrency_cancel BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE ci_jobs ADD COLUMN blocked BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX ci_jobs_group ON ci_jobs(repo_id, concurrency_group, state);

-- Job events name their job; run events have none.
ALTER TABLE ci_events ADD COLUMN job_id BIGINT;
