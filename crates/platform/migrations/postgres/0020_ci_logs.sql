-- Job logs in the database, for cluster mode (any server reads what a runner sent to another):
-- the appends to each attempt's open step, by step and byte offset, and each finished step's log,
-- gzipped, once it is complete.
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
    gz BYTEA NOT NULL,
    PRIMARY KEY (job_id, attempt, step)
);
