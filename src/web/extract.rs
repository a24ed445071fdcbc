//! Request extractors shared by the web handlers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use crate::directory::User;
use crate::error::AppError;
use crate::session::SignedIn;
use crate::state::AppState;
use crate::web::client_address::ClientAddress;

/// The signed-in user of this browser. Without one, the request is sent to
/// the sign-in page, which brings the browser back here afterwards.
pub struct CurrentUser {
    pub user: User,
    pub signed_in: SignedIn,
    pub session: Session,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let signed_in = SignedIn::load(&session)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(signed_in) = signed_in else {
            return Err(redirect_to_login(parts));
        };
        let user = state
            .users
            .find_by_id(&signed_in.user_id)
            .await
            .map_err(|error| AppError::from(error).into_response())?;
        match user {
            Some(user) if user.active => Ok(Self {
                user,
                signed_in,
                session,
            }),
            // The account was removed or disabled since sign-in.
            _ => {
                session
                    .flush()
                    .await
                    .map_err(|error| AppError::from(error).into_response())?;
                Err(redirect_to_login(parts))
            }
        }
    }
}

fn redirect_to_login(parts: &Parts) -> Response {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |value| value.as_str());
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", path)
        .finish();
    Redirect::to(&format!("/login?{query}")).into_response()
}

/// The client's IP address from [`ClientAddress`], which the rate limit uses
/// too. `None` when the listener records no TCP peer (`serve` does,
/// in-process tests may not).
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let address = parts
            .extensions
            .get::<ClientAddress>()
            .map(|ClientAddress(ip)| ip.to_string());
        Ok(Self(address))
    }
}

/// `axum::Form` whose rejection is the broker's own error page instead of
/// the framework's plain-text message.
pub struct AppForm<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for AppForm<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AppError::PayloadTooLarge)
            }
            Err(rejection) => {
                tracing::info!(%rejection, "malformed form rejected");
                Err(AppError::MalformedRequest)
            }
        }
    }
}

/// `axum::extract::Query` with the broker's own error page as rejection.
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                tracing::info!(%rejection, "malformed query rejected");
                Err(AppError::MalformedRequest)
            }
        }
    }
}
