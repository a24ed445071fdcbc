//! One-time recovery codes for users who lost their authenticator.
//!
//! Each code carries 50 random bits, so a fast digest (SHA-256) is enough to
//! store it: unlike passwords, these codes cannot be guessed from a list.

use data_encoding::BASE32_NOPAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const CODE_COUNT: usize = 10;
const CODE_CHARS: usize = 10;

/// Generates `CODE_COUNT` codes shaped `abcde-fghij`.
pub fn generate_codes() -> Vec<String> {
    let mut rng = rand::rngs::OsRng;
    (0..CODE_COUNT)
        .map(|_| {
            let mut bytes = [0u8; 7];
            rng.fill_bytes(&mut bytes);
            let encoded = BASE32_NOPAD.encode(&bytes).to_lowercase();
            format!("{}-{}", &encoded[..5], &encoded[5..CODE_CHARS])
        })
        .collect()
}

/// Returns the code in canonical form (lower case, no separators), or `None`
/// when the input cannot be a recovery code.
pub fn normalize(input: &str) -> Option<String> {
    let canonical: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = canonical.len() == CODE_CHARS
        && canonical
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    valid.then_some(canonical)
}

/// Returns the stored digest of a canonical code.
pub fn digest(canonical: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_distinct_and_normalizable() {
        let codes = generate_codes();
        assert_eq!(codes.len(), CODE_COUNT);
        let mut canonical: Vec<_> = codes.iter().map(|c| normalize(c).unwrap()).collect();
        canonical.sort();
        canonical.dedup();
        assert_eq!(canonical.len(), CODE_COUNT);
    }

    #[test]
    fn normalize_accepts_typing_variants() {
        assert_eq!(normalize(" ABCDE-fgh23 ").as_deref(), Some("abcdefgh23"));
        assert_eq!(normalize("abcde fgh23").as_deref(), Some("abcdefgh23"));
        assert_eq!(normalize("123456"), None);
        assert_eq!(normalize("abcde-fgh21"), None);
    }

    #[test]
    fn digest_is_stable_hex() {
        assert_eq!(digest("abcdefgh23").len(), 64);
        assert_eq!(digest("abcdefgh23"), digest("abcdefgh23"));
        assert_ne!(digest("abcdefgh23"), digest("abcdefgh24"));
    }
}
