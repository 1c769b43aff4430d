-- A repository's own CI settings: how many days its job logs are kept (NULL: the site's default).
CREATE TABLE ci_repo_settings (
    repo_id            BIGINT PRIMARY KEY REFERENCES repos(id) ON DELETE CASCADE,
    log_retention_days BIGINT,
    updated_at         BIGINT NOT NULL
);
