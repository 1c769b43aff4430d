-- Accounts: users now, organizations later (one namespace, as on GitHub).
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL DEFAULT 'user',
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL UNIQUE,   -- lower-cased name: names are case-insensitive
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL
);

-- Personal access tokens. Only a SHA-256 of the token is stored.
CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id   BIGINT  NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    scopes       TEXT    NOT NULL,           -- space-separated
    expires_at   BIGINT,
    last_used_at BIGINT,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX tokens_account ON tokens(account_id);

CREATE TABLE repos (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id       BIGINT  NOT NULL REFERENCES accounts(id),
    name           TEXT    NOT NULL,
    name_key       TEXT    NOT NULL,
    private        BOOLEAN NOT NULL,
    default_branch TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    UNIQUE (owner_id, name_key)
);
