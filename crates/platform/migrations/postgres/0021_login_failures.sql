-- Failed logins per key (`account:<name>`, `address:<ip>`) in fixed windows, kept in the database so
-- every server of a cluster counts the same failures (and a restart does not forget them).
CREATE TABLE login_failures (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    since BIGINT NOT NULL
);
