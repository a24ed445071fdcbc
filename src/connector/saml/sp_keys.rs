//! The service provider's own key pair, used to sign AuthnRequests and
//! published in SP metadata.
//!
//! By default the pair lives in the database, so that every instance sharing
//! it signs with the same key and the IdP accepts all of their requests.
//! Files are used only when the operator sets both paths.

use std::path::Path;

use anyhow::Context;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};

use crate::config::SpKeyLocation;
use crate::directory::{SamlStore, StoredSpKeyPair};

pub struct SpKeyPair {
    pub key: PKey<Private>,
    pub certificate: X509,
}

impl SpKeyPair {
    /// Returns the hex SHA-256 fingerprint of the certificate, the form
    /// that `saml show` prints for IdP certificates too.
    pub fn fingerprint(&self) -> anyhow::Result<String> {
        let digest = self.certificate.digest(MessageDigest::sha256())?;
        Ok(data_encoding::HEXLOWER.encode(&digest))
    }

    fn same_as(&self, other: &SpKeyPair) -> bool {
        let same_certificate = matches!(
            (self.certificate.to_der(), other.certificate.to_der()),
            (Ok(mine), Ok(theirs)) if mine == theirs
        );
        same_certificate && self.key.public_eq(&other.key)
    }
}

/// Creates an RSA-3072 key and a self-signed certificate valid for ten years.
/// Returns the key and the certificate, both as PEM.
pub fn generate_self_signed(common_name: &str) -> anyhow::Result<(String, String)> {
    let rsa = Rsa::generate(3072)?;
    let key = PKey::from_rsa(rsa)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();

    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let serial = BigNum::from_u32(rand::random::<u32>())?.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    builder.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    builder.set_not_after(Asn1Time::days_from_now(3650)?.as_ref())?;
    builder.sign(&key, MessageDigest::sha256())?;
    let certificate = builder.build();

    Ok((
        String::from_utf8(key.private_key_to_pem_pkcs8()?)?,
        String::from_utf8(certificate.to_pem()?)?,
    ))
}

/// Loads the SP key pair from files, creating both when neither exists.
fn load_or_create(
    key_path: &Path,
    cert_path: &Path,
    common_name: &str,
) -> anyhow::Result<SpKeyPair> {
    if !key_path.exists() && !cert_path.exists() {
        let (key_pem, cert_pem) = generate_self_signed(common_name)?;
        if let Some(parent) = key_path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create folder {}", parent.display()))?;
        }
        write_private(key_path, key_pem.as_bytes())?;
        std::fs::write(cert_path, cert_pem)
            .with_context(|| format!("cannot write {}", cert_path.display()))?;
        tracing::info!(key = %key_path.display(), certificate = %cert_path.display(), "created SAML SP key pair");
    }
    read_pair(key_path, cert_path)
}

/// Loads the SP key pair from `location`, creating it at first start.
/// `now` is the Unix time recorded with a pair stored in the database.
pub async fn load(
    location: &SpKeyLocation,
    store: &dyn SamlStore,
    common_name: &str,
    now: i64,
) -> anyhow::Result<SpKeyPair> {
    let common_name = common_name.to_owned();
    match location {
        SpKeyLocation::Files { key, certificate } => {
            let (key, certificate) = (key.clone(), certificate.clone());
            tokio::task::spawn_blocking(move || load_or_create(&key, &certificate, &common_name))
                .await?
        }
        SpKeyLocation::Database {
            legacy_key,
            legacy_certificate,
        } => load_or_create_shared(store, legacy_key, legacy_certificate, common_name, now).await,
    }
}

/// Loads the pair from the database. When the database has none, the first
/// instance stores the files that earlier versions created at the default
/// path, or a new pair when those are missing.
async fn load_or_create_shared(
    store: &dyn SamlStore,
    legacy_key: &Path,
    legacy_certificate: &Path,
    common_name: String,
    now: i64,
) -> anyhow::Result<SpKeyPair> {
    let stored = store
        .load_sp_key_pair()
        .await
        .context("cannot read the SAML SP key pair from the database")?;
    let stored = match stored {
        Some(stored) => stored,
        None => {
            let legacy = read_legacy_files(legacy_key, legacy_certificate)?;
            let imported = legacy.is_some();
            let candidate = match legacy {
                Some(pair) => to_stored(&pair)?,
                None => {
                    let (private_key_pem, certificate_pem) =
                        tokio::task::spawn_blocking(move || generate_self_signed(&common_name))
                            .await??;
                    StoredSpKeyPair {
                        private_key_pem,
                        certificate_pem,
                    }
                }
            };
            let (stored, added) = store
                .add_first_sp_key_pair(&candidate, now)
                .await
                .context("cannot store the SAML SP key pair in the database")?;
            if added {
                let fingerprint = from_stored(&stored)?.fingerprint()?;
                if imported {
                    tracing::info!(
                        key = %legacy_key.display(),
                        certificate = %legacy_certificate.display(),
                        fingerprint,
                        "imported the SAML SP key pair from files into the database"
                    );
                } else {
                    tracing::info!(fingerprint, "created the SAML SP key pair in the database");
                }
            }
            stored
        }
    };
    let pair = from_stored(&stored)?;
    warn_about_ignored_files(legacy_key, legacy_certificate, &pair);
    Ok(pair)
}

/// Reads the files that earlier versions created, for the import into an
/// empty database. Half a pair is an error, because the IdP may trust only
/// the old certificate and would reject requests signed by a new pair.
fn read_legacy_files(key: &Path, certificate: &Path) -> anyhow::Result<Option<SpKeyPair>> {
    match (key.exists(), certificate.exists()) {
        (false, false) => Ok(None),
        (true, true) => read_pair(key, certificate)
            .map(Some)
            .context("cannot import the SAML SP key pair into the database"),
        (key_exists, _) => {
            let (present, missing) = if key_exists {
                (key, certificate)
            } else {
                (certificate, key)
            };
            anyhow::bail!(
                "found {} but not {}, so the SAML SP key pair cannot be imported into the \
                 database; restore the missing file, or remove {} to let the broker create a \
                 new pair",
                present.display(),
                missing.display(),
                present.display()
            )
        }
    }
}

/// Warns when key files at the default path differ from the pair in the
/// database, because an operator may expect this instance to sign with them.
fn warn_about_ignored_files(key: &Path, certificate: &Path, pair: &SpKeyPair) {
    if !key.exists() && !certificate.exists() {
        return;
    }
    let same = read_pair(key, certificate).is_ok_and(|files| files.same_as(pair));
    if same {
        return;
    }
    tracing::warn!(
        key = %key.display(),
        certificate = %certificate.display(),
        database_fingerprint = pair.fingerprint().unwrap_or_default(),
        "ignoring SAML SP key files that differ from the key pair in the database, which every \
         instance sharing the database uses; delete the files, or set saml.sp_key and \
         saml.sp_certificate on every instance to sign with them"
    );
}

fn to_stored(pair: &SpKeyPair) -> anyhow::Result<StoredSpKeyPair> {
    Ok(StoredSpKeyPair {
        private_key_pem: String::from_utf8(pair.key.private_key_to_pem_pkcs8()?)?,
        certificate_pem: String::from_utf8(pair.certificate.to_pem()?)?,
    })
}

fn from_stored(stored: &StoredSpKeyPair) -> anyhow::Result<SpKeyPair> {
    parse_pair(
        stored.private_key_pem.as_bytes(),
        stored.certificate_pem.as_bytes(),
        "the SAML SP key in the database",
        "the SAML SP certificate in the database",
    )
}

/// Parses a key and a certificate and checks that they belong together.
/// Errors name the sources as `key_name` and `certificate_name`.
fn parse_pair(
    key_pem: &[u8],
    certificate_pem: &[u8],
    key_name: &str,
    certificate_name: &str,
) -> anyhow::Result<SpKeyPair> {
    let key = PKey::private_key_from_pem(key_pem)
        .with_context(|| format!("{key_name} is not a PEM private key"))?;
    let certificate = X509::from_pem(certificate_pem)
        .with_context(|| format!("{certificate_name} is not a PEM certificate"))?;
    if !certificate.public_key()?.public_eq(&key) {
        anyhow::bail!("{certificate_name} does not belong to {key_name}");
    }
    Ok(SpKeyPair { key, certificate })
}

fn read_pair(key_path: &Path, cert_path: &Path) -> anyhow::Result<SpKeyPair> {
    let key_pem = std::fs::read(key_path)
        .with_context(|| format!("cannot read SAML SP key {}", key_path.display()))?;
    let cert_pem = std::fs::read(cert_path)
        .with_context(|| format!("cannot read SAML SP certificate {}", cert_path.display()))?;
    parse_pair(
        &key_pem,
        &cert_pem,
        &format!("SAML SP key {}", key_path.display()),
        &format!("SAML SP certificate {}", cert_path.display()),
    )
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("certs/sp.key");
        let cert = dir.path().join("certs/sp.crt");
        let first = load_or_create(&key, &cert, "sp").unwrap();
        let second = load_or_create(&key, &cert, "sp").unwrap();
        assert_eq!(
            first.certificate.to_der().unwrap(),
            second.certificate.to_der().unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key readable by others: {mode:o}");
        }
    }

    #[test]
    fn mismatched_pair_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (key_a, _) = generate_self_signed("a").unwrap();
        let (_, cert_b) = generate_self_signed("b").unwrap();
        std::fs::write(dir.path().join("k"), key_a).unwrap();
        std::fs::write(dir.path().join("c"), cert_b).unwrap();
        let err = load_or_create(&dir.path().join("k"), &dir.path().join("c"), "x")
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    /// Returns a store on a new SQLite file in `dir`, which several
    /// connections can share, unlike an in-memory database.
    async fn store_in(dir: &Path) -> crate::directory::sql::SqlDirectory {
        let url = format!("sqlite://{}", dir.join("broker.db").display());
        let pool = crate::db::connect_default(&url).await.unwrap();
        crate::directory::sql::SqlDirectory::new(pool)
    }

    fn database_location(dir: &Path) -> SpKeyLocation {
        SpKeyLocation::Database {
            legacy_key: dir.join("certs/saml-sp.key"),
            legacy_certificate: dir.join("certs/saml-sp.crt"),
        }
    }

    fn fingerprint_of(pair: &SpKeyPair) -> String {
        pair.fingerprint().unwrap()
    }

    #[tokio::test]
    async fn database_pair_is_shared_and_writes_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        let location = database_location(dir.path());

        // Two instances starting at the same time on one database.
        let (first, second) = tokio::join!(
            load(&location, &store, "sp", 1),
            load(&location, &store, "sp", 1)
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(
            fingerprint_of(&first),
            fingerprint_of(&second),
            "both instances load one pair"
        );
        assert!(first.key.public_eq(&second.key));

        let third = load(&location, &store, "sp", 2).await.unwrap();
        assert_eq!(
            fingerprint_of(&first),
            fingerprint_of(&third),
            "a later start loads the same pair"
        );
        assert!(
            !dir.path().join("certs").exists(),
            "the pair in the database is not written to files"
        );
    }

    #[tokio::test]
    async fn default_files_imported_into_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        let key = dir.path().join("certs/saml-sp.key");
        let cert = dir.path().join("certs/saml-sp.crt");
        let files = load_or_create(&key, &cert, "old").unwrap();

        let location = database_location(dir.path());
        let imported = load(&location, &store, "new", 1).await.unwrap();
        assert_eq!(
            fingerprint_of(&imported),
            fingerprint_of(&files),
            "the files' certificate is used"
        );
        assert!(imported.key.public_eq(&files.key), "the files' key is used");

        std::fs::remove_file(&key).unwrap();
        std::fs::remove_file(&cert).unwrap();
        let later = load(&location, &store, "new", 2).await.unwrap();
        assert_eq!(
            fingerprint_of(&later),
            fingerprint_of(&files),
            "the imported pair outlives the files"
        );
    }

    #[tokio::test]
    async fn database_pair_wins_over_different_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        let location = database_location(dir.path());
        let stored = load(&location, &store, "sp", 1).await.unwrap();

        let other_dir = tempfile::tempdir().unwrap();
        let other = database_location(other_dir.path());
        let SpKeyLocation::Database {
            legacy_key,
            legacy_certificate,
        } = &other
        else {
            unreachable!("database_location returns a database location");
        };
        let files = load_or_create(legacy_key, legacy_certificate, "other").unwrap();
        assert_ne!(fingerprint_of(&files), fingerprint_of(&stored));

        let loaded = load(&other, &store, "sp", 2).await.unwrap();
        assert_eq!(
            fingerprint_of(&loaded),
            fingerprint_of(&stored),
            "the database's pair is used"
        );
    }

    #[tokio::test]
    async fn half_default_pair_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        let (_, cert_pem) = generate_self_signed("old").unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/saml-sp.crt"), cert_pem).unwrap();

        let location = database_location(dir.path());
        let err = load(&location, &store, "sp", 1).await.err().unwrap();
        let message = err.to_string();
        assert!(message.contains("saml-sp.crt but not"), "{message}");
        assert!(message.contains("saml-sp.key"), "{message}");
        assert_eq!(
            store.load_sp_key_pair().await.unwrap(),
            None,
            "no pair was stored"
        );
    }

    #[test]
    fn stored_pair_debug_hides_the_key() {
        let (key_pem, certificate_pem) = generate_self_signed("sp").unwrap();
        let stored = StoredSpKeyPair {
            private_key_pem: key_pem,
            certificate_pem,
        };
        let debug = format!("{stored:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}
