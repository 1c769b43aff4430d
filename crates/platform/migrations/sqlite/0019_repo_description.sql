-- A repository's one-line description (GitHub's `description`; empty when it has none).
ALTER TABLE repos ADD COLUMN description TEXT NOT NULL DEFAULT '';
