-- The separate "Mitel credentials" password of CL Auth users.
ALTER TABLE users ADD COLUMN cl_password_hash TEXT;

-- Settings of the SAML identity provider, one JSON document.
CREATE TABLE saml_idp_settings (
    id          BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    settings    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- AuthnRequests sent and not yet answered. The browser carries only the
-- short relay key (RelayState); after a valid response the row holds the
-- verified identity under a one-time hand-off key until the browser's own
-- session picks it up.
CREATE TABLE saml_requests (
    id                  TEXT PRIMARY KEY NOT NULL,
    relay_key           TEXT NOT NULL UNIQUE,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    consumed_at         BIGINT,
    handoff_key         TEXT UNIQUE,
    handoff_expires_at  BIGINT,
    result              TEXT
);

-- Assertion IDs already accepted, kept until the assertion expires, so a
-- replayed response is rejected by every instance sharing the database.
CREATE TABLE saml_assertions (
    issuer        TEXT NOT NULL,
    assertion_id  TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (issuer, assertion_id)
);
CREATE INDEX saml_assertions_expires ON saml_assertions (expires_at);
