-- Keys that sign the ID tokens and access tokens the broker issues. The
-- newest row without `retired_at` signs; retired keys stay published in the
-- JWKS until the next rotation, so tokens signed just before a rotation
-- still verify.
CREATE TABLE signing_keys (
    kid              TEXT PRIMARY KEY NOT NULL,
    algorithm        TEXT NOT NULL,
    private_key_pem  TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    retired_at       BIGINT
);

-- One grant per authorization: the code and every refresh token issued from
-- it belong to it, so revoking the grant revokes the whole token family.
-- `session_id` is the broker session the user signed in with; signing out
-- revokes every grant of that session.
CREATE TABLE oauth_grants (
    id              TEXT PRIMARY KEY NOT NULL,
    client_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id      TEXT NOT NULL,
    scope           TEXT NOT NULL,
    nonce           TEXT,
    auth_time       BIGINT NOT NULL,
    methods         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoked_reason  TEXT
);
CREATE INDEX oauth_grants_session ON oauth_grants (session_id);
CREATE INDEX oauth_grants_expires ON oauth_grants (expires_at);

-- Authorization codes and refresh tokens are stored as SHA-256 digests, so a
-- copy of the database holds no usable token.
CREATE TABLE oauth_codes (
    code_hash       TEXT PRIMARY KEY NOT NULL,
    grant_id        TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);

CREATE TABLE oauth_refresh_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    grant_id    TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    issued_at   BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX oauth_refresh_tokens_grant ON oauth_refresh_tokens (grant_id);
