//! `oidc show`: the redirect URI to register at the IdP and the settings in force.

use clap::Subcommand;

use crate::config::Config;
use crate::connector::oidc::OidcConnector;

#[derive(Debug, Subcommand)]
pub enum OidcCommand {
    /// Print the redirect URI to register at the IdP and the `[oidc]` settings.
    Show,
}

pub fn run(config: &Config, command: OidcCommand) -> anyhow::Result<()> {
    match command {
        OidcCommand::Show => show(config),
    }
}

fn show(config: &Config) -> anyhow::Result<()> {
    let redirect_uri = config.public_url().join("oidc/callback")?;
    println!("Register this redirect URI at the identity provider:");
    println!("  {redirect_uri}");
    println!();
    let Some(settings) = &config.oidc else {
        println!("No OpenID Connect IdP is configured: add an [oidc] table to the config file.");
        return Ok(());
    };
    // Building the connector reads the client secret, so a missing secret file shows here.
    OidcConnector::new(settings.clone(), &config.public_url())?;
    println!("OpenID Connect settings (from the config file):");
    println!("  Name:            {}", settings.name);
    println!("  Issuer:          {}", settings.issuer);
    println!("  Client ID:       {}", settings.client_id);
    println!("  Client secret:   set (not shown)");
    println!("  Scopes:          {}", settings.scopes.join(" "));
    println!("  Identity claim:  {}", settings.identity_claim);
    println!(
        "  Mitel credentials: {}",
        if settings.mitel_credentials {
            "enabled"
        } else {
            "disabled"
        }
    );
    Ok(())
}
