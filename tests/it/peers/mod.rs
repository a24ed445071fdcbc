//! Third-party identity software that integration tests run on loopback as
//! peers of the broker.

pub mod oidc_provider;
pub mod pysaml2;
pub mod simplesamlphp;
