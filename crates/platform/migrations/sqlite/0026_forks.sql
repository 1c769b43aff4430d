-- Forks: a repository made from another (`parent_id`, cleared when the parent is deleted) and the
-- network of forks it belongs to (`network_id`: the id of the repository the chain of forks began
-- with; NULL for a repository that is no fork, whose network is its own id). Pull requests go
-- between repositories of one network.
ALTER TABLE repos ADD COLUMN parent_id BIGINT;
ALTER TABLE repos ADD COLUMN network_id BIGINT;
CREATE INDEX repos_network ON repos(network_id);
-- A repository whose CI is switched off (GitHub's "Actions permissions": `enabled` false) starts no
-- runs; a fork starts so, as on GitHub, until its admins switch it on.
ALTER TABLE ci_repo_settings ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
