//! Validation of `return_to`, the page a browser goes back to after sign-in.
//!
//! Only paths on the broker's own origin are accepted, so the parameter
//! cannot turn the login page into an open redirect.

use url::Url;

pub const DEFAULT_RETURN_TO: &str = "/account";

/// Returns `raw` as a same-origin path with its query, or the default page
/// when `raw` is missing or could lead anywhere else.
pub fn safe_return_to(raw: Option<&str>, public_url: &Url) -> String {
    raw.and_then(|raw| same_origin_path(raw, public_url))
        .unwrap_or_else(|| DEFAULT_RETURN_TO.to_owned())
}

fn same_origin_path(raw: &str, public_url: &Url) -> Option<String> {
    // Browsers treat `\` like `/` and drop tabs and newlines inside URLs, so
    // `/\evil.example` or `/\t/evil.example` would leave the site.
    let plain_path = raw.starts_with('/')
        && !raw.starts_with("//")
        && !raw.contains('\\')
        && !raw.chars().any(char::is_control)
        && raw.len() <= 2048;
    if !plain_path {
        return None;
    }
    let resolved = public_url.join(raw).ok()?;
    if resolved.origin() != public_url.origin() {
        return None;
    }
    let mut path = resolved.path().to_owned();
    // Dot segments can collapse into a leading `//` (`/.//evil.example`
    // resolves to the path `//evil.example`), which browsers read as another
    // host, so the resolved path is checked again.
    if path.starts_with("//") || path.starts_with("/\\") {
        return None;
    }
    if let Some(query) = resolved.query() {
        path.push('?');
        path.push_str(query);
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://login.example.com/").unwrap()
    }

    #[test]
    fn keeps_local_paths() {
        assert_eq!(safe_return_to(Some("/account"), &base()), "/account");
        assert_eq!(
            safe_return_to(Some("/a/b?x=1&y=2"), &base()),
            "/a/b?x=1&y=2"
        );
    }

    #[test]
    fn rejects_other_origins() {
        for raw in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "javascript:alert(1)",
            "evil.example",
            "http://login.example.com/",
            "/.//evil.example",
            "/..//evil.example",
            "/%2E//evil.example",
            "/a/..//evil.example",
            "/x/../..//evil.example",
            "",
        ] {
            assert_eq!(
                safe_return_to(Some(raw), &base()),
                DEFAULT_RETURN_TO,
                "{raw:?}"
            );
        }
        assert_eq!(safe_return_to(None, &base()), DEFAULT_RETURN_TO);
    }

    #[test]
    fn resolves_dot_segments_within_origin() {
        assert_eq!(safe_return_to(Some("/a/../../b"), &base()), "/b");
    }
}
