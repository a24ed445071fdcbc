//! `unified-login`: an email-first login broker for unified-communications
//! servers.
//!
//! A user types an email address or login ID; the broker decides how that
//! user signs in (a local password and one-time code, or the company's
//! identity provider) and then issues the session the client needs.

pub mod account;
pub mod admin;
pub mod alarms;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connector;
pub mod credentials;
pub mod db;
pub mod directory;
pub mod email;
pub mod error;
pub mod flow;
pub mod provider;
pub mod scim;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod web;
