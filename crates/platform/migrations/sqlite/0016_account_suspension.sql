-- A suspended account (set by a site administrator) authenticates nowhere: its tokens, sessions,
-- Git access and its CI jobs' tokens stop working until it is unsuspended.
ALTER TABLE accounts ADD COLUMN suspended_at BIGINT;
