//! ID tokens, access tokens and the opaque one-time values (codes, refresh
//! tokens).
//!
//! Access tokens are JWTs (RFC 9068, header `typ: at+jwt`), so resource
//! servers can check them with the JWKS alone. The userinfo endpoint also
//! checks that their grant was not revoked. ID tokens carry `typ: JWT` and
//! lack the access-token claims, so one cannot pass for the other.

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{KeySet, SIGNING_ALGORITHM};
use super::store::Grant;
use crate::directory::User;

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
const ID_TOKEN_TYPE: &str = "JWT";

/// Returns a fresh 256-bit random value, base64url-encoded.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    BASE64URL_NOPAD.encode(&bytes)
}

/// Returns the digest under which a code or refresh token is stored.
pub fn token_digest(token: &str) -> String {
    BASE64URL_NOPAD.encode(&Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    pub sid: String,
    /// The grant this token was issued under, for revocation checks.
    pub grant_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub sid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(flatten)]
    pub profile: ProfileClaims,
}

/// User claims released by the `email` and `profile` scopes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProfileClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
}

impl ProfileClaims {
    /// Returns the claims that `scope` (space-separated) releases.
    pub fn for_scope(user: &User, scope: &str) -> Self {
        let has = |wanted: &str| scope.split(' ').any(|granted| granted == wanted);
        let mut claims = Self::default();
        if has("email") {
            claims.email = Some(user.email.clone());
            // Addresses are entered by administrators or provisioned by the
            // IdP, never typed in by the user, so they count as verified.
            claims.email_verified = Some(true);
        }
        if has("profile") {
            claims.name = Some(user.display_name());
            claims.given_name = Some(user.first_name.clone()).filter(|name| !name.is_empty());
            claims.family_name = Some(user.last_name.clone()).filter(|name| !name.is_empty());
            claims.preferred_username = Some(user.login_id.clone());
        }
        claims
    }
}

/// Everything needed to mint the tokens of one token response.
pub struct Minter<'a> {
    pub keys: &'a KeySet,
    pub issuer: &'a str,
    pub now: i64,
    pub lifetime_seconds: i64,
}

impl Minter<'_> {
    pub fn access_token(&self, grant: &Grant, scope: &str) -> anyhow::Result<String> {
        let claims = AccessClaims {
            iss: self.issuer.to_owned(),
            sub: grant.user_id.clone(),
            aud: grant.client_id.clone(),
            client_id: grant.client_id.clone(),
            exp: self.now + self.lifetime_seconds,
            iat: self.now,
            jti: random_token(),
            scope: scope.to_owned(),
            sid: grant.session_id.clone(),
            grant_id: grant.id.clone(),
        };
        self.sign(ACCESS_TOKEN_TYPE, &claims)
    }

    /// `nonce` is sent only in the ID token of the code exchange, as OpenID
    /// Connect Core 1.0, section 12.2, requires.
    pub fn id_token(
        &self,
        grant: &Grant,
        user: &User,
        scope: &str,
        access_token: &str,
        with_nonce: bool,
    ) -> anyhow::Result<String> {
        let claims = IdClaims {
            iss: self.issuer.to_owned(),
            sub: grant.user_id.clone(),
            aud: grant.client_id.clone(),
            azp: grant.client_id.clone(),
            exp: self.now + self.lifetime_seconds,
            iat: self.now,
            auth_time: grant.auth_time,
            nonce: grant.nonce.clone().filter(|_| with_nonce),
            sid: grant.session_id.clone(),
            amr: grant
                .methods
                .split(' ')
                .filter(|m| !m.is_empty())
                .map(amr_value)
                .collect(),
            at_hash: Some(left_half_hash(access_token)),
            profile: ProfileClaims::for_scope(user, scope),
        };
        self.sign(ID_TOKEN_TYPE, &claims)
    }

    fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(SIGNING_ALGORITHM);
        header.kid = Some(self.keys.current.kid.clone());
        header.typ = Some(typ.to_owned());
        Ok(jsonwebtoken::encode(
            &header,
            claims,
            &self.keys.current.encoding,
        )?)
    }
}

/// Maps the broker's method names to RFC 8176 `amr` values.
fn amr_value(method: &str) -> String {
    match method {
        "password" | "mitel_credentials" => "pwd",
        "totp" | "recovery_code" => "otp",
        "saml" | "oidc" => "fed",
        other => other,
    }
    .to_owned()
}

/// Returns the `at_hash` value: the left half of the SHA-256 digest of the access
/// token, base64url-encoded (OpenID Connect Core 1.0, section 3.1.3.6).
fn left_half_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    BASE64URL_NOPAD.encode(&digest[..16])
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the token is not of the expected type")]
    WrongType,
    #[error("the token's signature or claims are invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// Verifies a JWT this broker issued: header type, key, signature, issuer and,
/// when `check_expiry`, expiry.
pub fn verify<T: for<'de> Deserialize<'de>>(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    expected_type: &str,
    check_expiry: bool,
) -> Result<T, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != SIGNING_ALGORITHM {
        return Err(TokenError::Invalid);
    }
    if !header
        .typ
        .as_deref()
        .is_some_and(|typ| typ.eq_ignore_ascii_case(expected_type))
    {
        return Err(TokenError::WrongType);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    let key = keys.find(&kid).ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(SIGNING_ALGORITHM);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.validate_exp = check_expiry;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })
}
