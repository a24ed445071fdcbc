//! The service provider's own key pair, used to sign AuthnRequests and
//! published in SP metadata.

use std::path::Path;

use anyhow::Context;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};

pub struct SpKeyPair {
    pub key: PKey<Private>,
    pub certificate: X509,
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

/// Loads the SP key pair, creating it on first start when neither file exists.
pub fn load_or_create(
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
    let key_pem = std::fs::read(key_path)
        .with_context(|| format!("cannot read SAML SP key {}", key_path.display()))?;
    let cert_pem = std::fs::read(cert_path)
        .with_context(|| format!("cannot read SAML SP certificate {}", cert_path.display()))?;
    let key = PKey::private_key_from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    let certificate = X509::from_pem(&cert_pem)
        .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
    if !certificate.public_key()?.public_eq(&key) {
        anyhow::bail!(
            "SAML SP certificate {} does not belong to key {}",
            cert_path.display(),
            key_path.display()
        );
    }
    Ok(SpKeyPair { key, certificate })
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
}
