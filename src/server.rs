//! `serve`: builds the state, binds the listener and runs until a signal.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::Config;
use crate::connector::saml::settings::IdpSettings;
use crate::db::DbPool;
use crate::directory::SamlStore;
use crate::directory::sql::SqlDirectory;
use crate::state::AppState;
use crate::{db, session, web};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let _serving = db::lock_for_serving(&config.database_url)?;
    let pool = db::connect(&config.database_url, &config.database).await?;
    if config.ldap.is_some() {
        reject_saved_saml_idp(&pool).await?;
    }
    let (sessions, session_store) = session::layer(pool.clone(), &config);
    let state = AppState::new(config.clone(), pool).await?;
    // Counted in the database: loading a large directory here would keep
    // its memory for the life of the process.
    let user_count = state.users.count().await?;
    // Fails start-up on invalid IdP settings, such as no signing certificate.
    let saml_idp = state.saml.active_idp().await?;
    if let Some(ldap) = &config.ldap {
        tracing::info!(
            url = %ldap.url,
            base_dn = ldap.base_dn,
            user_attribute = ldap.user_attribute,
            match_on = ?ldap.match_on,
            "the LDAP directory checks the passwords of users without CL Auth"
        );
        let cl_auth_users = user_count.cl_auth;
        if cl_auth_users > 0 {
            tracing::warn!(
                cl_auth_users,
                "users with CL Auth enabled keep signing in with Mitel credentials, not the LDAP directory; \
                 `unified-login cl-auth disable` moves them to the directory"
            );
        }
    }
    if let (Some(oidc), Some(saml)) = (&state.oidc, &saml_idp) {
        anyhow::bail!(
            "both an OpenID Connect IdP ({}) and a SAML IdP ({}, from the {}) are configured: \
             CL Auth uses one identity provider, so remove one",
            oidc.settings.issuer,
            saml.settings.entity_id,
            saml.source
        );
    }
    if let Some(oidc) = &state.oidc {
        tracing::info!(issuer = %oidc.settings.issuer, redirect_uri = oidc.redirect_uri(), "OpenID Connect single sign-on is configured");
    }
    if let Some(idp) = saml_idp {
        tracing::info!(
            idp = %idp.settings.entity_id,
            source = idp.source,
            certificates = idp.certificates.len(),
            sp_entity_id = state.saml.entity_id(),
            acs_url = state.saml.acs_url(),
            "SAML single sign-on is configured"
        );
    }
    state
        .provider
        .keys
        .load(state.clock.now())
        .await
        .context("loading the token signing keys failed")?;
    if !state.trusted_proxies.is_empty() {
        tracing::info!(
            trusted_proxies = ?config.network.trusted_proxies,
            "requests from these networks take the client address from X-Forwarded-For"
        );
        let everyone = state.trusted_proxies.trusting_everyone();
        if !everyone.is_empty() {
            tracing::warn!(
                networks = ?everyone,
                "trusted_proxies contains every address, so any client can set its own address \
                 in X-Forwarded-For and escape the per-address rate limit; list only the proxies"
            );
        }
    }
    tokio::spawn(saml_housekeeping(state.clone()));
    tokio::spawn(provider_housekeeping(state.clone()));
    tokio::spawn(state.mailer.clone().run());
    crate::telemetry::init_metrics()?;
    for alarm in crate::alarms::Alarm::ALL {
        metrics::gauge!("unified_login_alarm_active", "alarm" => alarm.name()).set(0.0);
    }
    tokio::spawn(crate::alarms::watch(
        state.clone(),
        Duration::from_secs(u64::from(state.config.health.check_seconds)),
    ));

    tokio::spawn(session::delete_expired(session_store));
    let limiter = state.rate_limiter.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(60));
        loop {
            interval.tick().await;
            limiter.forget_idle().await;
        }
    });

    let app = web::app(state, sessions).into_make_service_with_connect_info::<SocketAddr>();
    let handle = Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));

    let public_url = config.public_url();
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let local_address = listener.local_addr()?;
    tracing::info!(
        listen = %local_address,
        url = %public_url.join("login").map_or_else(|_| public_url.to_string(), |url| url.to_string()),
        database = %db::redact(&config.database_url),
        "unified-login is listening; open the url to sign in"
    );
    if user_count.total == 0 {
        tracing::info!(
            "no users yet: add one with `unified-login user add --login-id jdoe --email jdoe@example.com --first-name Jane --last-name Doe`"
        );
    }

    match &config.tls {
        Some(tls) => {
            // Only the ring provider is compiled in; installing it twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls_config = RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load TLS certificate {} and key {}",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?;
            axum_server::from_tcp_rustls(listener, tls_config)
                .handle(handle)
                .serve(app)
                .await?;
        }
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(app)
                .await?
        }
    }
    tracing::info!("unified-login stopped");
    Ok(())
}

/// Fails when SAML IdP settings saved by `saml set` would be a second
/// source of authentication next to `[ldap]`. It runs before the state is
/// built, so a failed start creates no SP key and writes no log line. The
/// config check has already rejected a `[saml.idp]` table next to `[ldap]`.
async fn reject_saved_saml_idp(pool: &DbPool) -> anyhow::Result<()> {
    let Some(json) = SqlDirectory::new(pool.clone()).load_idp_settings().await? else {
        return Ok(());
    };
    let entity_id = serde_json::from_str::<IdpSettings>(&json)
        .map(|settings| settings.entity_id)
        .unwrap_or_else(|_| "unreadable settings".to_owned());
    anyhow::bail!(
        "[ldap] is set and a SAML IdP ({entity_id}) is saved in the database, but only one source of \
         authentication may be active: remove [ldap] to keep CloudLink authentication, or run \
         `unified-login saml remove` to use the on-premises directory"
    )
}

/// Re-fetches IdP metadata on schedule and drops expired SAML records.
async fn saml_housekeeping(state: AppState) {
    let minutes = u64::from(state.config.saml.metadata_refresh_minutes);
    let mut refresh = tokio::time::interval(Duration::from_secs(minutes * 60));
    let mut purge = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                if let Err(error) = state.saml.refresh_metadata(false).await {
                    tracing::warn!(error = format!("{error:#}"), "scheduled SAML metadata refresh failed");
                }
            }
            _ = purge.tick() => {
                if let Err(error) = state.saml_store.purge_expired(state.clock.now()).await {
                    tracing::warn!(%error, "purging expired SAML records failed");
                }
            }
        }
    }
}

/// Reloads the signing keys, so a rotation reaches every instance, and drops
/// expired grants and codes.
async fn provider_housekeeping(state: AppState) {
    // Other instances sharing the database may rotate the key, so the JWKS
    // here catches up within 15 seconds.
    let mut reload = tokio::time::interval(Duration::from_secs(15));
    let mut purge = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = reload.tick() => {
                if let Err(error) = state.provider.keys.load(state.clock.now()).await {
                    tracing::warn!(error = format!("{error:#}"), "reloading the token signing keys failed");
                }
            }
            _ = purge.tick() => {
                if let Err(error) = state.provider.store.purge_expired(state.clock.now()).await {
                    tracing::warn!(%error, "purging expired grants failed");
                }
            }
        }
    }
}

async fn shutdown_on_signal(handle: Handle) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in progress");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
}
