//! The real `unified-login` binary as a separate process on a loopback
//! port, with its own data folder, config and SQLite file database, so that
//! its CPU time can be read from /proc apart from the load driver's.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BINARY: &str = env!("CARGO_BIN_EXE_unified-login");

/// Argon2id settings written to the `[password]` table.
#[derive(Clone, Copy)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Settings {
    /// Returns the service's defaults (OWASP's minimum for Argon2id).
    pub fn service_default() -> Self {
        let defaults = unified_login::config::PasswordConfig::default();
        Self {
            memory_kib: defaults.memory_kib,
            iterations: defaults.iterations,
            parallelism: defaults.parallelism,
        }
    }

    /// Returns cheap settings for benchmarks whose users never type a password.
    pub fn cheap() -> Self {
        Self {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }
}

pub struct Broker {
    pub base_url: String,
    port: u16,
    config_path: std::path::PathBuf,
    dir: TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Writes the config and data folder. The sign-in rate limit is raised
    /// far above any load these benchmarks send from one loopback address.
    pub fn prepare(argon2: Argon2Settings) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free loopback port")
            .port();
        let base_url = format!("http://127.0.0.1:{port}");
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
public_url = "{base_url}"
database_url = "sqlite://{db}"

[rate_limit]
per_ip_per_minute = 100000000
burst = 100000000

[password]
memory_kib = {memory}
iterations = {iterations}
parallelism = {parallelism}

[log]
filter = "warn"
"#,
            db = dir.path().join("broker.db").display(),
            memory = argon2.memory_kib,
            iterations = argon2.iterations,
            parallelism = argon2.parallelism,
        );
        let config_path = dir.path().join("unified-login.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self {
            base_url,
            port,
            config_path,
            dir,
            child: None,
        }
    }

    /// Returns the broker's listening address on loopback.
    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a subcommand against this broker's config with `stdin` as input,
    /// and panics when it fails.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BINARY)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unified-login");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("wait for unified-login");
        assert!(
            output.status.success(),
            "unified-login {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Adds `count` users, `user000` and on with emails at contoso.example,
    /// who all have `password`.
    pub fn add_numbered_users(&self, count: usize, password: &str) {
        for user in 0..count {
            self.add_user(
                &format!("user{user:03}"),
                &format!("user{user:03}@contoso.example"),
                password,
            );
        }
    }

    /// Adds a user whose login ID is `login_id` and whose password is `password`.
    pub fn add_user(&self, login_id: &str, email: &str, password: &str) {
        self.cli(
            &[
                "user",
                "add",
                "--login-id",
                login_id,
                "--email",
                email,
                "--first-name",
                "Bench",
                "--last-name",
                "User",
            ],
            &format!("{password}\n"),
        );
    }

    /// Starts `unified-login serve` and waits until it accepts connections.
    pub fn serve(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).expect("log file");
        let child = Command::new(BINARY)
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .current_dir(self.dir.path())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start unified-login serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("broker exited with {status} at start; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("broker did not listen within 30 s; log:\n{}", self.log());
    }

    /// Returns the process ID of the running service.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is serving").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The data folder goes with this value, so a failed run shows the
        // service's log here.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("last lines of the broker's log:\n{tail}");
        }
    }
}

/// Returns the value of the hidden `csrf_token` field in `html`.
pub fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("page has a CSRF field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

/// Cookies of one browser, kept by hand so that many virtual users can
/// share one HTTP client and its connection pool.
#[derive(Default, Clone)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// Stores the cookies that `headers` set, replacing those of the same name.
    pub fn store(&mut self, headers: &reqwest::header::HeaderMap) {
        for value in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(existing, _)| existing != name);
            self.cookies
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }

    /// Returns the `Cookie` request header value, or `None` without cookies.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        Some(pairs.join("; "))
    }
}

/// The parts of a response that the load drivers check.
pub struct Page {
    pub status: reqwest::StatusCode,
    pub location: String,
    pub body: String,
}

/// Sends `request` with the cookies of `jar`, stores the cookies the
/// response sets, and returns the response.
pub async fn send(jar: &mut CookieJar, request: reqwest::RequestBuilder) -> Page {
    let request = match jar.header() {
        Some(cookie) => request.header(reqwest::header::COOKIE, cookie),
        None => request,
    };
    let response = request.send().await.expect("HTTP request to the broker");
    jar.store(response.headers());
    let status = response.status();
    let location = location(response.headers());
    let body = response.text().await.expect("response body");
    Page {
        status,
        location,
        body,
    }
}

/// Returns the `Location` header of a response, or an empty string when it
/// has none.
pub fn location(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Returns an HTTP client that does not follow redirects and keeps up to
/// `connections` idle connections.
pub fn http_client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(connections)
        .build()
        .expect("HTTP client")
}

/// The steps of a password login as a browser takes them, each checked
/// against the response the broker sends when the login goes well.
pub mod steps {
    use super::{CookieJar, Page, csrf_token, send};
    use reqwest::StatusCode;

    /// Checks the login page and returns its CSRF token.
    pub fn login_page_token(page: &Page) -> String {
        assert_eq!(page.status, StatusCode::OK, "GET /login: {}", page.body);
        csrf_token(&page.body)
    }

    /// Checks that the identifier post moved on to the password step.
    pub fn check_identified(identified: &Page) {
        assert_eq!(
            identified.location, "/login/password",
            "POST /login: {}",
            identified.body
        );
    }

    /// Checks the password page and returns its CSRF token.
    pub fn password_page_token(form: &Page) -> String {
        assert_eq!(
            form.status,
            StatusCode::OK,
            "GET /login/password: {}",
            form.body
        );
        csrf_token(&form.body)
    }

    /// Checks that the password post signed the user in and sent them to
    /// their account page.
    pub fn check_signed_in(signed_in: &Page) {
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

    /// Requests the login page and returns its CSRF token.
    pub async fn login_page(http: &reqwest::Client, base_url: &str, jar: &mut CookieJar) -> String {
        login_page_token(&send(jar, http.get(format!("{base_url}/login"))).await)
    }

    /// Posts `login_id` to the identifier form and checks that the broker
    /// moves on to the password step.
    pub async fn identify(
        http: &reqwest::Client,
        base_url: &str,
        jar: &mut CookieJar,
        token: &str,
        login_id: &str,
    ) {
        let identified = send(
            jar,
            http.post(format!("{base_url}/login"))
                .form(&[("csrf_token", token), ("identifier", login_id)]),
        )
        .await;
        check_identified(&identified);
    }

    /// Requests the password page and returns its CSRF token.
    pub async fn password_page(
        http: &reqwest::Client,
        base_url: &str,
        jar: &mut CookieJar,
    ) -> String {
        password_page_token(&send(jar, http.get(format!("{base_url}/login/password"))).await)
    }

    /// Posts `password` and checks that the broker signs the user in and
    /// sends them to their account page.
    pub async fn submit_password(
        http: &reqwest::Client,
        base_url: &str,
        jar: &mut CookieJar,
        token: &str,
        password: &str,
    ) {
        let signed_in = send(
            jar,
            http.post(format!("{base_url}/login/password"))
                .form(&[("csrf_token", token), ("password", password)]),
        )
        .await;
        check_signed_in(&signed_in);
    }

    /// Signs in `login_id` with `password` in a new browser: all four steps.
    pub async fn password_login(
        http: &reqwest::Client,
        base_url: &str,
        login_id: &str,
        password: &str,
    ) {
        let mut jar = CookieJar::default();
        let token = login_page(http, base_url, &mut jar).await;
        identify(http, base_url, &mut jar, &token, login_id).await;
        let token = password_page(http, base_url, &mut jar).await;
        submit_password(http, base_url, &mut jar, &token, password).await;
    }
}
