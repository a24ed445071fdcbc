//! CL Auth sign-in through an OpenID Connect provider in headless Chromium,
//! driven through chromedriver: the broker's first page, the login form of
//! the npm `oidc-provider` peer, and the broker's account, error and
//! "different account" pages.
//!
//! Each test starts its own broker, provider, chromedriver and browser
//! profile. When `/usr/bin/chromedriver` or `/usr/bin/chromium` is missing, a
//! test prints a line to stderr and passes, except under CI, where it fails.
//! A missing Node.js or oidc-provider package is handled the same way by
//! `OidcProvider::start`.

use fantoccini::Locator;

use crate::chromium::{Browser, JavaScript};
use crate::harness::Broker;
use crate::oidc_flow::{OidcSetup, setup_with_users};
use crate::peers::oidc_provider::{
    EMAIL_FIELD, JANE, Mode, OMAR, OidcProvider, OidcUser, PASSWORD_FIELD,
};

/// The `name` of the broker's `[oidc]` table (set by `setup_with_users`),
/// which its pages show.
const PROVIDER_NAME: &str = "Contoso";
/// The name `Broker::add_user` gives every user.
const DISPLAY_NAME: &str = "Test User";

/// Opens the broker's sign-in page, submits `identifier` and waits until the
/// browser leaves the page.
async fn enter_identifier(browser: &Browser, broker: &Broker, identifier: &str) {
    browser.open(&broker.url("/login")).await;
    browser.type_into("#identifier", identifier).await;
    browser
        .click_and_wait(Locator::Css("form button[type=submit]"))
        .await;
}

/// Waits for the provider's login form and checks that the browser shows it
/// at the provider's origin.
async fn wait_for_provider_form(browser: &Browser, provider: &OidcProvider) {
    browser.wait_for_element(&format!("#{EMAIL_FIELD}")).await;
    let url = browser.current_url().await;
    assert_eq!(
        url.origin().ascii_serialization(),
        provider.issuer,
        "the login form comes from the provider"
    );
    assert!(
        url.path().starts_with("/interaction/"),
        "the provider shows its login form at an interaction URL, not at {url}"
    );
}

/// Types `user`'s email and password into the provider's login form and
/// submits it.
async fn sign_in_at_provider(browser: &Browser, user: &OidcUser) {
    browser
        .type_into(&format!("#{EMAIL_FIELD}"), user.email)
        .await;
    browser
        .type_into(&format!("#{PASSWORD_FIELD}"), user.password)
        .await;
    browser.click_and_wait(Locator::Id("sign-in")).await;
}

/// Waits for the broker's account page and checks that it shows `email`
/// signed in through OpenID Connect.
async fn assert_signed_in_with_oidc(browser: &Browser, broker: &Broker, email: &str) {
    browser.wait_for_page(&broker.url("/account")).await;
    assert_eq!(browser.text("#email").await, email, "account page email");
    assert_eq!(
        browser.text("#login-id").await,
        email,
        "the first single sign-on makes the email the login ID"
    );
    assert_eq!(browser.text("#method").await, "oidc", "sign-in method");
    assert_eq!(
        browser.text("#display-name").await,
        DISPLAY_NAME,
        "the name comes from the broker's directory"
    );
}

/// Signs jane in from the broker's first page to its account page, in a
/// browser with `javascript` on or off.
async fn sign_in_as_jane(javascript: JavaScript) {
    let Some(browser) = Browser::launch(javascript).await else {
        return;
    };
    let Some(OidcSetup { broker, provider }) = setup_with_users(&[("jane", JANE.email)]) else {
        return;
    };
    assert_eq!(
        browser.scripts_run().await,
        javascript == JavaScript::Enabled,
        "whether the browser runs scripts"
    );

    enter_identifier(&browser, &broker, JANE.email).await;
    wait_for_provider_form(&browser, &provider).await;
    assert_eq!(
        browser.value(&format!("#{EMAIL_FIELD}")).await,
        JANE.email,
        "the provider's email field shows the typed email"
    );
    assert_eq!(
        provider.login_hints(),
        vec![JANE.email.to_owned()],
        "login hints the provider received"
    );

    browser
        .type_into(&format!("#{PASSWORD_FIELD}"), JANE.password)
        .await;
    browser.click_and_wait(Locator::Id("sign-in")).await;

    assert_signed_in_with_oidc(&browser, &broker, JANE.email).await;
    browser.close().await;
}

#[tokio::test]
async fn oidc_sign_in_in_chromium() {
    sign_in_as_jane(JavaScript::Enabled).await;
}

#[tokio::test]
async fn oidc_sign_in_without_javascript() {
    sign_in_as_jane(JavaScript::Disabled).await;
}

#[tokio::test]
async fn oidc_denial_shows_clear_page() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(OidcSetup { broker, provider }) = setup_with_users(&[("jane", JANE.email)]) else {
        return;
    };
    provider.set_mode(Mode::AccessDenied).await;

    // The provider skips its login form and sends the browser straight back
    // to the broker's callback with error=access_denied.
    enter_identifier(&browser, &broker, JANE.email).await;
    browser.wait_for_page(&broker.url("/oidc/callback")).await;
    assert_eq!(
        provider.login_hints(),
        vec![JANE.email.to_owned()],
        "login hints the provider received"
    );
    assert_eq!(
        browser.text("h1").await,
        "Sign-in failed",
        "error page heading"
    );
    let message = browser.text(".message").await;
    assert!(
        message.contains("access denied"),
        "the error message says access was denied: {message:?}"
    );
    assert!(
        message.contains(PROVIDER_NAME),
        "the error message names the provider: {message:?}"
    );

    browser
        .click_and_wait(Locator::LinkText("Go to the sign-in page"))
        .await;
    assert_eq!(
        browser.path().await,
        "/login",
        "the error page's link leads to the sign-in page"
    );
    assert!(
        browser.is_present("#identifier").await,
        "the sign-in page asks for the identifier"
    );

    browser.open(&broker.url("/account")).await;
    assert_eq!(
        browser.path().await,
        "/login",
        "a denied sign-in leaves no session, so /account redirects to /login"
    );
    browser.close().await;
}

#[tokio::test]
async fn different_account_asks_user() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some(OidcSetup { broker, provider }) =
        setup_with_users(&[("jane", JANE.email), ("omar", OMAR.email)])
    else {
        return;
    };

    enter_identifier(&browser, &broker, OMAR.email).await;
    wait_for_provider_form(&browser, &provider).await;
    assert_eq!(
        browser.value(&format!("#{EMAIL_FIELD}")).await,
        OMAR.email,
        "the provider's email field shows the typed email"
    );
    assert_eq!(
        provider.login_hints(),
        vec![OMAR.email.to_owned()],
        "login hints the provider received"
    );

    sign_in_at_provider(&browser, &JANE).await;

    browser.wait_for_page(&broker.url("/oidc/callback")).await;
    assert_eq!(
        browser.text("h1").await,
        "Different account",
        "mismatch page heading"
    );
    assert_eq!(
        browser.text("#typed").await,
        OMAR.email,
        "the mismatch page shows the typed email"
    );
    assert_eq!(
        browser.text("#asserted").await,
        JANE.email,
        "the mismatch page shows the email the provider signed in"
    );

    browser
        .click_and_wait(Locator::Id("continue-as-asserted"))
        .await;
    assert_signed_in_with_oidc(&browser, &broker, JANE.email).await;
    browser.close().await;
}
