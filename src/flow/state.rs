//! The login flow's state as stored in the session.

use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::error::AppError;
use crate::state::AppState;

pub const FLOW_KEY: &str = "login.flow";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The local password (also shown for unknown identifiers).
    Password,
    SecondFactor,
    /// A CL Auth user picks the IdP or Mitel credentials.
    ChooseMethod,
    /// The separate Mitel-credentials password of a CL Auth user.
    MitelPassword,
    /// The browser was sent to the IdP (SAML or OpenID Connect) and has not
    /// come back yet.
    AwaitingIdp,
    /// The IdP asserted another user than the one typed; the user decides.
    IdentityMismatch,
    /// The user signed in with a temporary password and must choose a new one.
    ChangePassword,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginFlow {
    /// The identifier as the user typed it (trimmed), shown back on later steps.
    pub identifier: String,
    /// Key of the failure counter: the user's id, or the normalised identifier
    /// when no user matched, so unknown identifiers lock out like real ones.
    pub lockout_key: String,
    pub user_id: Option<String>,
    pub step: Step,
    /// Same-origin path to continue to after sign-in, already validated.
    pub return_to: String,
    pub started_at: i64,
    /// The AuthnRequest this browser is waiting on. The response's InResponseTo
    /// must name it.
    #[serde(default)]
    pub saml_request_id: Option<String>,
    /// The user the IdP asserted when that differs from the one typed.
    #[serde(default)]
    pub asserted_user_id: Option<String>,
    /// State, nonce and PKCE verifier of the pending OpenID Connect request.
    #[serde(default)]
    pub oidc: Option<crate::connector::oidc::PendingOidc>,
}

impl LoginFlow {
    pub async fn save(&self, session: &Session) -> Result<(), AppError> {
        Ok(session.insert(FLOW_KEY, self).await?)
    }

    pub async fn clear(session: &Session) -> Result<(), AppError> {
        session.remove::<LoginFlow>(FLOW_KEY).await?;
        Ok(())
    }

    /// Loads the flow if it is at `step` and has not expired. Otherwise
    /// returns the response that sends the browser back to the first step.
    pub async fn load_at(
        session: &Session,
        state: &AppState,
        step: Step,
    ) -> Result<Result<Self, Response>, AppError> {
        Self::load_at_any(session, state, &[step]).await
    }

    /// Like `load_at`, accepting any of `steps`.
    pub async fn load_at_any(
        session: &Session,
        state: &AppState,
        steps: &[Step],
    ) -> Result<Result<Self, Response>, AppError> {
        let Some(flow) = session.get::<LoginFlow>(FLOW_KEY).await? else {
            return Ok(Err(Redirect::to("/login").into_response()));
        };
        let max_age = i64::from(state.config.session.login_minutes) * 60;
        if state.clock.now() - flow.started_at > max_age {
            Self::clear(session).await?;
            return Ok(Err(Redirect::to("/login?expired=1").into_response()));
        }
        if !steps.contains(&flow.step) {
            return Ok(Err(Redirect::to("/login").into_response()));
        }
        Ok(Ok(flow))
    }

    /// URL of the first step that keeps this flow's `return_to`.
    pub fn restart_url(&self) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", &self.return_to)
            .finish();
        format!("/login?{query}")
    }
}
