-- Organization webhooks: a hook belongs to a repository or to an organization (then it hears every
-- repository the organization owns). SQLite cannot relax NOT NULL in place, so both tables are
-- rebuilt (deliveries first, so no cascade fires), keeping every id.
CREATE TABLE webhooks_v5 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id    BIGINT REFERENCES repos(id) ON DELETE CASCADE,
    org_id     BIGINT REFERENCES accounts(id) ON DELETE CASCADE,
    url        TEXT   NOT NULL,
    secret     TEXT,                       -- HMAC key; never returned by the API
    events     TEXT   NOT NULL,            -- space-separated
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    CHECK ((repo_id IS NULL) <> (org_id IS NULL))
);
INSERT INTO webhooks_v5 (id, repo_id, url, secret, events, active, created_at)
    SELECT id, repo_id, url, secret, events, active, created_at FROM webhooks;

CREATE TABLE webhook_deliveries_v5 (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id       BIGINT NOT NULL REFERENCES webhooks_v5(id) ON DELETE CASCADE,
    guid             TEXT   NOT NULL UNIQUE,
    event            TEXT   NOT NULL,
    payload          TEXT   NOT NULL,
    state            TEXT   NOT NULL,      -- pending, delivered, failed
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    status_code      BIGINT,
    error            TEXT,
    duration_ms      BIGINT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
INSERT INTO webhook_deliveries_v5 SELECT * FROM webhook_deliveries;

DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
ALTER TABLE webhooks_v5 RENAME TO webhooks;
ALTER TABLE webhook_deliveries_v5 RENAME TO webhook_deliveries;
CREATE INDEX webhooks_repo ON webhooks(repo_id);
CREATE INDEX webhooks_org ON webhooks(org_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id);

-- Events of the platform itself (a repository created, deleted, made public or private), written
-- in the transaction of the change and consumed like the ref-change log (webhooks now, the CI
-- engine later). Appends are serialized, so ids become visible in order and a consumer's cursor
-- never skips one.
CREATE TABLE platform_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event      TEXT   NOT NULL,            -- repository
    action     TEXT   NOT NULL,            -- created, deleted, publicized, privatized
    repo_id    BIGINT NOT NULL,            -- no foreign key: the repository may be gone
    owner_id   BIGINT NOT NULL,            -- the repository's owner (a user or an organization)
    owner      TEXT   NOT NULL,            -- the repository as it was: owner and name,
    name       TEXT   NOT NULL,
    private    BOOLEAN NOT NULL,           -- visibility,
    default_branch TEXT NOT NULL,          -- default branch and
    repo_created_at BIGINT NOT NULL,       -- creation time
    actor      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
