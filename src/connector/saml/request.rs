//! SP-initiated AuthnRequests over the HTTP-Redirect binding.

use std::io::Write;

use chrono::{DateTime, Utc};
use data_encoding::BASE64;
use flate2::Compression;
use flate2::write::DeflateEncoder;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use samael::schema::{AuthnRequest, Issuer, Subject, SubjectNameID};
use samael::traits::ToXml;
use url::Url;

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const EMAIL_NAME_ID_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const ENTITY_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";
const HTTP_POST_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

pub struct AuthnRequestParams<'a> {
    pub request_id: &'a str,
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    pub sso_url: &'a Url,
    /// Short opaque key; the binding limits RelayState to 80 bytes.
    pub relay_state: &'a str,
    /// The identifier the user typed on the broker's page, never empty.
    pub login_hint: &'a str,
    pub force_authn: bool,
    /// Email to send as the request's Subject, for IdPs that want one.
    pub subject: Option<&'a str>,
    pub issue_instant: DateTime<Utc>,
}

/// Returns the IdP URL that carries the AuthnRequest, signed when `key` is given.
pub fn redirect_url(
    params: &AuthnRequestParams<'_>,
    key: Option<&PKey<Private>>,
) -> anyhow::Result<Url> {
    assert!(
        params.relay_state.len() <= 80,
        "RelayState over the binding's 80-byte limit"
    );
    let xml = authn_request_xml(params)?;
    let mut deflater = DeflateEncoder::new(Vec::new(), Compression::default());
    deflater.write_all(xml.as_bytes())?;
    let encoded = BASE64.encode(&deflater.finish()?);

    // The signature covers exactly SAMLRequest, RelayState and SigAlg in this
    // order, as URL-encoded in the query (SAML bindings 3.4.4.1).
    let mut signed_part = url::form_urlencoded::Serializer::new(String::new());
    signed_part.append_pair("SAMLRequest", &encoded);
    signed_part.append_pair("RelayState", params.relay_state);
    if key.is_some() {
        signed_part.append_pair("SigAlg", RSA_SHA256);
    }
    let mut query = signed_part.finish();
    if let Some(key) = key {
        let mut signer = Signer::new(MessageDigest::sha256(), key)?;
        signer.update(query.as_bytes())?;
        let signature = BASE64.encode(&signer.sign_to_vec()?);
        query.push('&');
        query.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair("Signature", &signature)
                .finish(),
        );
    }
    query.push('&');
    query.push_str(
        &url::form_urlencoded::Serializer::new(String::new())
            .append_pair("login_hint", params.login_hint)
            .finish(),
    );

    let mut url = params.sso_url.clone();
    let combined = match url.query() {
        Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
        _ => query,
    };
    url.set_query(Some(&combined));
    Ok(url)
}

fn authn_request_xml(params: &AuthnRequestParams<'_>) -> anyhow::Result<String> {
    let request = AuthnRequest {
        id: params.request_id.to_owned(),
        version: "2.0".to_owned(),
        issue_instant: params.issue_instant,
        destination: Some(params.sso_url.to_string()),
        issuer: Some(Issuer {
            format: Some(ENTITY_FORMAT.to_owned()),
            value: Some(params.sp_entity_id.to_owned()),
            ..Issuer::default()
        }),
        subject: params.subject.map(|email| Subject {
            name_id: Some(SubjectNameID {
                format: Some(EMAIL_NAME_ID_FORMAT.to_owned()),
                value: email.to_owned(),
            }),
            subject_confirmations: None,
        }),
        force_authn: params.force_authn.then_some(true),
        assertion_consumer_service_url: Some(params.acs_url.to_owned()),
        protocol_binding: Some(HTTP_POST_BINDING.to_owned()),
        ..AuthnRequest::default()
    };
    request
        .to_string()
        .map_err(|error| anyhow::anyhow!("cannot serialise AuthnRequest: {error}"))
}

/// Returns a new request ID: an XML NCName (it must not start with a digit)
/// with 128 random bits.
pub fn new_request_id() -> String {
    format!(
        "_{}",
        data_encoding::HEXLOWER.encode(&rand::random::<[u8; 16]>())
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::DeflateDecoder;
    use openssl::sign::Verifier;

    use super::*;
    use crate::connector::saml::sp_keys::generate_self_signed;

    fn params<'a>(sso_url: &'a Url, subject: Option<&'a str>) -> AuthnRequestParams<'a> {
        AuthnRequestParams {
            request_id: "_abc123",
            sp_entity_id: "https://broker.example/saml/metadata",
            acs_url: "https://broker.example/saml/acs",
            sso_url,
            relay_state: "k3y",
            login_hint: "jane@example.com",
            force_authn: false,
            subject,
            issue_instant: Utc::now(),
        }
    }

    fn decoded_request(url: &Url) -> String {
        let encoded = url
            .query_pairs()
            .find(|(name, _)| name == "SAMLRequest")
            .unwrap()
            .1;
        let compressed = BASE64.decode(encoded.as_bytes()).unwrap();
        let mut xml = String::new();
        DeflateDecoder::new(&compressed[..])
            .read_to_string(&mut xml)
            .unwrap();
        xml
    }

    #[test]
    fn request_carries_hint_and_no_subject() {
        let sso = Url::parse("https://idp.example/saml2?tenant=t1").unwrap();
        let url = redirect_url(&params(&sso, None), None).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("tenant".into(), "t1".into()));
        assert!(pairs.contains(&("login_hint".into(), "jane@example.com".into())));
        assert!(pairs.contains(&("RelayState".into(), "k3y".into())));
        let xml = decoded_request(&url);
        assert!(xml.contains("ID=\"_abc123\""), "{xml}");
        assert!(
            xml.contains("AssertionConsumerServiceURL=\"https://broker.example/saml/acs\""),
            "{xml}"
        );
        assert!(!xml.contains("Subject"), "Entra rejects a Subject: {xml}");
    }

    #[test]
    fn subject_only_when_enabled() {
        let sso = Url::parse("https://idp.example/sso").unwrap();
        let url = redirect_url(&params(&sso, Some("jane@example.com")), None).unwrap();
        let xml = decoded_request(&url);
        assert!(xml.contains("jane@example.com"), "{xml}");
        assert!(xml.contains("Subject"), "{xml}");
    }

    #[test]
    fn signature_covers_request_relay_state_and_algorithm() {
        let (key_pem, cert_pem) = generate_self_signed("sp").unwrap();
        let key = PKey::private_key_from_pem(key_pem.as_bytes()).unwrap();
        let sso = Url::parse("https://idp.example/sso").unwrap();
        let url = redirect_url(&params(&sso, None), Some(&key)).unwrap();

        let query = url.query().unwrap();
        let signed = &query[..query.find("&Signature=").unwrap()];
        assert!(signed.starts_with("SAMLRequest="), "{signed}");
        assert!(signed.ends_with(&format!(
            "SigAlg={}",
            url::form_urlencoded::byte_serialize(RSA_SHA256.as_bytes()).collect::<String>()
        )));
        let signature = url
            .query_pairs()
            .find(|(name, _)| name == "Signature")
            .unwrap()
            .1;
        let public = openssl::x509::X509::from_pem(cert_pem.as_bytes())
            .unwrap()
            .public_key()
            .unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &public).unwrap();
        verifier.update(signed.as_bytes()).unwrap();
        assert!(
            verifier
                .verify(&BASE64.decode(signature.as_bytes()).unwrap())
                .unwrap()
        );
    }

    #[test]
    fn request_ids_are_unique_ncnames() {
        let first = new_request_id();
        assert!(first.starts_with('_'));
        assert_eq!(first.len(), 33);
        assert_ne!(first, new_request_id());
    }
}
