//! Parameters of OAuth 2.0 requests, which must not repeat (RFC 6749,
//! section 3.1).

use std::collections::HashMap;

/// Parses a query string or form body. Returns the name of the first
/// parameter that appears twice as the error. Empty values count as absent,
/// as RFC 6749, section 3.1 requires.
pub fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw) {
        if value.is_empty() {
            continue;
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(name.chars().take(100).collect());
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_repeats() {
        let params = parse_params(b"a=1&b=x%20y&c=").unwrap();
        assert_eq!(params["a"], "1");
        assert_eq!(params["b"], "x y");
        assert!(!params.contains_key("c"));
        assert_eq!(parse_params(b"a=1&a=2").unwrap_err(), "a");
    }
}
