-- SCIM 2.0 provisioning from the identity provider.

-- Directory fields that the provisioning service manages. `scim_user_name`
-- keeps the IdP's userName (the UPN) apart from the login ID, because the
-- login ID becomes the email at the first single sign-on.
ALTER TABLE users ADD COLUMN scim_user_name TEXT;
ALTER TABLE users ADD COLUMN scim_user_name_key TEXT;
ALTER TABLE users ADD COLUMN scim_external_id TEXT;
ALTER TABLE users ADD COLUMN scim_managed INTEGER NOT NULL DEFAULT 0;
-- Incremented on every SCIM write; the ETag-like guard against lost updates.
ALTER TABLE users ADD COLUMN scim_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN role TEXT;
ALTER TABLE users ADD COLUMN directory_number TEXT;
ALTER TABLE users ADD COLUMN mobile TEXT;
ALTER TABLE users ADD COLUMN did TEXT;
ALTER TABLE users ADD COLUMN company TEXT;
ALTER TABLE users ADD COLUMN street_address TEXT;
ALTER TABLE users ADD COLUMN city TEXT;
ALTER TABLE users ADD COLUMN postal_code TEXT;
ALTER TABLE users ADD COLUMN country TEXT;
CREATE UNIQUE INDEX users_scim_user_name_key ON users (scim_user_name_key)
    WHERE scim_user_name_key IS NOT NULL;
CREATE INDEX users_scim_external_id ON users (scim_external_id)
    WHERE scim_external_id IS NOT NULL;

-- The one Secret Token, stored as the SHA-256 digest of the token. Its
-- presence means that synchronisation is on.
CREATE TABLE scim_token (
    id          INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    token_hash  BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Administrator switches for synchronisation.
CREATE TABLE scim_settings (
    id                       INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    defer_all                INTEGER NOT NULL DEFAULT 0,
    reinitialize             INTEGER NOT NULL DEFAULT 0,
    -- When the first request of the full cycle arrived, and when the latest one did.
    reinitialize_started_at  INTEGER,
    last_request_at          INTEGER,
    updated_at               INTEGER NOT NULL
);

-- Changes from the IdP that were not applied, kept for the administrator.
-- `payload` is the request body as received (a User resource or a PatchOp).
CREATE TABLE scim_detained (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    operation   TEXT NOT NULL CHECK (operation IN ('create', 'replace', 'patch', 'delete')),
    user_id     TEXT NOT NULL,
    user_name   TEXT,
    reason      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX scim_detained_user ON scim_detained (user_id);
