//! A reverse proxy on a free loopback port that plays the load balancer in
//! front of two broker instances, A and B, which use its URL as their
//! `public_url`.
//!
//! It sends each request to the instance of the longest matching path prefix
//! that the test set with [`FrontDoor::route`], or to the default instance.
//! Method, path, query, body and the end-to-end headers reach the instance
//! unchanged, and so does the Host header, which keeps the front door's
//! address. The instance's status, headers and body come back unchanged,
//! including redirects and `Set-Cookie`. Only the hop-by-hop headers of RFC
//! 9110, section 7.6.1, are dropped in both directions, as in any proxy.
//! Like a load balancer, the front door appends the address of the client it
//! received the request from to `X-Forwarded-For`, after any entries that
//! the client sent.
//!
//! The front door logs every request with the instance that served it, and
//! keeps the request bodies for the paths given to
//! [`FrontDoor::record_bodies`], for example the SAML responses that
//! browsers post to `/saml/acs`.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

/// One of the two broker instances behind the front door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instance {
    A,
    B,
}

impl fmt::Display for Instance {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::A => formatter.write_str("instance A"),
            Self::B => formatter.write_str("instance B"),
        }
    }
}

/// One request that passed the front door.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub instance: Instance,
    /// The instance's status, or 502 when the front door could not reach it.
    pub status: StatusCode,
    /// The request body, for a path given to `record_bodies`.
    pub body: Option<Bytes>,
}

/// The routing table and log, shared by the test and the proxy task.
struct Table {
    /// Base URLs of instances A and B, such as `http://127.0.0.1:PORT`.
    backends: [Option<String>; 2],
    /// Path prefixes and the instance that serves them.
    routes: Vec<(String, Instance)>,
    default: Instance,
    recorded_paths: HashSet<String>,
    exchanges: Vec<Exchange>,
}

impl Table {
    fn instance_for(&self, path: &str) -> Instance {
        self.routes
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.default, |(_, instance)| *instance)
    }
}

#[derive(Clone)]
struct Proxy {
    table: Arc<Mutex<Table>>,
    client: Client<HttpConnector, Body>,
}

/// A running front door. Dropping it stops the proxy task.
pub struct FrontDoor {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    table: Arc<Mutex<Table>>,
    server: JoinHandle<()>,
}

impl FrontDoor {
    /// Starts a front door that sends everything to instance A until the
    /// test sets routes. Requests for an instance whose URL is not set yet
    /// get 502 Bad Gateway.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the front door");
        let port = listener.local_addr().expect("local address").port();
        let table = Arc::new(Mutex::new(Table {
            backends: [None, None],
            routes: Vec::new(),
            default: Instance::A,
            recorded_paths: HashSet::new(),
            exchanges: Vec::new(),
        }));
        // Without idle connections, a restarted instance never receives a
        // request on a connection to its previous process.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        let proxy = Proxy {
            table: Arc::clone(&table),
            client,
        };
        let app = Router::new().fallback(forward).with_state(proxy);
        let server = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.expect("front door server");
        });
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            table,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Sets the base URL of `instance`, such as `Broker::base_url`.
    pub fn set_backend(&self, instance: Instance, base_url: &str) {
        self.lock().backends[index(instance)] = Some(base_url.to_owned());
    }

    /// Sends requests whose path starts with `prefix` to `instance`, in place
    /// of any earlier route for the same prefix.
    pub fn route(&self, prefix: &str, instance: Instance) {
        let mut table = self.lock();
        table.routes.retain(|(existing, _)| existing != prefix);
        table.routes.push((prefix.to_owned(), instance));
    }

    /// Sends requests that match no route to `instance`.
    pub fn route_default(&self, instance: Instance) {
        self.lock().default = instance;
    }

    /// Keeps the body of every later request to exactly `path`.
    pub fn record_bodies(&self, path: &str) {
        self.lock().recorded_paths.insert(path.to_owned());
    }

    /// Returns the requests so far whose method and path match, oldest first.
    pub fn exchanges_to(&self, method: &str, path: &str) -> Vec<Exchange> {
        self.lock()
            .exchanges
            .iter()
            .filter(|exchange| exchange.method == method && exchange.path == path)
            .cloned()
            .collect()
    }

    /// Returns the log of requests as text, one line each, for assert messages.
    pub fn describe(&self) -> String {
        self.lock()
            .exchanges
            .iter()
            .map(|exchange| {
                format!(
                    "{} {} -> {}: {}\n",
                    exchange.method, exchange.path, exchange.instance, exchange.status
                )
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn index(instance: Instance) -> usize {
    match instance {
        Instance::A => 0,
        Instance::B => 1,
    }
}

/// Forwards one request to the instance that its path routes to, and
/// returns that instance's response.
async fn forward(
    State(proxy): State<Proxy>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.clone(), |value| value.as_str().to_owned());
    let (instance, backend, record) = {
        let table = proxy
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let instance = table.instance_for(&path);
        (
            instance,
            table.backends[index(instance)].clone(),
            table.recorded_paths.contains(&path),
        )
    };

    let (body, recorded) = if record {
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("front door: reading the request body failed: {error}"),
                )
                    .into_response();
            }
        };
        (Body::from(bytes.clone()), Some(bytes))
    } else {
        (body, None)
    };

    let response = match backend {
        None => (
            StatusCode::BAD_GATEWAY,
            format!("front door: no URL is set for {instance}"),
        )
            .into_response(),
        Some(backend) => {
            let uri: Uri = format!("{backend}{path_and_query}")
                .parse()
                .expect("backend URL and request path form a URI");
            parts.uri = uri;
            remove_hop_by_hop(&mut parts.headers);
            append_forwarded_for(&mut parts.headers, client);
            let outbound = Request::from_parts(parts, body);
            match proxy.client.request(outbound).await {
                Ok(response) => {
                    let (mut response_parts, response_body) = response.into_parts();
                    remove_hop_by_hop(&mut response_parts.headers);
                    Response::from_parts(response_parts, Body::new(response_body))
                }
                Err(error) => (
                    StatusCode::BAD_GATEWAY,
                    format!("front door: forwarding to {instance} at {backend} failed: {error}"),
                )
                    .into_response(),
            }
        }
    };

    proxy
        .table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .exchanges
        .push(Exchange {
            method,
            path,
            instance,
            status: response.status(),
            body: recorded,
        });
    response
}

/// Appends `client`'s address to `X-Forwarded-For`, joining the values of
/// several header lines into one list, as proxies commonly do.
fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let mut list: Vec<u8> = Vec::new();
    for value in headers.get_all(&name) {
        list.extend_from_slice(value.as_bytes());
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(client.ip().to_string().as_bytes());
    let value = HeaderValue::from_bytes(&list).expect("header bytes and an IP address");
    headers.insert(name, value);
}

/// Removes the headers that apply to one connection only: those that the
/// Connection header names, and the fixed list of RFC 9110, section 7.6.1.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}
