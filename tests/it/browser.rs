//! The sign-in pages in headless Chromium, driven through chromedriver with
//! JavaScript on and off.
//!
//! Each test starts its own broker, chromedriver and browser profile. When
//! `/usr/bin/chromedriver` or `/usr/bin/chromium` is missing, a test prints a
//! line to stderr and passes, except under CI, where it fails.

use fantoccini::Locator;

use crate::chromium::{Browser, JavaScript};
use crate::harness::{Broker, Options, PASSWORD, totp_now};

const WRONG_CREDENTIALS: &str =
    "The email address, login ID or password is incorrect. Check them and try again.";
const LOCKED_PREFIX: &str = "Too many failed attempts. This account is locked for";
const WRONG_CODE_PREFIX: &str = "That code is incorrect or was already used.";
const SIGNED_OUT: &str = "You have signed out.";

const EMAIL: &str = "jane.doe@example.com";
const LOGIN_ID: &str = "jdoe";
/// The name `Broker::add_user` gives every user.
const DISPLAY_NAME: &str = "Test User";

/// The broker's sign-in steps and account page, taken as a user would.
trait SignInSteps {
    /// Opens the sign-in page and submits `identifier`.
    async fn enter_identifier(&self, broker: &Broker, identifier: &str);
    async fn enter_password(&self, password: &str);
    async fn enter_code(&self, code: &str);
    async fn sign_out(&self);
    /// Opens the account page and returns the path the browser ends up on.
    async fn path_after_opening_account(&self, broker: &Broker) -> String;
    /// Records what the password step shows, to compare two visits.
    async fn password_step(&self) -> PasswordStep;
}

impl SignInSteps for Browser {
    async fn enter_identifier(&self, broker: &Broker, identifier: &str) {
        self.open(&broker.url("/login")).await;
        self.type_into("#identifier", identifier).await;
        self.click_and_wait(Locator::Css("form button[type=submit]"))
            .await;
    }

    async fn enter_password(&self, password: &str) {
        self.type_into("#password", password).await;
        self.click_and_wait(Locator::Css("form button[type=submit]"))
            .await;
    }

    async fn enter_code(&self, code: &str) {
        self.type_into("#code", code).await;
        self.click_and_wait(Locator::Css("form button[type=submit]"))
            .await;
    }

    async fn sign_out(&self) {
        self.click_and_wait(Locator::Id("logout")).await;
    }

    async fn path_after_opening_account(&self, broker: &Broker) -> String {
        self.open(&broker.url("/account")).await;
        self.path().await
    }

    async fn password_step(&self) -> PasswordStep {
        let mut fields = Vec::new();
        for input in self
            .client
            .find_all(Locator::Css("form input"))
            .await
            .expect("form fields")
        {
            let name = input
                .attr("name")
                .await
                .expect("field name")
                .unwrap_or_default();
            let kind = input
                .attr("type")
                .await
                .expect("field type")
                .unwrap_or_default();
            let read_only = input
                .attr("readonly")
                .await
                .expect("field readonly")
                .is_some();
            fields.push(format!(
                "{name}:{kind}{}",
                if read_only { ":readonly" } else { "" }
            ));
        }
        PasswordStep {
            path: self.path().await,
            title: self.client.title().await.expect("page title"),
            heading: self.text("h1").await,
            fields,
            button: self.text("form button[type=submit]").await,
            links: self.links().await,
            error: self.optional_text("p.error").await,
        }
    }
}

/// What a user sees on the password step, apart from the identifier itself.
#[derive(Debug)]
struct PasswordStep {
    path: String,
    title: String,
    heading: String,
    /// Each form field as `name:type`, with `:readonly` when it is read-only.
    fields: Vec<String>,
    button: String,
    links: Vec<String>,
    error: Option<String>,
}

/// Signs in with password and TOTP code, checks the account page, signs out
/// and checks that the account page is no longer reachable.
async fn check_sign_in_and_out(browser: &Browser, broker: &Broker, identifier: &str, secret: &str) {
    browser.enter_identifier(broker, identifier).await;
    assert_eq!(
        browser.path().await,
        "/login/password",
        "identifier step should lead to the password step: {}",
        browser.describe().await
    );
    assert_eq!(
        browser.value("#username").await,
        identifier,
        "password step should show who is signing in"
    );

    browser.enter_password(PASSWORD).await;
    assert_eq!(
        browser.path().await,
        "/login/otp",
        "right password should lead to the code step: {}",
        browser.describe().await
    );

    browser.enter_code(&totp_now(secret)).await;
    assert_eq!(
        browser.path().await,
        "/account",
        "right code should sign in: {}",
        browser.describe().await
    );
    assert_eq!(
        browser.text("#display-name").await,
        DISPLAY_NAME,
        "account page name"
    );
    assert_eq!(browser.text("#email").await, EMAIL, "account page email");
    assert_eq!(
        browser.text("#login-id").await,
        LOGIN_ID,
        "account page login ID"
    );
    assert_eq!(
        browser.text("#method").await,
        "password + totp",
        "account page sign-in method"
    );
    assert!(
        browser.text("#totp-status").await.starts_with("On"),
        "account page should show two-step verification on"
    );

    browser.sign_out().await;
    let url = browser.current_url().await;
    assert_eq!(
        url.path(),
        "/login",
        "sign-out should land on the sign-in page: {url}"
    );
    assert_eq!(
        url.query(),
        Some("signed_out=1"),
        "sign-out should mark the sign-in page: {url}"
    );
    assert_eq!(
        browser.text("p.notice").await,
        SIGNED_OUT,
        "sign-in page should confirm the sign-out"
    );
    assert!(
        browser.is_present("#identifier").await,
        "sign-in page after sign-out should ask for the identifier"
    );

    assert_eq!(
        browser.path_after_opening_account(broker).await,
        "/login",
        "account page after sign-out should redirect to sign-in: {}",
        browser.describe().await
    );
    assert_eq!(
        browser.text("h1").await,
        "Sign in",
        "redirect after sign-out should show the sign-in page"
    );
}

#[tokio::test]
async fn sign_in_with_totp_then_out() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let broker = Broker::start();
    broker.add_user(LOGIN_ID, EMAIL);
    let (secret, _) = broker.enroll_totp(LOGIN_ID);

    assert!(
        browser.scripts_run().await,
        "a browser launched with JavaScript on should run scripts"
    );
    check_sign_in_and_out(&browser, &broker, EMAIL, &secret).await;
    browser.close().await;
}

#[tokio::test]
async fn sign_in_without_javascript() {
    let Some(browser) = Browser::launch(JavaScript::Disabled).await else {
        return;
    };
    let broker = Broker::start();
    broker.add_user(LOGIN_ID, EMAIL);
    let (secret, _) = broker.enroll_totp(LOGIN_ID);

    assert!(
        !browser.scripts_run().await,
        "a browser launched with JavaScript off should not run scripts"
    );
    check_sign_in_and_out(&browser, &broker, LOGIN_ID, &secret).await;
    browser.close().await;
}

#[tokio::test]
async fn wrong_password_shows_error() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let broker = Broker::start();
    broker.add_user(LOGIN_ID, EMAIL);

    browser.enter_identifier(&broker, EMAIL).await;
    browser.enter_password("not-the-password").await;

    assert_eq!(
        browser.path().await,
        "/login/password",
        "wrong password should stay on the password step: {}",
        browser.describe().await
    );
    assert_eq!(
        browser.text("p.error").await,
        WRONG_CREDENTIALS,
        "wrong password message"
    );
    assert_eq!(
        browser.value("#username").await,
        EMAIL,
        "password step should still show who is signing in"
    );
    assert_eq!(
        browser.value("#password").await,
        "",
        "password field should be empty after a failed attempt"
    );
    assert_eq!(
        browser.path_after_opening_account(&broker).await,
        "/login",
        "account page should redirect to sign-in after a wrong password"
    );
    browser.close().await;
}

#[tokio::test]
async fn unknown_user_looks_like_wrong_password() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let broker = Broker::start();
    broker.add_user(LOGIN_ID, EMAIL);
    let unknown = "nobody@example.com";

    browser.enter_identifier(&broker, EMAIL).await;
    let known_before = browser.password_step().await;
    browser.enter_password("not-the-password").await;
    let known_after = browser.password_step().await;

    browser.enter_identifier(&broker, unknown).await;
    let unknown_before = browser.password_step().await;
    assert_eq!(
        browser.value("#username").await,
        unknown,
        "password step should show the unknown identifier as typed"
    );
    browser.enter_password("not-the-password").await;
    let unknown_after = browser.password_step().await;

    assert_eq!(
        unknown_before.path, known_before.path,
        "unknown user should reach the same step"
    );
    assert_eq!(
        unknown_before.title, known_before.title,
        "password step title should not depend on the user"
    );
    assert_eq!(
        unknown_before.heading, known_before.heading,
        "password step heading should not depend on the user"
    );
    assert_eq!(
        unknown_before.fields, known_before.fields,
        "password step fields should not depend on the user"
    );
    assert_eq!(
        unknown_before.button, known_before.button,
        "password step button should not depend on the user"
    );
    assert_eq!(
        unknown_before.links, known_before.links,
        "password step links should not depend on the user"
    );
    assert_eq!(
        known_before.error, None,
        "password step should show no error before a password is entered"
    );
    assert_eq!(
        unknown_before.error, None,
        "unknown user's password step should show no error before a password is entered"
    );

    assert_eq!(
        known_after.path, "/login/password",
        "wrong password should stay on the password step"
    );
    assert_eq!(
        unknown_after.path, known_after.path,
        "unknown user's failure should stay on the same step"
    );
    assert_eq!(
        unknown_after.title, known_after.title,
        "failure page title should not depend on the user"
    );
    assert_eq!(
        unknown_after.heading, known_after.heading,
        "failure page heading should not depend on the user"
    );
    assert_eq!(
        unknown_after.fields, known_after.fields,
        "failure page fields should not depend on the user"
    );
    assert_eq!(
        unknown_after.links, known_after.links,
        "failure page links should not depend on the user"
    );
    assert_eq!(
        known_after.error.as_deref(),
        Some(WRONG_CREDENTIALS),
        "wrong password message"
    );
    assert_eq!(
        unknown_after.error, known_after.error,
        "unknown user message should equal the wrong-password message"
    );
    browser.close().await;
}

#[tokio::test]
async fn lockout_rejects_right_password() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let broker = Broker::start_with(Options {
        lockout_threshold: 3,
        ..Options::default()
    });
    broker.add_user(LOGIN_ID, EMAIL);

    browser.enter_identifier(&broker, EMAIL).await;
    for attempt in 1..=2 {
        browser.enter_password("not-the-password").await;
        assert_eq!(
            browser.text("p.error").await,
            WRONG_CREDENTIALS,
            "wrong password {attempt} of 2 below the threshold"
        );
    }
    browser.enter_password("not-the-password").await;
    let third = browser.text("p.error").await;
    assert!(
        third.starts_with(LOCKED_PREFIX),
        "third wrong password should lock the account, got {third:?}"
    );

    browser.enter_password(PASSWORD).await;
    assert_eq!(
        browser.path().await,
        "/login/password",
        "locked account should stay on the password step: {}",
        browser.describe().await
    );
    let locked = browser.text("p.error").await;
    assert!(
        locked.starts_with(LOCKED_PREFIX),
        "right password on a locked account should show the lock message, got {locked:?}"
    );
    assert_eq!(
        browser.path_after_opening_account(&broker).await,
        "/login",
        "account page should redirect to sign-in while the account is locked"
    );
    browser.close().await;
}

#[tokio::test]
async fn totp_code_rejected_on_reuse() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let broker = Broker::start();
    broker.add_user(LOGIN_ID, EMAIL);
    let (secret, _) = broker.enroll_totp(LOGIN_ID);
    // The same code is typed twice. The server accepts codes from one 30 s
    // step either side of the current one, so while both sign-ins finish
    // within 30 s only the earlier use can reject the second.
    let code = totp_now(&secret);

    browser.enter_identifier(&broker, EMAIL).await;
    browser.enter_password(PASSWORD).await;
    browser.enter_code(&code).await;
    assert_eq!(
        browser.path().await,
        "/account",
        "first use of the code should sign in: {}",
        browser.describe().await
    );
    browser.sign_out().await;

    browser.enter_identifier(&broker, EMAIL).await;
    browser.enter_password(PASSWORD).await;
    assert_eq!(
        browser.path().await,
        "/login/otp",
        "second sign-in should reach the code step: {}",
        browser.describe().await
    );
    browser.enter_code(&code).await;
    assert_eq!(
        browser.path().await,
        "/login/otp",
        "reused code should stay on the code step: {}",
        browser.describe().await
    );
    let error = browser.text("p.error").await;
    assert!(
        error.starts_with(WRONG_CODE_PREFIX),
        "reused code should show the wrong-code message, got {error:?}"
    );
    assert_eq!(
        browser.path_after_opening_account(&broker).await,
        "/login",
        "account page should redirect to sign-in after a reused code"
    );
    browser.close().await;
}

#[tokio::test]
async fn totp_enrolment_and_recovery_code() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let broker = Broker::start();
    broker.add_user(LOGIN_ID, EMAIL);

    browser.enter_identifier(&broker, EMAIL).await;
    browser.enter_password(PASSWORD).await;
    assert_eq!(
        browser.path().await,
        "/account",
        "password alone should sign in without TOTP: {}",
        browser.describe().await
    );
    assert_eq!(
        browser.text("#method").await,
        "password",
        "sign-in method before enrolment"
    );
    assert_eq!(
        browser.text("#totp-status").await,
        "Off",
        "two-step verification before enrolment"
    );

    browser
        .click_and_wait(Locator::LinkText("Set up two-step verification"))
        .await;
    assert_eq!(
        browser.path().await,
        "/account/totp",
        "set-up link should open the enrolment page: {}",
        browser.describe().await
    );
    let qr_source = browser
        .wait_for_element("img.qr")
        .await
        .attr("src")
        .await
        .expect("QR image source")
        .unwrap_or_default();
    assert!(
        qr_source.starts_with("data:image/svg+xml;base64,"),
        "enrolment page should show an SVG QR code, got {qr_source:.40}"
    );
    let secret = browser.text("#totp-secret").await;
    assert!(
        !secret.is_empty(),
        "enrolment page should show the secret for manual entry"
    );

    browser.enter_code(&totp_now(&secret)).await;
    assert!(
        browser.is_present("#recovery-codes").await,
        "confirming the code should show recovery codes: {}",
        browser.describe().await
    );
    let mut codes = Vec::new();
    for item in browser
        .client
        .find_all(Locator::Css("#recovery-codes li"))
        .await
        .expect("recovery code items")
    {
        codes.push(item.text().await.expect("recovery code text"));
    }
    assert_eq!(
        codes.len(),
        10,
        "enrolment should issue 10 recovery codes: {codes:?}"
    );
    assert!(
        codes.iter().all(|code| !code.trim().is_empty()),
        "no recovery code should be empty: {codes:?}"
    );
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        codes.len(),
        "recovery codes should be distinct: {codes:?}"
    );

    browser.click_and_wait(Locator::LinkText("Continue")).await;
    assert_eq!(
        browser.path().await,
        "/account",
        "Continue should return to the account page"
    );
    assert_eq!(
        browser.text("#totp-status").await,
        "On (10 recovery codes left)",
        "two-step verification after enrolment"
    );
    browser.sign_out().await;

    let recovery_code = codes[0].trim();
    browser.enter_identifier(&broker, EMAIL).await;
    browser.enter_password(PASSWORD).await;
    assert_eq!(
        browser.path().await,
        "/login/otp",
        "after enrolment the password should lead to the code step: {}",
        browser.describe().await
    );
    browser.enter_code(recovery_code).await;
    assert_eq!(
        browser.path().await,
        "/account",
        "unused recovery code should sign in: {}",
        browser.describe().await
    );
    assert_eq!(
        browser.text("#method").await,
        "password + recovery_code",
        "sign-in method with a recovery code"
    );
    assert_eq!(
        browser.text("#totp-status").await,
        "On (9 recovery codes left)",
        "a used recovery code should be counted"
    );
    browser.sign_out().await;

    browser.enter_identifier(&broker, EMAIL).await;
    browser.enter_password(PASSWORD).await;
    browser.enter_code(recovery_code).await;
    assert_eq!(
        browser.path().await,
        "/login/otp",
        "used recovery code should stay on the code step: {}",
        browser.describe().await
    );
    let error = browser.text("p.error").await;
    assert!(
        error.starts_with(WRONG_CODE_PREFIX),
        "used recovery code should show the wrong-code message, got {error:?}"
    );
    browser.close().await;
}
