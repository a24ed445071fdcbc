//! `ldap test`: one user's sign-in against the `[ldap]` directory, step by
//! step, for setting up the connection.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};
use clap::Subcommand;
use secrecy::SecretString;

use super::user::{UserContext, find};
use crate::config::Config;
use crate::connector::ldap::LdapConnector;

#[derive(Debug, Subcommand)]
pub enum LdapCommand {
    /// Sign a user in at the directory and print the first step that fails:
    /// connect, TLS, service bind, search or user bind. The password is read
    /// from standard input when it is not a terminal, or else prompted for.
    Test {
        /// The user's login ID or email address in the broker.
        user: String,
    },
}

pub async fn run(config: &Config, command: LdapCommand) -> anyhow::Result<()> {
    let LdapCommand::Test { user } = command;
    let Some(settings) = &config.ldap else {
        bail!("no LDAP directory is configured: add an [ldap] table to the config file");
    };
    let connector = LdapConnector::new(settings.clone())?;
    let context = UserContext::open(config).await?;
    let user = find(&context, &user).await?;
    let password = read_password()?;

    let value = connector.search_value(&user);
    match connector.check(value, &password).await {
        Ok(dn) => {
            println!(
                "LDAP sign-in works for {}: the search {} found {dn}, and the directory accepted the password",
                user.login_id,
                connector.search_filter(value)
            );
            Ok(())
        }
        Err(failure) => bail!("LDAP test failed at the {} step: {failure}", failure.step()),
    }
}

/// Reads the password from the first line of standard input when it is not
/// a terminal, or else prompts for it once without echo.
fn read_password() -> anyhow::Result<SecretString> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("LDAP password: ").context("cannot read the password")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Ok(SecretString::from(password))
}
