-- Administrators sign in through the same login flow as everyone else; this
-- flag opens the admin pages to them.
ALTER TABLE users ADD COLUMN is_admin BIGINT NOT NULL DEFAULT 0;

-- Bearer tokens for the admin API, created on the command line. Only the
-- SHA-256 digest is stored.
CREATE TABLE admin_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

-- Emails waiting to be sent, or sent. A row is written in the same
-- transaction as the change it reports, so no change goes without its email
-- and no email without its change. Failed sends stay here with their error.
CREATE TABLE email_outbox (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    user_id          TEXT,
    recipient        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    sent_at          BIGINT,
    failed_at        BIGINT,
    last_error       TEXT
);
CREATE INDEX email_outbox_due ON email_outbox (sent_at, failed_at, next_attempt_at);

-- One-time links in account-setup emails, stored as SHA-256 digests.
CREATE TABLE setup_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

-- Fields administrators keep locally, shown in the user summary report.
ALTER TABLE users ADD COLUMN department TEXT;
ALTER TABLE users ADD COLUMN location TEXT;
ALTER TABLE users ADD COLUMN language TEXT;
ALTER TABLE users ADD COLUMN ucc_bundle TEXT;
