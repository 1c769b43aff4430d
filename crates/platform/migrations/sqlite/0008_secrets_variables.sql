-- CI secrets (sealed with XChaCha20-Poly1305 under the server's key; never stored in the clear)
-- and configuration variables, of a repository or of an organization.
CREATE TABLE secrets (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id        BIGINT REFERENCES repos(id) ON DELETE CASCADE,
    org_id         BIGINT REFERENCES accounts(id) ON DELETE CASCADE,
    name           TEXT   NOT NULL,          -- upper case
    sealed         TEXT   NOT NULL,          -- base64: 24-byte nonce, ciphertext, tag
    visibility     TEXT,                     -- organization secrets: all, private, selected
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    CHECK ((repo_id IS NULL) <> (org_id IS NULL))
);
CREATE UNIQUE INDEX secrets_repo_name ON secrets(repo_id, name) WHERE repo_id IS NOT NULL;
CREATE UNIQUE INDEX secrets_org_name ON secrets(org_id, name) WHERE org_id IS NOT NULL;

-- The repositories an organization secret of visibility "selected" reaches.
CREATE TABLE secret_repos (
    secret_id      BIGINT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    repo_id        BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    PRIMARY KEY (secret_id, repo_id)
);

CREATE TABLE variables (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id        BIGINT REFERENCES repos(id) ON DELETE CASCADE,
    org_id         BIGINT REFERENCES accounts(id) ON DELETE CASCADE,
    name           TEXT   NOT NULL,          -- upper case
    value          TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    CHECK ((repo_id IS NULL) <> (org_id IS NULL))
);
CREATE UNIQUE INDEX variables_repo_name ON variables(repo_id, name) WHERE repo_id IS NOT NULL;
CREATE UNIQUE INDEX variables_org_name ON variables(org_id, name) WHERE org_id IS NOT NULL;
