//! Third-party identity software that integration tests run on loopback as
//! peers of the broker, and the helpers that the peer launchers share.

pub mod front_door;
pub mod oidc_provider;
pub mod openid_client;
pub(crate) mod process;
pub mod pysaml2;
pub mod simplesamlphp;
pub mod slapd;
pub mod smtp;

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

/// Reads the login hints that a peer recorded in `path`, oldest first. Each
/// peer writes one percent-encoded hint per line, and a missing file means
/// that no hint has arrived yet.
pub(crate) fn read_login_hints(path: &Path) -> Vec<String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(error) => panic!("read {}: {error}", path.display()),
    };
    text.lines().map(percent_decode).collect()
}

/// Decodes `%XX` escapes, as PHP's `rawurlencode`, Python's
/// `urllib.parse.quote` and JavaScript's `encodeURIComponent` write them.
/// Bytes that do not form UTF-8 become U+FFFD.
pub(crate) fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Quotes `value` as a JSON string.
pub(crate) fn json_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            character if u32::from(character) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(character)));
            }
            character => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
}
