//! Command line: `serve` and the administrator's commands.
//!
//! Every command fails with one line on standard error and a non-zero exit
//! status, and changes nothing when it fails.

mod admin;
mod cl_auth;
mod db;
mod ldap;
mod oauth2;
mod oidc;
mod saml;
mod scim;
mod user;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::db::Engine;

#[derive(Debug, Parser)]
#[command(name = "unified-login", version, about = "Email-first login broker")]
pub struct Cli {
    /// TOML configuration file; settings not in it take their defaults or
    /// UNIFIED_LOGIN_* environment variables.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the login service (embedded SQLite under data/ unless configured).
    Serve,
    /// Manage users in the directory.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Choose which users sign in through CloudLink authentication.
    ClAuth {
        #[command(subcommand)]
        command: cl_auth::ClAuthCommand,
    },
    /// Show the OpenID Connect redirect URI and settings.
    Oidc {
        #[command(subcommand)]
        command: oidc::OidcCommand,
    },
    /// Manage bearer tokens for the admin API.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Print reports as CSV.
    Report {
        #[command(subcommand)]
        command: admin::ReportCommand,
    },
    /// Show the OAuth 2.0 provider's clients and rotate its signing key.
    #[command(name = "oauth2")]
    OAuth2 {
        #[command(subcommand)]
        command: oauth2::OAuth2Command,
    },
    /// Show the SAML service provider's values and manage the IdP settings.
    Saml {
        #[command(subcommand)]
        command: saml::SamlCommand,
    },
    /// SCIM provisioning: the Secret Token, the switches and the detained queue.
    Scim {
        #[command(subcommand)]
        command: scim::ScimCommand,
    },
    /// Show the database schema version and apply migrations.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Test the on-premises LDAP directory that checks passwords.
    Ldap {
        #[command(subcommand)]
        command: ldap::LdapCommand,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let uses_database = !matches!(
        cli.command,
        Command::Serve | Command::Oidc { .. } | Command::Ldap { .. }
    );
    let missing_database = if uses_database {
        missing_sqlite_file(&config.database_url)
    } else {
        None
    };
    run_command(cli.command, config).await?;
    if let Some(path) = missing_database
        && path.exists()
    {
        // A relative SQLite path resolves against the current folder, so a
        // command run from another folder would otherwise work on a new,
        // empty database without a word. The note comes only after success
        // because a failed command prints exactly one line.
        eprintln!(
            "note: created a new, empty database at {}; run commands from the service's folder, \
             or with its --config, to use its database",
            path.display()
        );
    }
    Ok(())
}

/// Returns the absolute path of the SQLite file that `url` names when that
/// file does not exist yet.
fn missing_sqlite_file(url: &str) -> Option<PathBuf> {
    if Engine::from_url(url).ok()? != Engine::Sqlite {
        return None;
    }
    let path = crate::db::sqlite_file(url).ok()??;
    if path.as_os_str().is_empty() || path.exists() {
        return None;
    }
    Some(std::path::absolute(&path).unwrap_or(path))
}

async fn run_command(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            crate::telemetry::init(&config.log);
            crate::server::run(config).await
        }
        Command::User { command } => user::run(&config, command).await,
        Command::ClAuth { command } => cl_auth::run(&config, command).await,
        Command::Admin { command } => admin::run(&config, command).await,
        Command::Report { command } => admin::report(&config, command).await,
        Command::Saml { command } => saml::run(&config, command).await,
        Command::Oidc { command } => oidc::run(&config, command),
        Command::OAuth2 { command } => oauth2::run(&config, command).await,
        Command::Scim { command } => scim::run(&config, command).await,
        Command::Ldap { command } => ldap::run(&config, command).await,
        Command::Db { command } => db::run(&config, command).await,
    }
}
