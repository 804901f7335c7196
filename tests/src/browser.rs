//! A real headless Chromium for the web console's tests, driven over
//! WebDriver by Debian's `chromedriver` (`apt-get install chromium
//! chromium-driver`, which `scripts/setup.sh` does).
//!
//! Each [`Browser`] runs its own chromedriver on a free port (killed when
//! dropped) and its own Chromium profile, and saves a screenshot of each
//! page it is asked to under `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use tokio::process::{Child, Command};

use crate::harness::workspace_root;

/// How to get the browser when it is missing.
const INSTALL_HINT: &str =
    "run scripts/setup.sh, or as root: apt-get install -y chromium chromium-driver";

/// How long a page condition may take.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The directory screenshots go to.
pub fn screenshot_dir() -> PathBuf {
    workspace_root().join("target").join("console-screenshots")
}

/// A headless Chromium session with its chromedriver.
pub struct Browser {
    pub client: Client,
    base: String,
    label: String,
    _driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that will open pages of
    /// the coordinator at `base`; screenshots are named `label-*.png`.
    ///
    /// # Panics
    /// When Chromium or chromedriver is missing (saying how to get them) or
    /// does not start.
    pub async fn start(base: &str, label: &str) -> Browser {
        let driver_path = find_program(&["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver is missing: {INSTALL_HINT}"));
        let chromium = find_program(&["chromium", "chromium-browser"])
            .unwrap_or_else(|| panic!("chromium is missing: {INSTALL_HINT}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", driver_path.display()));
        let webdriver = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
        loop {
            let ready = probe
                .get(format!("{webdriver}/status"))
                .send()
                .await
                .is_ok_and(|reply| reply.status().is_success());
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer on {webdriver}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!(
            "sqlarena-console-{label}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|error| panic!("starting headless Chromium: {error}"));
        std::fs::create_dir_all(screenshot_dir()).expect("screenshot directory");
        Browser {
            client,
            base: base.trim_end_matches('/').to_string(),
            label: label.to_string(),
            _driver: driver,
        }
    }

    /// Opens `path` (relative to the coordinator).
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|error| panic!("opening {url}: {error}"));
    }

    /// The path of the page shown now.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current URL")
            .path()
            .to_string()
    }

    /// Saves a screenshot of the page as `target/console-screenshots/LABEL-NAME.png`,
    /// after checking that every form field on it has a label.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        self.assert_fields_labelled().await;
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let path = screenshot_dir().join(format!("{}-{name}.png", self.label));
        std::fs::write(&path, png).expect("writing a screenshot");
        path
    }

    /// Checks that every visible form field of the page has a label (a
    /// `<label for>` or one around it, or `aria-label`).
    ///
    /// # Panics
    /// Naming the fields without one.
    pub async fn assert_fields_labelled(&self) {
        let unlabelled = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll('input, select, textarea'))
                    .filter(f => f.type !== 'hidden')
                    .filter(f => f.labels.length === 0 && !f.getAttribute('aria-label'))
                    .map(f => f.outerHTML);",
                vec![],
            )
            .await
            .expect("listing form fields");
        assert_eq!(
            unlabelled,
            serde_json::json!([]),
            "fields without a label on {}",
            self.path().await
        );
    }

    /// Presses keys in the focused element (`fantoccini::key::Key` values
    /// for Tab, Enter, ...).
    pub async fn press(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .expect("a focused element")
            .send_keys(keys)
            .await
            .expect("pressing keys");
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.expect("element text"),
            Err(error) => panic!("no {css} on {}: {error}", self.describe().await),
        }
    }

    /// The text of the whole page.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Waits until the text of `css` contains `needle`, without reloading:
    /// the page changes by itself. Returns that text.
    ///
    /// # Panics
    /// After [`PAGE_TIMEOUT`] (or `timeout`), with what the page shows.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {needle:?} in {css} on {}",
                self.describe().await
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Types `text` into the field matching `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no field {css}: {error}"));
        field.clear().await.expect("clearing a field");
        field.send_keys(text).await.expect("typing");
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.expect("click"),
            Err(error) => panic!(
                "nothing to click at {css} on {}: {error}",
                self.describe().await
            ),
        }
    }

    /// Clicks every element matching `css` (ticks every checkbox of a list).
    pub async fn tick_all(&self, css: &str) {
        let boxes = self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("finding elements");
        assert!(!boxes.is_empty(), "nothing matches {css}");
        for element in boxes {
            element.click().await.expect("click");
        }
    }

    /// Signs in through the sign-in form.
    pub async fn sign_in(&self, email: &str, password: &str) {
        self.goto("/login").await;
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("form button[type=submit]").await;
        self.wait_for_text("header.top", "Sign out", PAGE_TIMEOUT)
            .await;
    }

    /// Signs out with the header's button and checks the sign-in page shows.
    pub async fn sign_out(&self) {
        self.click("header.top form button").await;
        self.wait_for_text("h1", "Sign in", PAGE_TIMEOUT).await;
    }

    /// Where the browser is and what the page says (for failure messages).
    async fn describe(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map(|url| url.to_string())
            .unwrap_or_default();
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        format!("{url}: {}", text.chars().take(1500).collect::<String>())
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
