//! A virtual user's browser for load that shares the broker's CPUs: one
//! HTTP/1.1 connection kept open, requests sent with hyper's connection API
//! and cookies kept by hand. In `password_login` the load driver took 2.1%
//! to 2.2% of a 2-CPU machine with reqwest and 1.2% to 1.6% with this
//! client, and whatever the driver takes, the broker cannot use.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::broker::csrf_token;

pub struct Browser {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    cookies: Vec<(String, String)>,
}

/// The parts of a response that the load checks.
pub struct Reply {
    pub status: StatusCode,
    pub location: String,
    pub body: String,
}

impl Browser {
    /// Opens a connection to the broker at `address`.
    pub async fn connect(address: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connection to the broker");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            // Ends when the broker or this browser closes the connection.
            let _ = connection.await;
        });
        Self {
            sender,
            host: address.to_string(),
            cookies: Vec::new(),
        }
    }

    /// Forgets every cookie, as a new browser would start.
    pub fn clear_cookies(&mut self) {
        self.cookies.clear();
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    /// Posts `form`, whose values must need no URL encoding.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body: Vec<String> = form
            .iter()
            .map(|(name, value)| {
                assert!(
                    value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)),
                    "form value {value:?} would need encoding"
                );
                format!("{name}={value}")
            })
            .collect();
        self.send(Method::POST, path, Some(body.join("&"))).await
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<String>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host);
        if !self.cookies.is_empty() {
            let pairs: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request = request.header(COOKIE, pairs.join("; "));
        }
        let body = match form {
            Some(form) => {
                request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            None => Full::new(Bytes::new()),
        };
        self.sender.ready().await.expect("connection ready");
        let response = self
            .sender
            .send_request(request.body(body).expect("request"))
            .await
            .expect("HTTP request to the broker");
        for value in response.headers().get_all(SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(existing, _)| existing != name.trim());
            self.cookies
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        Reply {
            status,
            location,
            body: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
        }
    }

    /// Signs in `login_id` with `password` as a new browser would, all four
    /// steps, each checked against the response of a login that goes well.
    pub async fn password_login(&mut self, login_id: &str, password: &str) {
        self.clear_cookies();
        let page = self.get("/login").await;
        assert_eq!(page.status, StatusCode::OK, "GET /login: {}", page.body);
        let token = csrf_token(&page.body);
        let identified = self
            .post(
                "/login",
                &[("csrf_token", &token), ("identifier", login_id)],
            )
            .await;
        assert_eq!(
            identified.location, "/login/password",
            "POST /login: {}",
            identified.body
        );
        let form = self.get("/login/password").await;
        assert_eq!(
            form.status,
            StatusCode::OK,
            "GET /login/password: {}",
            form.body
        );
        let token = csrf_token(&form.body);
        let signed_in = self
            .post(
                "/login/password",
                &[("csrf_token", &token), ("password", password)],
            )
            .await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "POST /login/password: {}",
            signed_in.body
        );
        assert_eq!(
            signed_in.location, "/account",
            "password login redirected elsewhere"
        );
    }
}
