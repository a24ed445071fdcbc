//! The token endpoint under concurrent load: authorization code exchanges
//! and refresh-token rotations over HTTP on loopback, 32 requests in flight,
//! against the whole application with its SQLite database.
//!
//! Two bounds are measured in the same run: `GET /healthz` through the same
//! server and client (the cost of HTTP alone), and the two RS256 signatures
//! every exchange makes (ID token and access token), single-threaded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use tokio::task::JoinSet;
use unified_login::config::Config;
use unified_login::directory::NewUser;
use unified_login::provider::clients::{ClientKind, ClientSettings};
use unified_login::provider::store::{Grant, NewCode};
use unified_login::provider::tokens::{Minter, random_token, token_digest};
use unified_login::state::AppState;
use unified_login::{db, session, web};

const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-client-secret-0123456789-abcdefghij";
const REDIRECT_URI: &str = "http://127.0.0.1/callback";
const IN_FLIGHT: usize = 32;

struct Server {
    base_url: String,
    state: AppState,
    user_id: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut config = Config {
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        ..Config::default()
    };
    config.oauth2.clients.push(ClientSettings {
        id: CLIENT_ID.into(),
        name: None,
        kind: ClientKind::Confidential,
        secret: Some(SecretString::from(CLIENT_SECRET)),
        secret_file: None,
        redirect_uris: vec![REDIRECT_URI.into()],
        post_logout_redirect_uris: Vec::new(),
        scopes: vec![
            "openid".into(),
            "email".into(),
            "profile".into(),
            "offline_access".into(),
        ],
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    config.listen = address;

    let pool = db::connect_default(&config.database_url)
        .await
        .expect("database");
    let (sessions, _) = session::layer(pool.clone(), &config);
    let state = AppState::new(config, pool).await.expect("state");
    state
        .provider
        .keys
        .load(state.clock.now())
        .await
        .expect("signing keys");
    let user = state
        .users
        .create(
            NewUser {
                login_id: "bench".into(),
                email: "bench@example.com".into(),
                first_name: "Bench".into(),
                last_name: "User".into(),
                password_hash: None,
            },
            state.clock.now(),
        )
        .await
        .expect("user");

    let app = web::app(state.clone(), sessions)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base_url: format!("http://{address}"),
        state,
        user_id: user.id,
        _dir: dir,
    }
}

impl Server {
    fn grant(&self) -> Grant {
        let now = self.state.clock.now();
        Grant {
            id: uuid::Uuid::new_v4().to_string(),
            client_id: CLIENT_ID.into(),
            user_id: self.user_id.clone(),
            session_id: random_token(),
            scope: "openid email profile offline_access".into(),
            nonce: Some("bench-nonce".into()),
            auth_time: now,
            methods: "password".into(),
            created_at: now,
            expires_at: now + 86_400,
            revoked_at: None,
        }
    }

    /// Stores `count` fresh authorization codes and returns them.
    async fn codes(&self, count: u64) -> Vec<String> {
        let mut codes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let code = random_token();
            let new_code = NewCode {
                code_hash: token_digest(&code),
                redirect_uri: REDIRECT_URI.into(),
                code_challenge: None,
                expires_at: self.state.clock.now() + 3_600,
            };
            let grant = self.grant();
            self.state
                .provider
                .store
                .create_grant(&grant, &new_code)
                .await
                .expect("code");
            codes.push(code);
        }
        codes
    }

    /// Stores `count` refresh tokens, each in its own family, and returns them.
    async fn refresh_tokens(&self, count: u64) -> Vec<String> {
        let mut tokens = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let grant = self.grant();
            let unused_code = NewCode {
                code_hash: token_digest(&random_token()),
                redirect_uri: REDIRECT_URI.into(),
                code_challenge: None,
                expires_at: 0,
            };
            let store = &self.state.provider.store;
            store
                .create_grant(&grant, &unused_code)
                .await
                .expect("grant");
            let token = random_token();
            store
                .add_refresh_token(&grant.id, &token_digest(&token), self.state.clock.now())
                .await
                .expect("refresh token");
            tokens.push(token);
        }
        tokens
    }
}

/// Sends one request per form, `IN_FLIGHT` at a time, and returns the elapsed time.
async fn run_concurrently(
    http: &reqwest::Client,
    url: &str,
    forms: Vec<Vec<(&'static str, String)>>,
) -> Duration {
    let queue = Arc::new(std::sync::Mutex::new(forms));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let http = http.clone();
        let url = url.to_owned();
        let queue = queue.clone();
        workers.spawn(async move {
            loop {
                let Some(form) = queue.lock().expect("queue").pop() else {
                    break;
                };
                let response = http
                    .post(&url)
                    .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                    .form(&form)
                    .send()
                    .await
                    .expect("token request");
                assert!(
                    response.status().is_success(),
                    "token request failed: {}",
                    response.text().await.unwrap_or_default()
                );
                response.bytes().await.expect("body");
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.expect("worker");
    }
    started.elapsed()
}

async fn get_concurrently(http: &reqwest::Client, url: &str, count: u64) -> Duration {
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(count));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let http = http.clone();
        let url = url.to_owned();
        let remaining = remaining.clone();
        workers.spawn(async move {
            use std::sync::atomic::Ordering;
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            {
                let response = http.get(&url).send().await.expect("request");
                assert!(response.status().is_success());
                response.bytes().await.expect("body");
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.expect("worker");
    }
    started.elapsed()
}

fn token_endpoint(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = runtime.block_on(start());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("HTTP client");
    let token_url = format!("{}/oauth2/token", server.base_url);
    let health_url = format!("{}/healthz", server.base_url);

    let mut group = c.benchmark_group("token_endpoint");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));

    group.bench_function("code_exchange", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (server, http, url) = (&server, &http, &token_url);
            async move {
                let forms = server
                    .codes(iters)
                    .await
                    .into_iter()
                    .map(|code| {
                        vec![
                            ("grant_type", "authorization_code".to_owned()),
                            ("code", code),
                            ("redirect_uri", REDIRECT_URI.to_owned()),
                        ]
                    })
                    .collect();
                run_concurrently(http, url, forms).await
            }
        });
    });

    group.bench_function("refresh_rotation", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (server, http, url) = (&server, &http, &token_url);
            async move {
                let forms = server
                    .refresh_tokens(iters)
                    .await
                    .into_iter()
                    .map(|token| {
                        vec![
                            ("grant_type", "refresh_token".to_owned()),
                            ("refresh_token", token),
                        ]
                    })
                    .collect();
                run_concurrently(http, url, forms).await
            }
        });
    });

    group.bench_function("healthz_bound", |b| {
        b.to_async(&runtime)
            .iter_custom(|iters| get_concurrently(&http, &health_url, iters));
    });
    group.finish();

    let keys = server.state.provider.keys.current().expect("keys");
    let grant = server.grant();
    let user = runtime
        .block_on(server.state.users.find_by_id(&server.user_id))
        .expect("user")
        .expect("user exists");
    c.bench_function("sign_access_and_id_token", |b| {
        b.iter(|| {
            let minter = Minter {
                keys: &keys,
                issuer: &server.state.provider.issuer,
                now: 1_800_000_000,
                lifetime_seconds: 600,
            };
            let access = minter
                .access_token(&grant, &grant.scope)
                .expect("access token");
            minter
                .id_token(&grant, &user, &grant.scope, &access, true)
                .expect("ID token")
        });
    });
}

criterion_group!(benches, token_endpoint);
criterion_main!(benches);
