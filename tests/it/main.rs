//! The integration-test binary: runs the real `unified-login` executable on
//! free loopback ports and drives it over HTTP, from the command line and
//! through headless Chromium.

mod admin;
mod browser;
mod c14n_differential;
mod chromium;
mod cli;
mod database;
mod first_start;
mod harness;
mod http_login;
mod instances;
mod ldap;
mod oidc_browser;
mod oidc_flow;
mod outage;
mod peers;
mod provider;
mod provider_browser;
mod saml_browser;
mod saml_builder;
mod saml_dsig_attacks;
mod saml_flow;
mod saml_responses;
mod saml_signatures;
mod scim;
mod sp_key;
mod trusted_proxies;
