-- Organizations are accounts of kind 'org'; their members are users with a role in the org.
CREATE TABLE org_members (
    org_id     BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role       TEXT   NOT NULL,              -- 'owner' or 'member'
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user ON org_members(user_id);

-- Per-repository roles granted to users: read, triage, write, maintain, admin.
CREATE TABLE repo_collaborators (
    repo_id    BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, user_id)
);
CREATE INDEX repo_collaborators_user ON repo_collaborators(user_id);

-- Append-only audit log. Each entry carries the hash of the one before it (prev_hash is unique, so
-- the chain cannot fork) and its own hash over its fields and prev_hash.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    prev_hash  TEXT   NOT NULL UNIQUE,
    hash       TEXT   NOT NULL,
    actor_id   BIGINT,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    org_id     BIGINT,
    details    TEXT   NOT NULL,
    ip         TEXT,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_action ON audit_log(action);
CREATE INDEX audit_log_actor ON audit_log(actor);
CREATE INDEX audit_log_org ON audit_log(org_id);
