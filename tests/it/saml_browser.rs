//! CL Auth sign-in through a SAML IdP in headless Chromium, driven through
//! chromedriver: the broker's first page, the IdP's login form, the IdP's
//! HTTP-POST form and the broker's account page.
//!
//! Each test starts its own broker, IdP, chromedriver and browser profile.
//! When `/usr/bin/chromedriver` or `/usr/bin/chromium` is missing, a test
//! prints a line to stderr and passes, except under CI, where it fails. A
//! missing IdP peer is handled the same way by the peer's `start`.

use crate::chromium::{Browser, JavaScript};
use crate::harness::{Broker, Options};
use crate::peers::pysaml2;
use crate::peers::simplesamlphp::{self, Signing};
use crate::saml_flow::{SamlSetup, setup, setup_simplesamlphp};

const EMAIL: &str = "jane@example.com";

/// The broker's first page and account page around a SAML sign-in.
trait SamlSignInSteps {
    /// Opens the broker's sign-in page and submits `identifier`.
    async fn enter_identifier(&self, broker: &Broker, identifier: &str);

    /// Checks that the account page shows `email` signed in through SAML.
    async fn assert_signed_in_with_saml(&self, broker: &Broker, email: &str);
}

impl SamlSignInSteps for Browser {
    async fn enter_identifier(&self, broker: &Broker, identifier: &str) {
        self.open(&broker.url("/login")).await;
        self.type_into("#identifier", identifier).await;
        self.click("form button[type=submit]").await;
    }

    async fn assert_signed_in_with_saml(&self, broker: &Broker, email: &str) {
        self.wait_for_page(&broker.url("/account")).await;
        assert_eq!(self.text("#email").await, email, "account page email");
        assert_eq!(
            self.text("#login-id").await,
            email,
            "the first single sign-on makes the email the login ID"
        );
        assert_eq!(self.text("#method").await, "saml", "sign-in method");
    }
}

#[tokio::test]
async fn simplesamlphp_sign_in_with_javascript() {
    let Some(browser) = Browser::launch(JavaScript::Enabled).await else {
        return;
    };
    let Some((broker, idp)) = setup_simplesamlphp(Signing::Response, &[]) else {
        return;
    };
    assert!(
        browser.scripts_run().await,
        "a browser launched with JavaScript on should run scripts"
    );

    browser.enter_identifier(&broker, EMAIL).await;
    browser
        .wait_for_page(&format!(
            "{}/module.php/core/loginuserpass.php",
            idp.base_url
        ))
        .await;
    assert_eq!(
        browser.value("#username").await,
        EMAIL,
        "the IdP's username field shows the typed email"
    );
    assert_eq!(
        idp.login_hints(),
        vec![EMAIL.to_owned()],
        "login hints the IdP received"
    );

    browser
        .type_into("#password", simplesamlphp::JANE.password)
        .await;
    browser.click("#submit_button").await;

    // The IdP's POST form submits itself, so the next page is the broker's.
    browser.assert_signed_in_with_saml(&broker, EMAIL).await;
    browser.close().await;
}

#[tokio::test]
async fn pysaml2_sign_in_without_javascript() {
    let Some(browser) = Browser::launch(JavaScript::Disabled).await else {
        return;
    };
    let Some(SamlSetup { broker, idp }) = setup(Options::default(), &[]) else {
        return;
    };
    assert!(
        !browser.scripts_run().await,
        "a browser launched with JavaScript off should not run scripts"
    );

    browser.enter_identifier(&broker, EMAIL).await;
    browser.wait_for_page(&idp.sso_url).await;
    assert_eq!(
        browser.value("#loginfmt").await,
        EMAIL,
        "the IdP's email field shows the typed email"
    );
    assert_eq!(
        idp.login_hints(),
        vec![EMAIL.to_owned()],
        "login hints the IdP received"
    );

    browser.type_into("#passwd", pysaml2::JANE.password).await;
    browser.click("#sign-in").await;

    let continue_button = browser
        .wait_for_element("input[type=submit][value=Continue]")
        .await;
    assert_eq!(
        browser.current_url().await.origin().ascii_serialization(),
        idp.base_url,
        "without JavaScript the IdP's POST form waits for a click"
    );
    assert!(
        continue_button.is_displayed().await.expect("visibility"),
        "the Continue button is visible"
    );
    continue_button
        .click()
        .await
        .expect("click the Continue button");

    browser.assert_signed_in_with_saml(&broker, EMAIL).await;
    browser.close().await;
}
