-- Outgoing webhooks of repositories, and their deliveries: a durable queue with retries.
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id    BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    url        TEXT   NOT NULL,
    secret     TEXT,                       -- HMAC key; never returned by the API
    events     TEXT   NOT NULL,            -- space-separated
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_repo ON webhooks(repo_id);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id       BIGINT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
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
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id);

-- Positions of consumers of the ref-change log (webhooks now, the CI ingestor later). A consumer
-- advances its cursor in the same transaction as the work it derived from the events.
CREATE TABLE log_cursors (
    name  TEXT   PRIMARY KEY,
    seq   BIGINT NOT NULL
);
