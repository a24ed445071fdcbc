//! Headless Chromium for the browser tests. `Browser::launch` starts its own
//! chromedriver on a free loopback port and, through it, a Chromium with a
//! fresh profile and JavaScript on or off.
//!
//! When `/usr/bin/chromedriver` or `/usr/bin/chromium` is missing, `launch`
//! prints a line to stderr and returns `None`, so the test passes without
//! running. Under CI (`CI` set to anything but empty, `0` or `false`) it
//! panics instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tempfile::TempDir;

use crate::harness::{free_port, in_ci};

pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// Maximum wait for chromedriver to start, for a click to load a new page, or
/// for a page or element to appear.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum JavaScript {
    Enabled,
    Disabled,
}

/// A chromedriver process in its own process group. Chromium inherits the
/// group, so killing the group on drop also ends a browser whose WebDriver
/// session was never closed (for example after a failed assert).
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {CHROMEDRIVER} failed: {error}"));
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `GET /status` reports that chromedriver accepts sessions.
    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromedriver on port {} exited before it was ready: {status}",
                    self.port
                );
            }
            if self.status_is_ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {} was not ready within {TIMEOUT:?}",
                self.port
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn status_is_ready(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.contains("\"ready\":true")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The child is not reaped yet, so its id cannot have been reused.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium with a fresh profile, and page helpers that act as a
/// user would: type into fields, click buttons and links, read what is shown.
pub(crate) struct Browser {
    /// The WebDriver session, for what the helpers below do not cover.
    pub(crate) client: Client,
    // Dropped in this order: the driver and browser end before the profile
    // folder is removed.
    _driver: Driver,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser, or returns `None` when chromedriver
    /// or Chromium is not installed and the run is not under CI.
    pub(crate) async fn launch(javascript: JavaScript) -> Option<Self> {
        let missing = [CHROMEDRIVER, CHROMIUM]
            .into_iter()
            .find(|program| !Path::new(program).exists());
        if let Some(program) = missing {
            assert!(
                !in_ci(),
                "{program} is missing but CI requires the browser tests; install the chromium and chromium-driver packages"
            );
            let test = std::thread::current()
                .name()
                .unwrap_or("browser test")
                .to_owned();
            // Written to stderr directly because the test harness captures
            // `eprintln!` output of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "{test} not run: {program} is missing (install the chromium and chromium-driver packages)"
            );
            return None;
        }

        let profile = tempfile::tempdir().expect("browser profile folder");
        let mut driver = Driver::start();
        driver.wait_until_ready().await;

        let mut chrome_options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if javascript == JavaScript::Disabled {
            chrome_options["prefs"] =
                json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), chrome_options);

        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "creating a browser session at {} failed: {error}",
                    driver.url()
                )
            });
        Some(Self {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Ends the WebDriver session, which closes the browser.
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Returns true when a page's inline script can change its title.
    pub(crate) async fn scripts_run(&self) -> bool {
        let probe = "data:text/html,%3Ctitle%3Eoff%3C/title%3E%3Cscript%3Edocument.title=%22on%22%3C/script%3E";
        self.open(probe).await;
        self.client.title().await.expect("page title") == "on"
    }

    pub(crate) async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("opening {url} failed: {error}"));
    }

    pub(crate) async fn current_url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    pub(crate) async fn path(&self) -> String {
        self.current_url().await.path().to_owned()
    }

    /// Returns the URL and main heading, for assert messages.
    pub(crate) async fn describe(&self) -> String {
        let heading = match self.client.find(Locator::Css("h1")).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        format!("{} (heading: {heading:?})", self.current_url().await)
    }

    /// Waits until the browser shows `url`, without regard to its query.
    pub(crate) async fn wait_for_page(&self, url: &str) {
        let expected = url::Url::parse(url).expect("expected URL");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut current = self.current_url().await;
            current.set_query(None);
            if current == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the browser did not reach {url} within {TIMEOUT:?}; it shows {}",
                self.describe().await
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until an element matches `css` and returns it.
    pub(crate) async fn wait_for_element(&self, css: &str) -> Element {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return element;
            }
            assert!(
                Instant::now() < deadline,
                "no element matched {css} within {TIMEOUT:?} on {}",
                self.describe().await
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Returns true when an element matches `css` now, without waiting.
    pub(crate) async fn is_present(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("element search")
            .is_empty()
    }

    /// Waits for an element that matches `css` and returns its text.
    pub(crate) async fn text(&self, css: &str) -> String {
        self.wait_for_element(css)
            .await
            .text()
            .await
            .expect("element text")
    }

    /// Returns the text of the first element that matches `css` now, if any.
    pub(crate) async fn optional_text(&self, css: &str) -> Option<String> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Some(element.text().await.expect("element text")),
            Err(_) => None,
        }
    }

    /// Waits for a field that matches `css` and returns its current value.
    pub(crate) async fn value(&self, css: &str) -> String {
        self.wait_for_element(css)
            .await
            .prop("value")
            .await
            .expect("field value")
            .unwrap_or_default()
    }

    /// Waits for a field that matches `css`, clears it and types `text`.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let field = self.wait_for_element(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|error| panic!("clearing {css} failed: {error}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|error| panic!("typing into {css} failed: {error}"));
    }

    /// Waits for an element that matches `css` and clicks it, without waiting
    /// for a new page.
    pub(crate) async fn click(&self, css: &str) {
        self.wait_for_element(css)
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("clicking {css} failed: {error}"));
    }

    /// Clicks the element and waits until the browser shows a new page.
    pub(crate) async fn click_and_wait(&self, locator: Locator<'_>) {
        let old_page = self
            .client
            .find(Locator::Css("html"))
            .await
            .expect("page has an html element");
        let target = match self.client.find(locator).await {
            Ok(element) => element,
            Err(error) => panic!(
                "no element matches {locator:?} on {}: {error}",
                self.describe().await
            ),
        };
        target
            .click()
            .await
            .unwrap_or_else(|error| panic!("clicking {locator:?} failed: {error}"));

        // Every element of the old document goes stale once the next one loads.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match old_page.tag_name().await {
                Err(error) if error.is_stale_element_reference() || error.is_no_such_element() => {
                    return;
                }
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "after clicking {locator:?}: {error}"
                ),
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "clicking {locator:?} loaded no new page within {TIMEOUT:?}"
                ),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Returns the text of every link on the page, in document order.
    pub(crate) async fn links(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for link in self
            .client
            .find_all(Locator::Css("a"))
            .await
            .expect("links")
        {
            texts.push(link.text().await.expect("link text"));
        }
        texts
    }
}
