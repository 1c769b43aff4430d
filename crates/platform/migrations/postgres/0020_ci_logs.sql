-- Job logs for cluster mode (any server reads what a runner sent to another): the appends to each
-- attempt's open step, by step and byte offset, in the database; each finished step's log,
-- gzipped, in object storage under blob_key (its size in bytes) once it is complete.
CREATE TABLE ci_log_chunks (
    job_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    step BIGINT NOT NULL,
    at BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (job_id, attempt, step, at)
);
CREATE TABLE ci_log_steps (
    job_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    step BIGINT NOT NULL,
    blob_key TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt, step)
);
