-- Requests counted per minute by rate-limit key (a stable hash of the limit and the client,
-- address or repository), summed over every server of a cluster: each adds what it took since it
-- last looked, and reads the total back. Counts of the last minute or two only; losing them in
-- a crash loses nothing that matters.
CREATE UNLOGGED TABLE rate_windows (
    key BIGINT NOT NULL,
    minute BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (key, minute)
);
