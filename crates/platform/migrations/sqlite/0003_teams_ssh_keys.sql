-- Teams inside organizations; their members get the roles granted to the team on repositories.
CREATE TABLE teams (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    name_key   TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name_key)
);

CREATE TABLE team_members (
    team_id    BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members(user_id);

CREATE TABLE team_repos (
    team_id    BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    repo_id    BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    role       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, repo_id)
);
CREATE INDEX team_repos_repo ON team_repos(repo_id);

-- SSH public keys of users, for the SSH transport. The fingerprint is unique across accounts: one
-- key identifies one user.
CREATE TABLE ssh_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    title        TEXT   NOT NULL,
    key_type     TEXT   NOT NULL,
    key_blob     TEXT   NOT NULL,
    bits         BIGINT NOT NULL,
    fingerprint  TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX ssh_keys_user ON ssh_keys(user_id);
