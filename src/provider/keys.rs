//! The keys that sign ID tokens and access tokens.
//!
//! The broker creates an RSA key (RS256, the algorithm every OpenID Connect
//! client supports) at first start and keeps it in the database, so every
//! instance sharing the database signs with the same key. `unified-login keys
//! rotate` adds a new key; the JWKS then lists the new key and the previous
//! one, so tokens signed just before the rotation still verify. Instances
//! reload the keys every minute.

use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow};
use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::store::{ProviderStore, StoredKey};

const RSA_BITS: u32 = 2048;
const ALGORITHM: &str = "RS256";

/// One key, ready to sign and verify.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    jwk: Value,
    pub retired: bool,
}

/// The keys in use: the one that signs and all that still verify.
pub struct KeySet {
    pub current: Arc<SigningKey>,
    pub published: Vec<Arc<SigningKey>>,
}

impl KeySet {
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.published
            .iter()
            .find(|key| key.kid == kid)
            .map(Arc::as_ref)
    }

    /// Returns the JSON Web Key Set document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<&Value> = self.published.iter().map(|key| &key.jwk).collect();
        json!({ "keys": keys })
    }
}

/// Shortest time between two reloads caused by tokens with an unknown key id,
/// so that a stream of forged key ids cannot turn into database queries.
const UNKNOWN_KEY_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Keys loaded from the store, shared by all requests and reloaded on schedule.
pub struct KeyRing {
    store: Arc<dyn ProviderStore>,
    keys: RwLock<Option<Arc<KeySet>>>,
    last_unknown_key_reload: std::sync::Mutex<Option<std::time::Instant>>,
}

impl KeyRing {
    pub fn new(store: Arc<dyn ProviderStore>) -> Self {
        Self {
            store,
            keys: RwLock::new(None),
            last_unknown_key_reload: std::sync::Mutex::new(None),
        }
    }

    /// Returns the keys to verify `token` with. A key id this instance has not
    /// loaded may belong to a key that another instance sharing the database
    /// has just created, so the keys are reloaded first, at most once every
    /// few seconds.
    pub async fn for_token(&self, token: &str) -> anyhow::Result<Arc<KeySet>> {
        let current = self.current()?;
        let Some(kid) = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|header| header.kid)
        else {
            return Ok(current);
        };
        if current.find(&kid).is_some() {
            return Ok(current);
        }
        {
            let mut last = self
                .last_unknown_key_reload
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KEY_RELOAD_INTERVAL) {
                return Ok(current);
            }
            *last = Some(std::time::Instant::now());
        }
        let set = Arc::new(key_set(&self.store.signing_keys().await?)?);
        if set.find(&kid).is_some() {
            tracing::info!(kid = %kid, "loaded a signing key that another instance created");
        }
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(set.clone());
        Ok(set)
    }

    /// Loads the keys, creating the first one when the store has none.
    pub async fn load(&self, now: i64) -> anyhow::Result<()> {
        let mut stored = self.store.signing_keys().await?;
        if stored.is_empty() {
            let key = tokio::task::spawn_blocking(move || generate(now)).await??;
            tracing::info!(kid = %key.kid, "created the first token signing key");
            self.store.add_first_signing_key(key).await?;
            stored = self.store.signing_keys().await?;
        }
        let set = key_set(&stored)?;
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(set));
        Ok(())
    }

    /// Returns the loaded keys. Fails only if [`KeyRing::load`] never succeeded.
    pub fn current(&self) -> anyhow::Result<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| anyhow!("the token signing keys are not loaded"))
    }
}

/// Creates a new key and makes it the signing key; returns its key id.
pub async fn rotate(store: &dyn ProviderStore, now: i64) -> anyhow::Result<String> {
    let key = tokio::task::spawn_blocking(move || generate(now)).await??;
    let kid = key.kid.clone();
    store.rotate_signing_key(key, now).await?;
    Ok(kid)
}

fn generate(now: i64) -> anyhow::Result<StoredKey> {
    let rsa = Rsa::generate(RSA_BITS).context("generating an RSA key failed")?;
    let pkey = PKey::from_rsa(rsa)?;
    let pem = String::from_utf8(pkey.private_key_to_pem_pkcs8()?)?;
    let (n, e) = public_components(&pkey)?;
    Ok(StoredKey {
        kid: thumbprint(&n, &e),
        algorithm: ALGORITHM.to_owned(),
        private_key_pem: pem,
        created_at: now,
        retired_at: None,
    })
}

fn public_components(pkey: &PKey<Private>) -> anyhow::Result<(String, String)> {
    let rsa = pkey.rsa()?;
    let n = BASE64URL_NOPAD.encode(&rsa.n().to_vec());
    let e = BASE64URL_NOPAD.encode(&rsa.e().to_vec());
    Ok((n, e))
}

/// Returns the JWK thumbprint (RFC 7638), used as the key id so that the id
/// follows from the key itself.
fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    BASE64URL_NOPAD.encode(&Sha256::digest(canonical.as_bytes()))
}

fn key_set(stored: &[StoredKey]) -> anyhow::Result<KeySet> {
    let mut published = Vec::new();
    for key in stored {
        if key.algorithm != ALGORITHM {
            tracing::warn!(kid = %key.kid, algorithm = %key.algorithm, "skipping a signing key with an unsupported algorithm");
            continue;
        }
        published.push(Arc::new(signing_key(key)?));
    }
    // `stored` is newest first; the newest key that is not retired signs.
    let current = published
        .iter()
        .find(|key| !key.retired)
        .or_else(|| published.first())
        .cloned()
        .ok_or_else(|| anyhow!("the database contains no usable token signing key; run `unified-login oauth2 rotate-key`"))?;
    Ok(KeySet { current, published })
}

fn signing_key(stored: &StoredKey) -> anyhow::Result<SigningKey> {
    let pkey =
        PKey::private_key_from_pem(stored.private_key_pem.as_bytes()).with_context(|| {
            format!(
                "the signing key {} is not a valid PEM private key",
                stored.kid
            )
        })?;
    let (n, e) = public_components(&pkey)?;
    let encoding = EncodingKey::from_rsa_pem(stored.private_key_pem.as_bytes())
        .with_context(|| format!("the signing key {} cannot sign", stored.kid))?;
    let decoding = DecodingKey::from_rsa_components(&n, &e)?;
    let jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "alg": ALGORITHM,
        "kid": stored.kid,
        "n": n,
        "e": e,
    });
    Ok(SigningKey {
        kid: stored.kid.clone(),
        encoding,
        decoding,
        jwk,
        retired: stored.retired_at.is_some(),
    })
}

pub const SIGNING_ALGORITHM: Algorithm = Algorithm::RS256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_has_thumbprint_id_and_signs() {
        let stored = generate(1_700_000_000).unwrap();
        let key = signing_key(&stored).unwrap();
        assert_eq!(key.kid.len(), 43);
        assert_eq!(key.jwk["kid"], stored.kid);
        assert_eq!(key.jwk["alg"], "RS256");
        assert!(
            key.jwk.get("d").is_none(),
            "the JWK must not carry the private exponent"
        );

        let header = jsonwebtoken::Header::new(SIGNING_ALGORITHM);
        let token = jsonwebtoken::encode(&header, &json!({"sub": "x"}), &key.encoding).unwrap();
        let mut validation = jsonwebtoken::Validation::new(SIGNING_ALGORITHM);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let decoded = jsonwebtoken::decode::<Value>(&token, &key.decoding, &validation).unwrap();
        assert_eq!(decoded.claims["sub"], "x");
    }

    #[test]
    fn newest_unretired_key_signs() {
        let mut old = generate(1).unwrap();
        old.retired_at = Some(2);
        let new = generate(2).unwrap();
        let set = key_set(&[new.clone(), old.clone()]).unwrap();
        assert_eq!(set.current.kid, new.kid);
        assert_eq!(set.published.len(), 2);
        assert!(set.find(&old.kid).is_some());
        assert_eq!(set.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    fn token_signed_by(key: &SigningKey) -> String {
        let mut header = jsonwebtoken::Header::new(SIGNING_ALGORITHM);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &json!({"sub": "x"}), &key.encoding).unwrap()
    }

    #[tokio::test]
    async fn unknown_key_id_reloads_once() {
        let pool = crate::db::connect_default("sqlite::memory:").await.unwrap();
        let store: Arc<dyn ProviderStore> =
            Arc::new(crate::provider::store::SqlProviderStore::new(pool));
        let this_instance = KeyRing::new(store.clone());
        this_instance.load(1).await.unwrap();
        let before = this_instance.current().unwrap().current.kid.clone();

        // Another instance rotates the key and signs with the new one.
        let new_kid = rotate(store.as_ref(), 2).await.unwrap();
        let other_instance = KeyRing::new(store.clone());
        other_instance.load(3).await.unwrap();
        let token = token_signed_by(&other_instance.current().unwrap().current);

        let keys = this_instance.for_token(&token).await.unwrap();
        assert!(keys.find(&new_kid).is_some(), "the new key was not loaded");
        assert!(
            keys.find(&before).is_some(),
            "the previous key is still published"
        );

        // A second unknown key id within the interval reads nothing.
        let stranger = signing_key(&generate(4).unwrap()).unwrap();
        let keys = this_instance
            .for_token(&token_signed_by(&stranger))
            .await
            .unwrap();
        assert!(keys.find(&stranger.kid).is_none());
    }
}
