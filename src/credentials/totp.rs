//! Time-based one-time passwords (RFC 6238) as authenticator apps expect
//! them: SHA-1, six digits, 30-second steps.

use qrcode::QrCode;
use qrcode::render::svg;
use totp_rs::{Algorithm, Secret, TOTP};

pub const ISSUER: &str = "unified-login";
const DIGITS: usize = 6;
const STEP_SECONDS: u64 = 30;
/// Steps accepted on either side of the current one, for clock drift
/// between the server and the user's phone.
const WINDOW_STEPS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("the stored TOTP secret is invalid: {0}")]
    InvalidSecret(String),
}

/// Generates a new random 160-bit secret, base32-encoded.
pub fn generate_secret() -> String {
    Secret::generate_secret().to_encoded().to_string()
}

fn build(secret_base32: &str, account: &str) -> Result<TOTP, TotpError> {
    let bytes = Secret::Encoded(secret_base32.to_owned())
        .to_bytes()
        .map_err(|error| TotpError::InvalidSecret(format!("{error:?}")))?;
    // The otpauth label uses ':' to separate issuer and account.
    let account = account.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECONDS,
        bytes,
        Some(ISSUER.to_owned()),
        account,
    )
    .map_err(|error| TotpError::InvalidSecret(error.to_string()))
}

/// Returns the `otpauth://` URI that authenticator apps import.
pub fn otpauth_uri(secret_base32: &str, account: &str) -> Result<String, TotpError> {
    Ok(build(secret_base32, account)?.get_url())
}

/// Renders `uri` as a QR code in SVG, for an `<img>` data URL.
pub fn qr_svg(uri: &str) -> String {
    match QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
        Err(error) => {
            tracing::error!(%error, "otpauth URI does not fit in a QR code");
            String::new()
        }
    }
}

/// Returns the time step whose code equals `code`, searching the current step
/// and `WINDOW_STEPS` on either side, or `None` when no step matches. The
/// caller must record the step as used so that a code cannot be replayed.
pub fn matching_step(secret_base32: &str, code: &str, now: u64) -> Result<Option<u64>, TotpError> {
    let totp = build(secret_base32, "user")?;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let current = now / STEP_SECONDS;
    let first = current.saturating_sub(WINDOW_STEPS);
    let mut found = None;
    // Every candidate is compared, so the time taken does not reveal which
    // step matched.
    for step in first..=current + WINDOW_STEPS {
        let expected = totp.generate(step * STEP_SECONDS);
        if subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into() {
            found = Some(step);
        }
    }
    Ok(found)
}

/// Computes the code for `now`; used by tests and the enrolment self-check.
pub fn code_at(secret_base32: &str, now: u64) -> Result<String, TotpError> {
    Ok(build(secret_base32, "user")?.generate(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B secret "12345678901234567890" in base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn code_matches_rfc6238_vector() {
        // The RFC lists 8-digit codes; the last six digits are the 6-digit code.
        assert_eq!(code_at(RFC_SECRET, 59).unwrap(), "287082");
        assert_eq!(code_at(RFC_SECRET, 1_111_111_109).unwrap(), "081804");
    }

    #[test]
    fn window_accepts_adjacent_steps_only() {
        let now = 1_000_020; // step 33334
        let previous = code_at(RFC_SECRET, now - 30).unwrap();
        let next = code_at(RFC_SECRET, now + 30).unwrap();
        let too_old = code_at(RFC_SECRET, now - 60).unwrap();
        assert_eq!(
            matching_step(RFC_SECRET, &previous, now).unwrap(),
            Some(33333)
        );
        assert_eq!(matching_step(RFC_SECRET, &next, now).unwrap(), Some(33335));
        assert_eq!(matching_step(RFC_SECRET, &too_old, now).unwrap(), None);
    }

    #[test]
    fn malformed_codes_do_not_match() {
        for code in ["", "12345", "1234567", "abcdef", "12 34 5x"] {
            assert_eq!(matching_step(RFC_SECRET, code, 59).unwrap(), None, "{code}");
        }
        assert_eq!(matching_step(RFC_SECRET, "287 082", 59).unwrap(), Some(1));
    }

    #[test]
    fn uri_names_issuer_and_account() {
        let uri = otpauth_uri(RFC_SECRET, "jane@example.com").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/unified-login:jane%40example.com?"),
            "{uri}"
        );
        assert!(uri.contains("issuer=unified-login"), "{uri}");
        assert!(!qr_svg(&uri).is_empty());
    }

    #[test]
    fn generated_secret_is_usable() {
        let secret = generate_secret();
        let code = code_at(&secret, 1_700_000_000).unwrap();
        assert!(
            matching_step(&secret, &code, 1_700_000_000)
                .unwrap()
                .is_some()
        );
    }
}
