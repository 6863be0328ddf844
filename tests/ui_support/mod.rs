//! A real headless Chromium for the dashboard's tests, driven through
//! chromedriver's W3C WebDriver protocol: plain JSON over HTTP on
//! loopback, spoken here with the reqwest client the crate already has
//! (no WebDriver or CDP crate to compile; README, dependency notes).
//! Chromium and chromedriver are Debian's (`scripts/test` installs them).
//! Every wait is bounded; the browser and the driver end with the value.

#![allow(dead_code)]
// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key a WebDriver element reference is under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the screenshots go (kept as the test's artifacts).
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots")
}

fn chromium_binary() -> String {
    std::env::var("CANARYD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver_binary() -> String {
    std::env::var("CANARYD_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

/// One browser at a time: the tests of a binary run in parallel on a
/// two-core machine, and four Chromiums starting at once made their
/// bounded waits a race. The daemons still run side by side.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver and one browser session.
pub struct Browser {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// chromedriver on an ephemeral loopback port, then a headless
    /// Chromium session (its own profile dir, 1280×900).
    pub async fn start() -> Browser {
        let turn = ONE_AT_A_TIME.lock().await;
        let mut driver = Command::new(chromedriver_binary())
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/test installs Debian's chromium-driver)");
        let stdout = driver.stdout.take().expect("piped");
        // "ChromeDriver was started successfully on port 35479."
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("successfully on port ").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port);
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(p) => p,
            Err(_) => {
                let _ = driver.kill();
                panic!("chromedriver did not say its port within 30 s");
            }
        };
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless=new",
                    // Root in a container has no user namespace for the sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let mut browser = Browser {
            _turn: turn,
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = browser.call("POST", "/session", Some(caps)).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        browser
    }

    /// One WebDriver command: its `value`, or a panic with the driver's
    /// error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, url).timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("chromedriver answers");
        let status = resp.status();
        let v: Value = resp.json().await.expect("chromedriver JSON");
        assert!(
            status.is_success(),
            "webdriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page
    /// and returns what it returns.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The element a CSS selector finds, or `None`.
    pub async fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}{}", self.base, self.at("/element"));
        let resp = self
            .http
            .post(url)
            .json(&json!({"using": "css selector", "value": css}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("chromedriver answers");
        if !resp.status().is_success() {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        v["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// Waits (bounded) until `css` finds an element, and returns it.
    pub async fn wait_for(&self, css: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` on the page within {limit:?}; page text:\n{}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until the script returns `true`.
    pub async fn wait_until(&self, what: &str, script: &str, args: Value, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script, args.clone()).await == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page text:\n{}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A real (trusted) click through the driver.
    pub async fn click(&self, css: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/click")),
            Some(json!({})),
        )
        .await;
    }

    /// Types into an input through the driver.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The text of the first element `css` finds ("" when none).
    pub async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// `attr` of the first element `css` finds.
    pub async fn attr(&self, css: &str, attr: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            json!([css, attr]),
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// Opens the dashboard and signs in with `token` through its form.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/ui")).await;
        self.type_into("#token-input", token).await;
        self.click("#token-submit").await;
        self.wait_until(
            "the dashboard to take the token",
            "return !document.getElementById('who').hidden;",
            json!([]),
            Duration::from_secs(10),
        )
        .await;
    }

    /// A PNG of the whole page (the window grown to the page's height),
    /// saved as `target/ui-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let height = self
            .js(
                "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 4000);
        self.call(
            "POST",
            &self.at("/window/rect"),
            Some(json!({"width": 1280, "height": height + 120})),
        )
        .await;
        let b64 = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 PNG"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Messages the page logged to the console at level SEVERE (script
    /// errors, CSP violations): none is expected.
    pub async fn severe_console(&self) -> Vec<String> {
        let url = format!("{}{}", self.base, self.at("/se/log"));
        let Ok(resp) = self
            .http
            .post(url)
            .json(&json!({"type": "browser"}))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        else {
            return Vec::new();
        };
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        v["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and its Chromium) before the driver; a
        // blocking request, since drop cannot await.
        if !self.session.is_empty()
            && let Some(addr) = self.base.strip_prefix("http://")
            && let Ok(mut c) = std::net::TcpStream::connect(addr)
        {
            use std::io::{Read, Write};
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                c,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = c.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
