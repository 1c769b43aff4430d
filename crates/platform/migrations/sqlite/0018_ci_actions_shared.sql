-- A repository whose actions and reusable workflows any repository of the installation may use
-- (by default only its own owner's repositories may, when it is private).
ALTER TABLE ci_repo_settings ADD COLUMN actions_shared BOOLEAN NOT NULL DEFAULT FALSE;
