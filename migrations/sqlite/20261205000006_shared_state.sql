-- Browser sessions, keyed by the SHA-256 digest of the cookie's session id
-- so that a copy of the database cannot be replayed as cookies. `record` is
-- the session's JSON document. Every instance sharing the database sees the
-- same sessions. Sessions of the store used before this table are dropped,
-- which signs browsers out once on upgrade.
DROP TABLE IF EXISTS tower_sessions;
CREATE TABLE browser_sessions (
    id_hash     TEXT PRIMARY KEY NOT NULL,
    record      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX browser_sessions_expires ON browser_sessions (expires_at);

-- Rate-limit state per client address, shared by every instance: the
-- theoretical arrival time of the generic cell rate algorithm, in
-- milliseconds since the Unix epoch.
CREATE TABLE rate_limits (
    bucket  TEXT PRIMARY KEY NOT NULL,
    tat_ms  INTEGER NOT NULL
);
