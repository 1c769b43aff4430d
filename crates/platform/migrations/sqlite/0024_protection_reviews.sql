-- Protected branches (`protection.rs`): rules per branch name pattern of a repository, as
-- GitHub's branch protection (the API takes and gives GitHub's body). `checks` and `bypass` are
-- lists, one name per line.
CREATE TABLE branch_protections (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id         BIGINT  NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
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
    updated_at      BIGINT  NOT NULL,
    UNIQUE (repo_id, pattern)
);
-- Reviews of pull requests: APPROVED, CHANGES_REQUESTED or COMMENTED, on the head commit they
-- were made on (`commit_sha`), in order.
CREATE TABLE pull_reviews (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pull_id      BIGINT  NOT NULL REFERENCES pulls(id) ON DELETE CASCADE,
    reviewer_id  BIGINT  REFERENCES accounts(id) ON DELETE SET NULL,
    reviewer     TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    commit_sha   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX pull_reviews_pull ON pull_reviews(pull_id, id);
