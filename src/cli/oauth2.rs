//! `oauth2 show` and `oauth2 rotate-key`: the provider's endpoints, its
//! registered clients and its token signing keys.

use clap::Subcommand;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::db;
use crate::provider::clients::{ClientKind, ClientRegistry};
use crate::provider::keys;
use crate::provider::store::{ProviderStore, SqlProviderStore};

#[derive(Debug, Subcommand)]
pub enum OAuth2Command {
    /// Print the discovery URL, the registered clients and the signing keys.
    Show,
    /// Create a new token signing key. The previous key stays in the JWKS
    /// until the next rotation; running instances switch within a minute.
    RotateKey,
}

pub async fn run(config: &Config, command: OAuth2Command) -> anyhow::Result<()> {
    // Checks the client settings before touching the database.
    let clients = ClientRegistry::from_config(&config.oauth2)?;
    let pool = db::connect(&config.database_url, &config.database).await?;
    let store = SqlProviderStore::new(pool);
    match command {
        OAuth2Command::Show => show(config, &clients, &store).await,
        OAuth2Command::RotateKey => {
            let kid = keys::rotate(&store, SystemClock.now()).await?;
            println!("New signing key: {kid}");
            println!("The previous key stays published in the JWKS until the next rotation.");
            Ok(())
        }
    }
}

async fn show(
    config: &Config,
    clients: &ClientRegistry,
    store: &SqlProviderStore,
) -> anyhow::Result<()> {
    let issuer = config.public_url();
    println!("Issuer:     {}", issuer.as_str().trim_end_matches('/'));
    println!(
        "Discovery:  {}",
        issuer.join(".well-known/openid-configuration")?
    );
    println!();
    let mut any = false;
    for client in clients.iter() {
        any = true;
        let kind = match client.kind {
            ClientKind::Confidential => "confidential",
            ClientKind::Public => "public, PKCE required",
        };
        println!("Client {} ({}): {kind}", client.id, client.name);
        println!("  Scopes: {}", client.scopes.join(" "));
    }
    if !any {
        println!("No clients are registered: add [[oauth2.clients]] tables to the config file.");
    }
    println!();
    let stored = store.signing_keys().await?;
    if stored.is_empty() {
        println!("No signing key yet: `serve` creates one at first start.");
    }
    for key in stored {
        let status = if key.retired_at.is_some() {
            "previous, still published"
        } else {
            "signing"
        };
        println!("Key {} ({}): {status}", key.kid, key.algorithm);
    }
    Ok(())
}
