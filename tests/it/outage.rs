//! A broker that loses its PostgreSQL server and gets it back: start-up
//! waits for the database, readiness reports the loss, requests fail quickly
//! instead of hanging, and the service recovers without a restart.
//!
//! The broker reaches the real server through a relay on loopback that the
//! test can cut and reopen, which is what a failover or a network partition
//! looks like from the broker. These tests need the server named by
//! `TEST_POSTGRES_URL`, whichever engine the other tests use.

use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use reqwest::StatusCode;

use crate::database::{POSTGRES_ENV, PostgresDatabase, postgres_server};
use crate::harness::{Broker, Options, PASSWORD, csrf_token, free_port, in_ci};
use crate::http_login::{Page, WebClient};

/// Maximum wait for one request. The broker bounds its own database waits
/// far below this, so reaching it means a request hung.
const HANG_GUARD: Duration = Duration::from_secs(45);

/// A TCP relay from a loopback port to the PostgreSQL server. `cut` closes
/// every relayed connection and the port itself, and `reopen` listens again
/// on the same port.
struct Relay {
    port: u16,
    target: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(target: u16) -> Self {
        // The relay listens again on this port after a cut, so it must be a
        // port that no outgoing connection can take meanwhile.
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("relay port");
        let mut relay = Self {
            port,
            target,
            open: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
            acceptor: None,
        };
        relay.listen(listener);
        relay
    }

    fn listen(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        self.open.store(true, Ordering::SeqCst);
        let open = self.open.clone();
        let connections = self.connections.clone();
        let target = self.target;
        self.acceptor = Some(std::thread::spawn(move || {
            while open.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).expect("blocking socket");
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let mut registry = connections.lock().expect("relay registry");
                        registry.push(client.try_clone().expect("socket clone"));
                        registry.push(server.try_clone().expect("socket clone"));
                        pipe(
                            client.try_clone().expect("socket clone"),
                            server.try_clone().expect("socket clone"),
                        );
                        pipe(server, client);
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(error) => panic!("relay accept failed: {error}"),
                }
            }
        }));
    }

    /// Stops accepting, closes the port and resets every relayed connection.
    fn cut(&mut self) {
        self.open.store(false, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().expect("relay acceptor");
        }
        for socket in self.connections.lock().expect("relay registry").drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    fn reopen(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("relay port again");
        self.listen(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies bytes from `from` to `to` on a thread of its own until either
/// side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Returns the PostgreSQL server, or `None` after printing why the test is
/// skipped. Under CI a missing server fails the test instead.
pub fn server_or_skip() -> Option<String> {
    let server = postgres_server();
    if server.is_none() {
        assert!(
            !in_ci(),
            "{POSTGRES_ENV} is not set; CI must name a PostgreSQL server for the tests that need one"
        );
        eprintln!("skipped: {POSTGRES_ENV} names no PostgreSQL server");
    }
    server
}

/// Creates a fresh PostgreSQL database and returns it with broker options
/// that point at it, or `None` after `server_or_skip` reported the skip.
/// The database goes when dropped, so keep it until the brokers stop.
pub fn postgres_options() -> Option<(PostgresDatabase, Options)> {
    let database = PostgresDatabase::create(&server_or_skip()?);
    let options = Options {
        database_url: Some(database.url()),
        ..Options::default()
    };
    Some((database, options))
}

async fn get(client: &WebClient, path: &str) -> Page {
    tokio::time::timeout(HANG_GUARD, client.get(path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} hung while the database was gone"))
}

/// Adds the user `jdoe` and returns a client signed in as that user.
async fn signed_in_client(broker: &Broker) -> WebClient {
    broker.add_user("jdoe", "jane@example.com");
    let client = WebClient::new(broker);
    let signed_in = client.sign_in("jdoe", PASSWORD).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    client
}

async fn readiness(broker: &Broker) -> StatusCode {
    let response = tokio::time::timeout(HANG_GUARD, reqwest::get(broker.url("/readyz")))
        .await
        .expect("/readyz hung")
        .expect("/readyz answers");
    response.status()
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_database_is_reported_and_survived() {
    let Some(server) = server_or_skip() else {
        return;
    };
    let database = PostgresDatabase::create(&server);
    let mut relay = Relay::start(database.server_port());
    let mut broker = Broker::prepare(Options {
        database_url: Some(database.url_through(relay.port)),
        ..Options::default()
    });
    broker.append_config("[database]\nacquire_timeout_seconds = 2\n");
    broker.serve();
    let client = signed_in_client(&broker).await;
    let before = get(&client, "/account").await;
    assert_eq!(before.status, StatusCode::OK);
    let token = csrf_token(&before.body);
    // A visitor who opened the sign-in page before the loss.
    let stranger = WebClient::new(&broker);
    let login_page = get(&stranger, "/login").await;
    assert_eq!(login_page.status, StatusCode::OK);
    let stranger_token = csrf_token(&login_page.body);
    assert_eq!(readiness(&broker).await, StatusCode::OK);

    relay.cut();
    assert_eq!(readiness(&broker).await, StatusCode::SERVICE_UNAVAILABLE);
    let account = get(&client, "/account").await;
    assert_eq!(
        account.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        account.body
    );
    assert!(
        account.body.contains("cannot reach its database"),
        "{}",
        account.body
    );
    // The page itself may still render from the cached IdP settings, but
    // the identifier step must read the users table.
    let identified = tokio::time::timeout(
        HANG_GUARD,
        stranger.post(
            "/login",
            &[
                ("csrf_token", &stranger_token),
                ("identifier", "jdoe"),
                ("return_to", "/account"),
            ],
        ),
    )
    .await
    .expect("POST /login hung while the database was gone");
    assert_eq!(
        identified.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        identified.body
    );
    assert!(
        identified.body.contains("cannot reach its database"),
        "{}",
        identified.body
    );
    let posted = client.post("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(
        posted.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        posted.body
    );
    let password = url::Url::parse(&server)
        .expect("server URL")
        .password()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        password.is_empty() || !broker.log().contains(&password),
        "the log contains the database password"
    );
    assert!(
        broker.log().contains("readiness check failed"),
        "the broker logged nothing about the lost database:\n{}",
        broker.log()
    );

    relay.reopen();
    let mut ready = false;
    for _ in 0..60 {
        if readiness(&broker).await == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        ready,
        "the broker did not become ready again:\n{}",
        broker.log()
    );
    let account = get(&client, "/account").await;
    assert_eq!(
        account.status,
        StatusCode::OK,
        "the session did not survive the outage"
    );
    assert!(
        account.body.contains("jane@example.com"),
        "{}",
        account.body
    );
}

/// The pool skips its liveness check for connections it handed out a moment
/// ago. Connections that the server closed while they sat idle must still be
/// replaced before a request meets them.
#[tokio::test(flavor = "multi_thread")]
async fn server_closed_idle_connections_replaced() {
    let Some(server) = server_or_skip() else {
        return;
    };
    let database = PostgresDatabase::create(&server);
    let mut broker = Broker::prepare(Options {
        database_url: Some(database.url()),
        ..Options::default()
    });
    broker.serve();
    let client = signed_in_client(&broker).await;

    let ended = database.end_sessions();
    assert!(ended > 0, "the broker held no connection to end");
    // Past the idle time after which the pool checks a connection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for attempt in 1..=4 {
        let account = get(&client, "/account").await;
        assert_eq!(
            account.status,
            StatusCode::OK,
            "request {attempt} after the server ended {ended} connections: {}\n{}",
            account.body,
            broker.log()
        );
        assert!(
            account.body.contains("jane@example.com"),
            "{}",
            account.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_waits_for_the_database() {
    let Some(server) = server_or_skip() else {
        return;
    };
    let database = PostgresDatabase::create(&server);
    let mut relay = Relay::start(database.server_port());
    relay.cut();
    let mut broker = Broker::prepare(Options {
        database_url: Some(database.url_through(relay.port)),
        ..Options::default()
    });
    broker.append_config("[database]\nacquire_timeout_seconds = 1\nconnect_retry_seconds = 60\n");
    // The relay's port is closed while the broker starts and opens a moment
    // later. `serve` returns once the broker listens.
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        relay.reopen();
        relay
    });
    broker.serve();
    let _relay = opener.join().expect("relay thread");
    assert!(
        broker.log().contains("database unreachable, retrying"),
        "start-up did not report its retries:\n{}",
        broker.log()
    );
    assert_eq!(readiness(&broker).await, StatusCode::OK);
}
