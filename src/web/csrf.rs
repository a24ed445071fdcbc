//! CSRF protection for every form the broker serves.
//!
//! Every page with a form embeds a random token in a hidden `csrf_token`
//! field, and a middleware rejects any state-changing request whose form
//! does not carry the same token. The `Origin` header, when present, must
//! also be the broker's own.
//!
//! A signed-in session stores its token. Before sign-in the token lives in
//! a cookie of its own and the form repeats it (double submit), so that
//! showing the sign-in page writes nothing to the database, however often
//! it is requested.
//!
//! NOTE: a host that can set cookies for this one, such as a sibling
//! subdomain, can plant a cookie and token pair before sign-in. It could
//! plant a session cookie as well, so a session token is no safer there.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use data_encoding::BASE64URL_NOPAD;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tower_cookies::cookie::SameSite;
use tower_cookies::{Cookie, Cookies};
use tower_sessions::Session;

use crate::error::AppError;
use crate::session::SignedIn;
use crate::state::AppState;

const SESSION_KEY: &str = "csrf.token";
/// The cookie that carries the token of a browser that has not signed in.
pub const COOKIE_NAME: &str = "unified_login_csrf";
pub const FIELD: &str = "csrf_token";
/// Largest form body accepted; sign-in forms are a few hundred bytes.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Length of a token: 32 random bytes in unpadded base64url.
const TOKEN_CHARS: usize = 43;

/// The source of the CSRF token for the forms of one response: the
/// session's token once the browser has signed in, the CSRF cookie before.
pub struct Csrf {
    session: Session,
    cookies: Cookies,
    secure: bool,
}

impl FromRequestParts<AppState> for Csrf {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some((session, cookies)) = session_and_cookies(&parts.extensions) else {
            let error = anyhow::anyhow!("a form page is served outside the session layer");
            return Err(AppError::Internal(error).into_response());
        };
        Ok(Self {
            session,
            cookies,
            secure: state.config.uses_https(),
        })
    }
}

impl Csrf {
    /// Returns the token to embed in a form, creating it on first use.
    pub async fn token(&self) -> Result<String, AppError> {
        if let Some(existing) = self.session.get::<String>(SESSION_KEY).await? {
            return Ok(existing);
        }
        if SignedIn::load(&self.session).await?.is_some() {
            let token = new_token();
            self.session.insert(SESSION_KEY, &token).await?;
            return Ok(token);
        }
        if let Some(existing) = cookie_token(&self.cookies) {
            return Ok(existing);
        }
        let token = new_token();
        self.cookies.add(token_cookie(token.clone(), self.secure));
        Ok(token)
    }
}

/// Returns the session and the cookie jar that the session layer put in
/// the request's extensions.
fn session_and_cookies(extensions: &Extensions) -> Option<(Session, Cookies)> {
    Some((
        extensions.get::<Session>()?.clone(),
        extensions.get::<Cookies>()?.clone(),
    ))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    BASE64URL_NOPAD.encode(&bytes)
}

/// Returns the token of the CSRF cookie when it has the shape of one.
fn cookie_token(cookies: &Cookies) -> Option<String> {
    let cookie = cookies.get(COOKIE_NAME)?;
    let value = cookie.value();
    let well_formed =
        value.len() == TOKEN_CHARS && BASE64URL_NOPAD.decode(value.as_bytes()).is_ok();
    well_formed.then(|| value.to_owned())
}

/// Returns the token that a form posted in this session must carry. A
/// signed-in session accepts only its own token, so a token from before
/// sign-in is worthless after it.
async fn expected_token(session: &Session, cookies: &Cookies) -> Result<String, AppError> {
    if let Some(token) = session.get::<String>(SESSION_KEY).await? {
        return Ok(token);
    }
    if SignedIn::load(session).await?.is_some() {
        return Ok(String::new());
    }
    Ok(cookie_token(cookies).unwrap_or_default())
}

/// Drops the session's token so that the next form gets a new one. Sign-in
/// calls it, so a token seen before sign-in is worthless after it.
pub async fn rotate(session: &Session) -> Result<(), AppError> {
    session.remove::<String>(SESSION_KEY).await?;
    Ok(())
}

/// Compares two tokens in constant time; an empty expected token never matches.
pub fn tokens_match(expected: &str, submitted: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

/// Returns the value of the `csrf_token` field in a URL-encoded form body.
pub fn submitted_token(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(name, _)| name == FIELD)
        .map(|(_, value)| value.into_owned())
}

/// Middleware that checks the CSRF token of every non-safe request, and
/// drops the CSRF cookie of a browser that has signed in.
pub async fn verify(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some((session, cookies)) = session_and_cookies(request.extensions()) else {
        tracing::error!("CSRF check runs outside the session layer");
        return AppError::CsrfRejected.into_response();
    };
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let response = if safe {
        next.run(request).await
    } else {
        match check(&state, request, &session, &cookies).await {
            Ok(request) => next.run(request).await,
            Err(rejection) => return rejection,
        }
    };
    drop_cookie_after_sign_in(&session, &cookies, state.config.uses_https()).await;
    response
}

/// Checks the origin and the CSRF token of a state-changing request, and
/// returns the request with its body read back in.
async fn check(
    state: &AppState,
    request: Request,
    session: &Session,
    cookies: &Cookies,
) -> Result<Request, Response> {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let expected = state.public_url.origin().ascii_serialization();
        if origin.as_bytes() != expected.as_bytes() {
            tracing::warn!(origin = ?origin, "form posted from another origin");
            return Err(AppError::CsrfRejected.into_response());
        }
    }

    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return Err(AppError::PayloadTooLarge.into_response());
    };
    let expected = expected_token(session, cookies)
        .await
        .map_err(IntoResponse::into_response)?;
    let submitted = submitted_token(&bytes).unwrap_or_default();
    if !tokens_match(&expected, &submitted) {
        tracing::warn!(path = %parts.uri.path(), "form without a valid CSRF token");
        return Err(AppError::CsrfRejected.into_response());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Tells a signed-in browser to drop its CSRF cookie, whichever way it
/// signed in: a form or an IdP. The cookie's token is no longer accepted,
/// and after sign-out the browser gets a new one.
async fn drop_cookie_after_sign_in(session: &Session, cookies: &Cookies, secure: bool) {
    if cookies.get(COOKIE_NAME).is_none() {
        return;
    }
    match SignedIn::load(session).await {
        Ok(Some(_)) => cookies.remove(token_cookie(String::new(), secure)),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "reading the session failed, so the CSRF cookie was kept")
        }
    }
}

/// Returns the CSRF cookie with `token` as its value.
fn token_cookie(token: String, secure: bool) -> Cookie<'static> {
    Cookie::build((COOKIE_NAME, token))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("abc123", "abc123"));
        assert!(!tokens_match("abc123", "abc124"));
        assert!(!tokens_match("abc123", "abc12"));
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn submitted_token_is_read_from_form() {
        assert_eq!(
            submitted_token(b"a=1&csrf_token=x%2By&b=2").as_deref(),
            Some("x+y")
        );
        assert_eq!(submitted_token(b"a=1"), None);
        assert_eq!(submitted_token(b""), None);
    }

    fn csrf(session: &Session) -> Csrf {
        Csrf {
            session: session.clone(),
            cookies: Cookies::default(),
            secure: false,
        }
    }

    fn session() -> Session {
        let store = std::sync::Arc::new(tower_sessions::MemoryStore::default());
        Session::new(None, store, None)
    }

    async fn sign_in(session: &Session) {
        SignedIn {
            user_id: "user-1".to_owned(),
            authenticated_at: 0,
            methods: vec!["password".to_owned()],
            session_id: "session-1".to_owned(),
            sign_in_id: "sign-in-1".to_owned(),
        }
        .save(session)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn anonymous_token_lives_in_cookie() {
        let session = session();
        let csrf = csrf(&session);
        let first = csrf.token().await.unwrap();
        let second = csrf.token().await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), TOKEN_CHARS);
        assert!(
            session.is_empty().await,
            "the session stays empty and unsaved"
        );

        let cookie = csrf.cookies.get(COOKIE_NAME).expect("CSRF cookie");
        assert_eq!(cookie.value(), first);
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(
            expected_token(&session, &csrf.cookies).await.unwrap(),
            first
        );
    }

    #[tokio::test]
    async fn signed_in_token_lives_in_session() {
        let session = session();
        let csrf = csrf(&session);
        let anonymous = csrf.token().await.unwrap();
        sign_in(&session).await;

        let signed_in = csrf.token().await.unwrap();
        assert_ne!(signed_in, anonymous);
        assert_eq!(
            session.get::<String>(SESSION_KEY).await.unwrap().as_deref(),
            Some(signed_in.as_str())
        );
        assert_eq!(
            expected_token(&session, &csrf.cookies).await.unwrap(),
            signed_in
        );
    }

    #[tokio::test]
    async fn signed_in_session_ignores_cookie_token() {
        let session = session();
        let csrf = csrf(&session);
        csrf.token().await.unwrap();
        sign_in(&session).await;
        assert_eq!(expected_token(&session, &csrf.cookies).await.unwrap(), "");
    }

    #[test]
    fn malformed_cookie_token_ignored() {
        let cookies = Cookies::default();
        for value in ["short", &"!".repeat(TOKEN_CHARS)] {
            cookies.add(Cookie::new(COOKIE_NAME, value.to_owned()));
            assert_eq!(cookie_token(&cookies), None, "{value}");
        }
        let valid = new_token();
        cookies.add(Cookie::new(COOKIE_NAME, valid.clone()));
        assert_eq!(cookie_token(&cookies), Some(valid));
    }
}
