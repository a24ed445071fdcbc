//! IdP signing certificates pasted or loaded as PEM.
//!
//! Administrators paste several certificates one after the other during a
//! rollover, often copied from Windows tools with CRLF line ends or from
//! metadata as bare base64, so all of those forms are accepted.

use data_encoding::BASE64;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use samael::crypto::CertificateDer;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error(
        "no certificate found: paste one or more blocks starting with -----BEGIN CERTIFICATE-----"
    )]
    Empty,
    #[error("certificate {index} is not valid base64: {detail}")]
    Base64 { index: usize, detail: String },
    #[error("certificate {index} is not a valid X.509 certificate: {detail}")]
    X509 { index: usize, detail: String },
    #[error("certificate {index} has no END CERTIFICATE line")]
    Unterminated { index: usize },
}

/// A parsed signing certificate with a short fingerprint for logs.
#[derive(Clone)]
pub struct SigningCertificate {
    pub der: CertificateDer,
    /// The public key, parsed once so that each response costs no
    /// certificate decoding.
    pub public_key: PKey<Public>,
    /// SHA-256 fingerprint, hex, used to name the certificate in logs and `saml show`.
    pub fingerprint: String,
    pub subject: String,
    /// Unix time after which the certificate is no longer valid.
    pub not_after: String,
}

impl std::fmt::Debug for SigningCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCertificate")
            .field("fingerprint", &self.fingerprint)
            .field("subject", &self.subject)
            .finish()
    }
}

/// Parses every certificate in `text`: PEM blocks, or one bare base64 body.
pub fn parse_certificates(text: &str) -> Result<Vec<SigningCertificate>, CertificateError> {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let bodies = pem_bodies(&normalized)?;
    if bodies.is_empty() {
        return Err(CertificateError::Empty);
    }
    bodies
        .iter()
        .enumerate()
        .map(|(offset, body)| decode_certificate(offset + 1, body))
        .collect()
}

fn pem_bodies(text: &str) -> Result<Vec<String>, CertificateError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";

    if !text.contains(BEGIN) {
        let bare: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        return Ok(if bare.is_empty() {
            Vec::new()
        } else {
            vec![bare]
        });
    }
    let mut bodies = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        let end = after_begin
            .find(END)
            .ok_or(CertificateError::Unterminated {
                index: bodies.len() + 1,
            })?;
        bodies.push(
            after_begin[..end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect(),
        );
        rest = &after_begin[end + END.len()..];
    }
    Ok(bodies)
}

fn decode_certificate(index: usize, body: &str) -> Result<SigningCertificate, CertificateError> {
    let der = BASE64
        .decode(body.as_bytes())
        .map_err(|error| CertificateError::Base64 {
            index,
            detail: error.to_string(),
        })?;
    let x509 = X509::from_der(&der).map_err(|error| CertificateError::X509 {
        index,
        detail: error.to_string(),
    })?;
    let digest = x509
        .digest(openssl::hash::MessageDigest::sha256())
        .map_err(|error| CertificateError::X509 {
            index,
            detail: error.to_string(),
        })?;
    let public_key = x509.public_key().map_err(|error| CertificateError::X509 {
        index,
        detail: error.to_string(),
    })?;
    let subject = x509
        .subject_name()
        .entries()
        .filter_map(|entry| entry.data().to_string().ok())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(SigningCertificate {
        der: CertificateDer::from(der),
        public_key,
        fingerprint: data_encoding::HEXLOWER.encode(&digest),
        subject,
        not_after: x509.not_after().to_string(),
    })
}

/// Formats DER bytes as one PEM block.
pub fn to_pem(der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::saml::sp_keys::generate_self_signed;

    fn sample_pem(common_name: &str) -> String {
        let (_key, cert_pem) = generate_self_signed(common_name).unwrap();
        cert_pem
    }

    #[test]
    fn parses_several_pem_blocks_with_crlf() {
        let bundle =
            format!("{}\n{}", sample_pem("first"), sample_pem("second")).replace('\n', "\r\n");
        let certs = parse_certificates(&bundle).unwrap();
        assert_eq!(certs.len(), 2);
        assert!(certs[0].subject.contains("first"), "{:?}", certs[0]);
        assert!(certs[1].subject.contains("second"), "{:?}", certs[1]);
        assert_ne!(certs[0].fingerprint, certs[1].fingerprint);
    }

    #[test]
    fn parses_bare_base64_wrapped_at_76() {
        let pem = sample_pem("bare");
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let wrapped: Vec<String> = body
            .as_bytes()
            .chunks(76)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect();
        let certs = parse_certificates(&wrapped.join("\r\n")).unwrap();
        assert_eq!(certs.len(), 1);
    }

    #[test]
    fn round_trips_through_pem() {
        let certs = parse_certificates(&sample_pem("round")).unwrap();
        let again = parse_certificates(&to_pem(certs[0].der.der_data())).unwrap();
        assert_eq!(again[0].fingerprint, certs[0].fingerprint);
    }

    #[test]
    fn rejects_empty_and_broken_input() {
        assert_eq!(
            parse_certificates("  \n").unwrap_err(),
            CertificateError::Empty
        );
        assert!(matches!(
            parse_certificates("-----BEGIN CERTIFICATE-----\nAAAA"),
            Err(CertificateError::Unterminated { index: 1 })
        ));
        assert!(matches!(
            parse_certificates("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"),
            Err(CertificateError::Base64 { index: 1, .. })
        ));
        assert!(matches!(
            parse_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
            Err(CertificateError::X509 { index: 1, .. })
        ));
    }
}
