-- An organization's default branch protection (`protection.rs`): the rules every repository
-- created in the organization (or forked into it) gets on its default branch, in the transaction
-- that creates it. The columns are `branch_protections`' (`pattern` is unused: '').
CREATE TABLE org_default_protections (
    org_id          BIGINT  PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    pattern         TEXT    NOT NULL,
    require_checks  BOOLEAN NOT NULL,
    strict          BOOLEAN NOT NULL,
    checks          TEXT    NOT NULL,
    require_pr      BOOLEAN NOT NULL,
    approvals       BIGINT  NOT NULL,
    dismiss_stale   BOOLEAN NOT NULL,
    bypass          TEXT    NOT NULL,
    enforce_admins  BOOLEAN NOT NULL,
    allow_force     BOOLEAN NOT NULL,
    allow_delete    BOOLEAN NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
