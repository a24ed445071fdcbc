-- The SAML SP key pair that signs AuthnRequests and appears in the SP
-- metadata, as PEM. One row, so that every instance sharing the database
-- signs with the same key. Instances with `saml.sp_key` and
-- `saml.sp_certificate` set read files instead and leave this table alone.
CREATE TABLE saml_sp_key_pair (
    id               INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    private_key_pem  TEXT NOT NULL,
    certificate_pem  TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);
