//! Validation of one Entra-shaped SAML response (assertion signed with
//! RSA-SHA256, UPN as NameID and claim), single-threaded, so the inverse of
//! the time per iteration is responses per second per core.

#[allow(dead_code)]
#[path = "../tests/it/saml_builder.rs"]
mod saml_builder;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use unified_login::connector::saml::certs::parse_certificates;
use unified_login::connector::saml::response::decode_post_binding;
use unified_login::connector::saml::settings::ENTRA_UPN_CLAIM;

use saml_builder::{ENTRA_CERT, Shape, build, validate_for_sp};

fn validation(c: &mut Criterion) {
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let xml = build(&Shape::entra(now));
    let encoded = data_encoding::BASE64.encode(xml.as_bytes());
    let certificates = parse_certificates(ENTRA_CERT).expect("certificate");

    c.bench_function("saml_validate_entra_response", |b| {
        b.iter(|| {
            let decoded = decode_post_binding(&encoded).expect("base64");
            validate_for_sp(&decoded, &certificates, Some(ENTRA_UPN_CLAIM), now)
                .expect("valid response")
        });
    });
}

criterion_group!(benches, validation);
criterion_main!(benches);
