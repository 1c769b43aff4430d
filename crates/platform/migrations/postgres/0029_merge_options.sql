-- Which merge methods a repository's pull requests may use, and whether a merged pull request's
-- head branch is deleted (GitHub's allow_merge_commit, allow_squash_merge, allow_rebase_merge,
-- delete_branch_on_merge).
ALTER TABLE repos ADD COLUMN allow_merge_commit BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE repos ADD COLUMN allow_squash_merge BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE repos ADD COLUMN allow_rebase_merge BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE repos ADD COLUMN delete_branch_on_merge BOOLEAN NOT NULL DEFAULT FALSE;
