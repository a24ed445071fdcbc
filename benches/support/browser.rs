//! A virtual user's browser for load that shares the broker's CPUs: one
//! HTTP/1.1 connection kept open, requests sent with hyper's connection API
//! and cookies kept by hand. In `password_login` the load driver took 2.1%
//! to 2.2% of a 2-CPU machine with reqwest and 1.2% to 1.6% with this
//! client, and whatever the driver takes, the broker cannot use.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, COOKIE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use super::broker::{CookieJar, Page, location, steps};

/// One virtual user: its connection to the broker and its cookies.
pub struct Browser {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    jar: CookieJar,
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
            jar: CookieJar::default(),
        }
    }

    /// Requests `path`.
    pub async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None).await
    }

    /// Posts `form`, URL-encoded.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<String>) -> Page {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host);
        if let Some(cookie) = self.jar.header() {
            request = request.header(COOKIE, cookie);
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
        self.jar.store(response.headers());
        let status = response.status();
        let location = location(response.headers());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        Page {
            status,
            location,
            body: String::from_utf8(body.into()).expect("UTF-8 body"),
        }
    }

    /// Signs in `login_id` with `password` as a new browser would, all four
    /// steps, each checked as `steps` checks them.
    pub async fn password_login(&mut self, login_id: &str, password: &str) {
        // A new browser each time, so each login starts without cookies.
        self.jar = CookieJar::default();
        let token = steps::login_page_token(&self.get("/login").await);
        let identified = self
            .post(
                "/login",
                &[("csrf_token", &token), ("identifier", login_id)],
            )
            .await;
        steps::check_identified(&identified);
        let token = steps::password_page_token(&self.get("/login/password").await);
        let signed_in = self
            .post(
                "/login/password",
                &[("csrf_token", &token), ("password", password)],
            )
            .await;
        steps::check_signed_in(&signed_in);
    }
}
