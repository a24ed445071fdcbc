-- Users of the broker. Identifier columns ending in `_key` hold the normalised
-- form used for look-ups; the plain columns keep what the administrator typed.
CREATE TABLE users (
    id                    TEXT PRIMARY KEY NOT NULL,
    login_id              TEXT NOT NULL,
    login_id_key          TEXT NOT NULL UNIQUE,
    email                 TEXT NOT NULL,
    email_key             TEXT NOT NULL UNIQUE,
    first_name            TEXT NOT NULL,
    last_name             TEXT NOT NULL,
    password_hash         TEXT,
    must_change_password  INTEGER NOT NULL DEFAULT 0,
    active                INTEGER NOT NULL DEFAULT 1,
    cl_auth_enabled       INTEGER NOT NULL DEFAULT 0,
    totp_secret           TEXT,
    totp_last_step        INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    last_login_at         INTEGER
);

-- Single-use recovery codes for the second factor, stored as SHA-256 digests.
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

-- Consecutive failed sign-ins per account, or per typed identifier when no
-- account matches, so that unknown identifiers lock out exactly like real ones.
CREATE TABLE login_failures (
    subject_key   TEXT PRIMARY KEY NOT NULL,
    failures      INTEGER NOT NULL,
    locked_until  INTEGER NOT NULL,
    last_failure  INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    user_id     TEXT,
    identifier  TEXT,
    client_ip   TEXT,
    detail      TEXT
);
CREATE INDEX audit_events_user_at ON audit_events (user_id, at);
CREATE INDEX audit_events_at ON audit_events (at);
