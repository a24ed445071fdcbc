//! The email-first login flow.
//!
//! States, kept server-side in the session under one key:
//!
//! ```text
//! (none) --identify--> Password --password ok, TOTP enrolled--> SecondFactor
//!                         |                                        |
//!                         +--password ok, no second factor--+      +--code ok--+
//!                                                           v                  v
//!                                                        signed in (session id cycled)
//! ```
//!
//! The identifier step never reveals whether a user exists: every identifier
//! goes on to the password step, and failures there read the same whether the
//! user is unknown or the password is wrong.

mod attempts;
pub mod cl_auth;
mod finish;
mod identify;
mod new_password;
mod oidc;
mod otp;
mod password;
mod saml;
mod state;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub use state::LoginFlow;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(identify::show).post(identify::submit))
        .route(
            "/login/password",
            get(password::show).post(password::submit),
        )
        .route("/login/otp", get(otp::show).post(otp::submit))
        .route(
            new_password::PATH,
            get(new_password::show).post(new_password::submit),
        )
        .route(
            "/login/choose",
            get(saml::show_choice).post(saml::submit_choice),
        )
        .route("/saml/complete", get(saml::complete))
        .route("/login/mismatch", post(cl_auth::resolve_mismatch))
        .route("/oidc/callback", get(oidc::callback))
}

/// Routes that IdPs reach without the browser's session: the ACS receives a
/// cross-site POST, and the metadata is fetched by administrators and IdPs.
pub fn idp_routes() -> Router<AppState> {
    Router::new()
        .route("/saml/acs", post(saml::acs))
        .route("/saml/metadata", get(saml::metadata))
}
