//! The SP metadata document that administrators give to the IdP.

use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    EntityDescriptor, HTTP_POST_BINDING, IndexedEndpoint, KeyDescriptor, SpSsoDescriptor,
};
use samael::traits::ToXml;

/// Renders SP metadata: entity ID, the ACS (HTTP-POST) and the signing
/// certificate. No encryption key is published, because encrypted
/// assertions are not accepted.
pub fn sp_metadata_xml(
    entity_id: &str,
    acs_url: &str,
    certificate_der: &[u8],
    authn_requests_signed: bool,
) -> anyhow::Result<String> {
    let signing_key = KeyDescriptor {
        key_use: Some("signing".to_owned()),
        key_info: KeyInfo {
            id: None,
            x509_data: Some(X509Data {
                certificates: vec![data_encoding::BASE64.encode(certificate_der)],
            }),
        },
        encryption_methods: None,
    };
    let descriptor = SpSsoDescriptor {
        protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".to_owned()),
        key_descriptors: Some(vec![signing_key]),
        authn_requests_signed: Some(authn_requests_signed),
        want_assertions_signed: Some(true),
        name_id_formats: Some(vec![
            "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".to_owned(),
        ]),
        assertion_consumer_services: vec![IndexedEndpoint {
            binding: HTTP_POST_BINDING.to_owned(),
            location: acs_url.to_owned(),
            response_location: None,
            index: 0,
            is_default: Some(true),
        }],
        ..SpSsoDescriptor::default()
    };
    let entity = EntityDescriptor {
        entity_id: Some(entity_id.to_owned()),
        sp_sso_descriptors: Some(vec![descriptor]),
        ..EntityDescriptor::default()
    };
    entity
        .to_string()
        .map_err(|error| anyhow::anyhow!("cannot serialise SP metadata: {error}"))
}
