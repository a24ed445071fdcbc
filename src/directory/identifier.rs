//! Normalisation of what users type into the identifier field.
//!
//! Email addresses and login IDs are compared on a normalised key: surrounding
//! whitespace removed, Unicode in NFC, letters lower-cased, and the domain of an
//! email address converted to its ASCII (IDNA) form. The same key function is
//! applied to stored values and to typed input, so `Jane.Doe@Bücher.example`,
//! `  jane.doe@xn--bcher-kva.example ` and their decomposed Unicode forms all
//! find the same user.

use unicode_normalization::UnicodeNormalization;

/// Maximum identifier length accepted, in characters. Email addresses are limited to
/// 254 octets by RFC 5321, and nothing longer is worth a database look-up.
pub const MAX_IDENTIFIER_CHARS: usize = 320;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentifierError {
    #[error("enter an email address or login ID")]
    Empty,
    #[error("the identifier is longer than {MAX_IDENTIFIER_CHARS} characters")]
    TooLong,
    #[error("the identifier contains control characters")]
    ControlCharacters,
    #[error("the domain '{0}' is not a valid internationalised domain name")]
    InvalidDomain(String),
}

/// Returns the look-up key for an email address or login ID.
pub fn identifier_key(input: &str) -> Result<String, IdentifierError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if trimmed.chars().count() > MAX_IDENTIFIER_CHARS {
        return Err(IdentifierError::TooLong);
    }
    if trimmed.chars().any(char::is_control) {
        return Err(IdentifierError::ControlCharacters);
    }

    let composed: String = trimmed.nfc().collect();
    match composed.rsplit_once('@') {
        Some((local, domain)) if !domain.is_empty() => {
            let ascii_domain = idna::domain_to_ascii_strict(domain)
                .map_err(|_| IdentifierError::InvalidDomain(domain.to_owned()))?;
            Ok(format!("{}@{}", local.to_lowercase(), ascii_domain))
        }
        _ => Ok(composed.to_lowercase()),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmailError {
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    #[error("'{0}' is not a valid email address: expected the form name@example.com")]
    Invalid(String),
}

/// Checks that `input` is a deliverable-looking email address and returns it
/// trimmed and in NFC, with the original letter case kept for display.
pub fn parse_email(input: &str) -> Result<String, EmailError> {
    let key = identifier_key(input)?;
    let Some((local, domain)) = key.rsplit_once('@') else {
        return Err(EmailError::Invalid(input.trim().to_owned()));
    };
    let has_dotted_domain = domain.split('.').filter(|label| !label.is_empty()).count() >= 2;
    if local.is_empty() || !has_dotted_domain || !email_address::EmailAddress::is_valid(&key) {
        return Err(EmailError::Invalid(input.trim().to_owned()));
    }
    Ok(input.trim().nfc().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_case_and_whitespace() {
        assert_eq!(
            identifier_key("  Jane.Doe@Example.COM\t").unwrap(),
            "jane.doe@example.com"
        );
    }

    #[test]
    fn key_composes_unicode() {
        let decomposed = "jose\u{301}@example.com";
        let composed = "jos\u{e9}@example.com";
        assert_eq!(
            identifier_key(decomposed).unwrap(),
            identifier_key(composed).unwrap()
        );
    }

    #[test]
    fn key_converts_domain_to_ascii() {
        assert_eq!(
            identifier_key("anna@Bücher.Example").unwrap(),
            "anna@xn--bcher-kva.example"
        );
        assert_eq!(
            identifier_key("anna@xn--bcher-kva.example").unwrap(),
            identifier_key("ANNA@bücher.example").unwrap()
        );
    }

    #[test]
    fn key_of_login_id_is_lower_case() {
        assert_eq!(identifier_key(" JDoe ").unwrap(), "jdoe");
    }

    #[test]
    fn key_rejects_empty_and_control_input() {
        assert_eq!(identifier_key("   "), Err(IdentifierError::Empty));
        assert_eq!(
            identifier_key("a\u{0}b"),
            Err(IdentifierError::ControlCharacters)
        );
        assert_eq!(
            identifier_key(&"a".repeat(400)),
            Err(IdentifierError::TooLong)
        );
    }

    #[test]
    fn key_rejects_invalid_domain() {
        assert!(matches!(
            identifier_key("a@exa mple..com"),
            Err(IdentifierError::InvalidDomain(_))
        ));
    }

    #[test]
    fn email_parse_accepts_and_keeps_case() {
        assert_eq!(
            parse_email(" Jane.Doe@Example.com ").unwrap(),
            "Jane.Doe@Example.com"
        );
    }

    #[test]
    fn email_parse_rejects_malformed() {
        for bad in [
            "jdoe",
            "@example.com",
            "jdoe@",
            "jdoe@localhost",
            "a b@example.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad} was accepted");
        }
    }
}
