-- Pull requests join the platform event log (`events.rs`): `pull_request` (opened, edited,
-- closed, reopened, synchronize, converted_to_draft, ready_for_review) and `pull_request_review`
-- (submitted) events name the pull request (and the review), with its tips when it happened.
ALTER TABLE platform_events ADD COLUMN pull_id BIGINT;
ALTER TABLE platform_events ADD COLUMN review_id BIGINT;
ALTER TABLE platform_events ADD COLUMN head_sha TEXT;
ALTER TABLE platform_events ADD COLUMN base_sha TEXT;
