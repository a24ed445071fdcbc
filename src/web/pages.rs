//! Page templates, one struct per page in `templates/`.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::error::AppError;

/// Renders `page` as an HTML response with `status`.
pub fn render(status: StatusCode, page: &impl Template) -> Result<Response, AppError> {
    let html = page
        .render()
        .map_err(|error| anyhow::anyhow!("template rendering failed: {error}"))?;
    Ok((status, Html(html)).into_response())
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct IdentifyPage<'a> {
    pub csrf_token: &'a str,
    pub identifier: &'a str,
    pub return_to: &'a str,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "password.html")]
pub struct PasswordPage<'a> {
    pub csrf_token: &'a str,
    /// "Enter your password" or, for CL Auth users, the Mitel-credentials wording.
    pub heading: &'a str,
    pub identifier: &'a str,
    pub restart_url: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "otp.html")]
pub struct OtpPage<'a> {
    pub csrf_token: &'a str,
    pub restart_url: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub csrf_token: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub login_id: &'a str,
    pub method: &'a str,
    pub totp_enrolled: bool,
    pub recovery_codes_left: u32,
    pub notice: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "totp_enroll.html")]
pub struct TotpEnrollPage<'a> {
    pub csrf_token: &'a str,
    pub qr_data_url: &'a str,
    pub secret: &'a str,
    pub otpauth_uri: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage<'a> {
    pub codes: &'a [String],
}

#[derive(Template)]
#[template(path = "choose.html")]
pub struct ChoosePage<'a> {
    pub csrf_token: &'a str,
    pub identifier: &'a str,
    pub idp_name: &'a str,
    pub restart_url: &'a str,
}

#[derive(Template)]
#[template(path = "mismatch.html")]
pub struct MismatchPage<'a> {
    pub csrf_token: &'a str,
    pub typed: &'a str,
    pub asserted: &'a str,
    pub idp_name: &'a str,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage<'a> {
    pub csrf_token: &'a str,
    pub client_name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub post_logout_redirect_uri: Option<&'a str>,
    pub state: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "new_password.html")]
pub struct NewPasswordPage<'a> {
    pub csrf_token: &'a str,
    pub heading: &'a str,
    pub explanation: &'a str,
    pub action: &'a str,
    /// The one-time token of an account-setup link, sent back with the form.
    pub token: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

/// One row of the admin page's user table.
pub struct AdminUserRow {
    pub login_id: String,
    pub email: String,
    pub name: String,
    pub cl_auth_enabled: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
pub struct AdminPage<'a> {
    pub csrf_token: &'a str,
    pub users: Vec<AdminUserRow>,
    /// Alarm name and detail.
    pub alarms: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "admin_results.html")]
pub struct AdminResultsPage<'a> {
    pub heading: &'a str,
    pub error: Option<&'a str>,
    /// User and the outcome as shown.
    pub results: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
pub struct AdminAuditPage {
    /// Time, event, outcome, user and detail.
    pub events: Vec<(String, String, String, String, String)>,
}
