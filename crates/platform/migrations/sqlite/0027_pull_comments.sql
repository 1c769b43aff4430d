-- Comments on lines of a pull request's diff (GitHub's review comments, `comments.rs`): on
-- `path` at `original_line` of the side `side` (RIGHT: the head's file, LEFT: the base's) as
-- of `original_commit`. `commit_sha` and `line` follow the head as it moves (gitstratum-pulls
-- maps the line through each push's diff); `line` is NULL once its line changed (outdated).
-- A reply (`in_reply_to`) belongs to the thread of the comment it answers.
CREATE TABLE pull_comments (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    pull_id          BIGINT  NOT NULL REFERENCES pulls(id) ON DELETE CASCADE,
    author_id        BIGINT  REFERENCES accounts(id) ON DELETE SET NULL,
    author           TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    path             TEXT    NOT NULL,
    side             TEXT    NOT NULL,
    original_commit  TEXT    NOT NULL,
    original_line    BIGINT  NOT NULL,
    commit_sha       TEXT    NOT NULL,
    line             BIGINT,
    in_reply_to      BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX pull_comments_pull ON pull_comments(pull_id, id);
-- Reviewers asked for (GitHub's requested reviewers); a review by one of them answers the request.
CREATE TABLE pull_review_requests (
    pull_id      BIGINT NOT NULL REFERENCES pulls(id) ON DELETE CASCADE,
    account_id   BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    requested_by TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (pull_id, account_id)
);
-- A pull request's events, for its timeline.
CREATE INDEX platform_events_pull ON platform_events(pull_id, id);
