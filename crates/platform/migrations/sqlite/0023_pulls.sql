-- Pull requests (crate gitstratum-platform, `pulls.rs`). Numbered per repository from 1. The head
-- is a branch of the base repository (forks arrive later: `head_repo_id` is then the fork's).
-- `head_sha`/`base_sha` are the tips the mergeability was last computed for; `mergeable` is
-- unknown (not computed yet), clean or conflict (with `conflicts`, the paths, one per line);
-- `merge_sha` is the test merge `refs/pull/N/merge` points to.
CREATE TABLE pulls (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id          BIGINT  NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    number           BIGINT  NOT NULL,
    author_id        BIGINT  REFERENCES accounts(id) ON DELETE SET NULL,
    author           TEXT    NOT NULL,
    title            TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    draft            BOOLEAN NOT NULL,
    state            TEXT    NOT NULL,
    head_repo_id     BIGINT  REFERENCES repos(id) ON DELETE SET NULL,
    head_ref         TEXT    NOT NULL,
    head_sha         TEXT    NOT NULL,
    base_ref         TEXT    NOT NULL,
    base_sha         TEXT    NOT NULL,
    mergeable        TEXT    NOT NULL,
    conflicts        TEXT    NOT NULL DEFAULT '',
    merge_sha        TEXT,
    merged           BOOLEAN NOT NULL DEFAULT FALSE,
    merged_by        TEXT,
    merge_commit_sha TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    closed_at        BIGINT,
    merged_at        BIGINT,
    UNIQUE (repo_id, number)
);
CREATE INDEX pulls_head ON pulls(head_repo_id, head_ref, state);
CREATE INDEX pulls_base ON pulls(repo_id, base_ref, state);
