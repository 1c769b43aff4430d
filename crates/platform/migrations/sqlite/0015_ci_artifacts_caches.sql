-- Artifacts a run's jobs uploaded (actions/upload-artifact). The archive is a blob in the blob
-- store (blob_key), written and made durable before its row exists; the retention sweep deletes
-- the blob, then sets expired_at (the row stays, so downloads answer 410).
CREATE TABLE ci_artifacts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         BIGINT NOT NULL REFERENCES ci_runs(id) ON DELETE CASCADE,
    job_id         BIGINT NOT NULL,
    attempt        BIGINT NOT NULL,
    repo_id        BIGINT NOT NULL,
    tenant_id      BIGINT NOT NULL,          -- the account owning the repository (metering)
    name           TEXT   NOT NULL,
    size_bytes     BIGINT NOT NULL,          -- the files' bytes
    stored_bytes   BIGINT NOT NULL,          -- the compressed archive's bytes
    files          BIGINT NOT NULL,
    zip_bytes      BIGINT NOT NULL,          -- the length of its download (a zip)
    digest         TEXT   NOT NULL,          -- sha256 of the stored archive
    blob_key       TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    expired_at     BIGINT,                   -- when the sweep deleted its blob
    UNIQUE (run_id, name)
);
CREATE INDEX ci_artifacts_expiry ON ci_artifacts(expired_at, expires_at);
CREATE INDEX ci_artifacts_tenant ON ci_artifacts(tenant_id, expired_at);

-- Caches (actions/cache): immutable once saved, scoped to a repository and the ref that saved them,
-- found by exact key or by key prefix (restore-keys) within a version (the paths they hold).
-- Least recently used go first when a repository's caches outgrow its cap.
CREATE TABLE ci_caches (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id        BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    tenant_id      BIGINT NOT NULL,
    scope          TEXT   NOT NULL,          -- the ref whose run saved it
    cache_key      TEXT   NOT NULL,
    version        TEXT   NOT NULL,
    size_bytes     BIGINT NOT NULL,
    stored_bytes   BIGINT NOT NULL,
    blob_key       TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    UNIQUE (repo_id, scope, cache_key, version)
);
CREATE INDEX ci_caches_lru ON ci_caches(repo_id, last_used_at);
CREATE INDEX ci_caches_tenant ON ci_caches(tenant_id);

-- A repository's own artifact retention in days (NULL: the site's default).
ALTER TABLE ci_repo_settings ADD COLUMN artifact_retention_days BIGINT;
