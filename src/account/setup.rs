//! The link in a CloudLink account-setup email: sets the user's
//! Mitel-credentials password. Each link works once and expires.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::credentials::password::check_strength;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::extract::{AppForm, AppQuery};
use crate::web::pages::{ErrorPage, MessagePage, NewPasswordPage, render};

const PATH: &str = "/account/setup";
const LINK_UNUSABLE: &str = "This link has expired or was already used. Ask your administrator to send a new account-setup email.";

#[derive(Deserialize)]
pub struct SetupQuery {
    token: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    csrf: Csrf,
    AppQuery(query): AppQuery<SetupQuery>,
) -> Result<Response, AppError> {
    let token = query.token.unwrap_or_default();
    if token.is_empty() || !state.admin.setup_link_valid(&token).await? {
        return unusable();
    }
    page(&csrf, &token, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct SetupForm {
    token: String,
    new_password: SecretString,
    new_password_confirmation: SecretString,
}

pub async fn submit(
    State(state): State<AppState>,
    csrf: Csrf,
    AppForm(form): AppForm<SetupForm>,
) -> Result<Response, AppError> {
    if !state.admin.setup_link_valid(&form.token).await? {
        return unusable();
    }
    let password = form.new_password.expose_secret();
    if password != form.new_password_confirmation.expose_secret() {
        return page(
            &csrf,
            &form.token,
            StatusCode::BAD_REQUEST,
            Some("The two passwords differ. Enter the same new password twice."),
        )
        .await;
    }
    if let Err(error) = check_strength(password, &[]) {
        let message = format!("The new password cannot be used: {error}.");
        return page(&csrf, &form.token, StatusCode::BAD_REQUEST, Some(&message)).await;
    }
    // Spending the link and setting the password happen in one transaction,
    // so a link raced by two posts sets one password.
    let Some(login_id) = state
        .admin
        .complete_setup(&form.token, form.new_password)
        .await?
    else {
        return unusable();
    };
    tracing::info!(login_id = %login_id, "Mitel-credentials password set from an account-setup link");
    render(
        StatusCode::OK,
        &MessagePage {
            title: "Password set",
            message: "Your Mitel-credentials password is set. You can now sign in with it.",
        },
    )
}

async fn page(
    csrf: &Csrf,
    token: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, AppError> {
    let page = NewPasswordPage {
        csrf_token: &csrf.token().await?,
        heading: "Set your Mitel-credentials password",
        explanation: "Choose the password you will use when you sign in with Mitel credentials instead of your company's identity provider.",
        action: PATH,
        token: Some(token),
        error,
    };
    render(status, &page)
}

fn unusable() -> Result<Response, AppError> {
    render(
        StatusCode::GONE,
        &ErrorPage {
            title: "Link no longer valid",
            message: LINK_UNUSABLE,
        },
    )
}
