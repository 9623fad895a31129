//! The dashboard end to end in a real browser: Debian's headless Chromium,
//! driven through chromedriver (WebDriver) by fantoccini, against a real
//! Krafter server, with a real HTTP receiver on 127.0.0.1 as destination.
//!
//! Chromium and chromedriver are system packages (`apt-get install
//! chromium chromium-driver`; `.ci/run` installs them). Without them this
//! test fails and says so: a dashboard that was never opened in a browser
//! is not tested.
//!
//! Screenshots of each main page go to `target/dashboard-screenshots/`.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::common::receiver::Receiver;
use crate::common::TestServer;

/// A chromedriver this test started, in its own process group so that the
/// browser it launches goes with it.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
    chromium: PathBuf,
    profile_dir: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Only the process group this test created for chromedriver (its
        // pid), which holds the browser it launched. Signalled through the
        // syscall, never a `kill` command line: a group id is a negative
        // number there, and a misparse can mean "every process".
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            if pgid > 1 {
                // SAFETY: kill(2) has no memory effects; -pgid names exactly
                // the group made by `process_group(0)` at spawn.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/bin"));
    dirs.push(PathBuf::from("/usr/lib/chromium"));
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Chromium and chromedriver, or `None` (after saying so loudly) when they
/// are not installed on a developer's machine. Under CI (`CI` set, as
/// `.ci/run` runs) their absence fails the test: CI always runs it.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let chromedriver = find_program(&["chromedriver"]);
    let chromium = find_program(&["chromium", "chromium-browser"]);
    if let (Some(driver), Some(browser)) = (chromedriver.clone(), chromium.clone()) {
        return Some((driver, browser));
    }
    let missing = format!(
        "the dashboard browser test needs Debian's `chromium` and `chromium-driver` packages \
         (missing: {}{}); install them once with `sudo apt-get install -y chromium chromium-driver` \
         (see README); .ci/run installs them",
        if chromium.is_none() { "chromium " } else { "" },
        if chromedriver.is_none() { "chromedriver" } else { "" },
    );
    assert!(std::env::var_os("CI").is_none(), "{missing}");
    // Straight to the terminal: cargo's capture would hide a println.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("\n*** SKIPPED the dashboard browser test: {missing} ***\n\n").as_bytes(),
    );
    None
}

/// Starts chromedriver on a port the system picks (`--port=0`): it says
/// which on stdout ("ChromeDriver was started successfully on port N."),
/// so no port is chosen before it binds and none can be taken in between.
async fn start_driver(chromedriver: PathBuf, chromium: PathBuf) -> Driver {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().expect("profile dir");
    let profile_dir = profile.path().to_path_buf();
    let mut child = Command::new(&chromedriver)
        .arg("--port=0")
        .arg("--allowed-ips=127.0.0.1")
        // No desktop session bus to find or start (keyring lookups).
        .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
        // Never the test's own stdin: the browser must not read from it.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromedriver starts");
    // Read stdout to its end (so chromedriver never blocks on a full pipe),
    // passing on the port it reports.
    let stdout = child.stdout.take().expect("chromedriver's stdout");
    let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
    std::thread::spawn(move || {
        const STARTED: &str = "ChromeDriver was started successfully on port ";
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split(STARTED).nth(1) {
                if let Ok(port) = rest.trim_end_matches('.').trim().parse() {
                    let _ = port_tx.send(port);
                }
            }
        }
    });
    let mut driver = Driver {
        child,
        url: String::new(),
        _profile: profile,
        chromium,
        profile_dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(port) = port_rx.try_recv() {
            break port;
        }
        if let Ok(Some(status)) = driver.child.try_wait() {
            panic!("chromedriver exited ({status}) before reporting its port");
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not report its port (\"{}\") within 30 s",
            "ChromeDriver was started successfully on port N"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(port, 0, "chromedriver reported port 0");
    driver.url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    loop {
        if let Ok(resp) = http.get(format!("{}/status", driver.url)).send().await {
            if resp.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer on {}",
            driver.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

async fn open_browser(driver: &Driver) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": driver.chromium.to_string_lossy(),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--password-store=basic",
                "--use-mock-keychain",
                "--disable-extensions",
                "--mute-audio",
                "--window-size=1280,900",
                format!("--user-data-dir={}", driver.profile_dir.display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("a JSON object literal")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("chromedriver opens a Chromium session")
}

/// The `webhook-id` of each request the receiver got at `path`, in order.
fn ids_to(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver
        .requests_to(path)
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or("").to_string())
        .collect()
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Saves a screenshot of the whole page (the window is stretched to the
/// document's height for the picture, then put back).
async fn shot(client: &Client, name: &str) -> Result<()> {
    let (width, height) = client.get_window_size().await.context("window size")?;
    let full = client
        .execute(
            "return Math.ceil(document.documentElement.scrollHeight);",
            vec![],
        )
        .await
        .context("page height")?
        .as_u64()
        .unwrap_or(height)
        .clamp(height, 4000);
    // Outer minus inner height: what the window adds around the page.
    let frame = height.saturating_sub(inner_height(client).await?);
    client
        .set_window_size(width as u32, (full + frame) as u32)
        .await
        .context("stretching the window")?;
    let png = client.screenshot().await.context("screenshot")?;
    client
        .set_window_size(width as u32, height as u32)
        .await
        .context("restoring the window")?;
    std::fs::write(shots_dir().join(format!("{name}.png")), png).context("saving screenshot")?;
    Ok(())
}

async fn inner_height(client: &Client) -> Result<u64> {
    Ok(client
        .execute("return window.innerHeight;", vec![])
        .await
        .context("inner height")?
        .as_u64()
        .unwrap_or(0))
}

/// Clicks something that loads a new page, and waits until that page has
/// replaced this one (a click returns before the navigation is done).
async fn click_nav(client: &Client, locator: Locator<'_>) -> Result<()> {
    client
        .execute("window.__krafterOldPage = true; return null;", vec![])
        .await
        .context("marking the current page")?;
    click(client, locator).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let loaded = client
            .execute(
                "return window.__krafterOldPage === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if matches!(loaded, Ok(serde_json::Value::Bool(true))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no new page loaded after clicking {locator:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> Result<String> {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waiting for `{css}`"))?
        .text()
        .await
        .with_context(|| format!("text of `{css}`"))
}

async fn click(client: &Client, locator: Locator<'_>) -> Result<()> {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(locator)
        .await
        .with_context(|| format!("finding {locator:?}"))?
        .click()
        .await
        .with_context(|| format!("clicking {locator:?}"))
}

async fn fill(client: &Client, css: &str, value: &str) -> Result<()> {
    let field = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("finding field `{css}`"))?;
    field.clear().await.ok();
    field
        .send_keys(value)
        .await
        .with_context(|| format!("typing into `{css}`"))
}

/// Reloads until the page source satisfies `ready` (deliveries happen in
/// the background).
async fn reload_until(client: &Client, what: &str, ready: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let source = client.source().await.context("page source")?;
        if ready(&source) {
            return Ok(source);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; page was:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.refresh().await.context("reload")?;
    }
}

/// How many deliveries on an event page have `status` (each delivery is
/// one element with `data-delivery` and `data-status`).
fn deliveries_with(page: &str, status: &str) -> usize {
    let want = format!("data-status=\"{status}\"");
    page.split('<')
        .filter_map(|tag| tag.split('>').next())
        .filter(|tag| tag.contains("data-delivery=") && tag.contains(&want))
        .count()
}

const STRIPE_SECRET: &str = "whsec_browser_test_secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_in_a_real_browser() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let receiver = Receiver::ok().await;
    let receiver_addr = receiver.addr();
    let Some((chromedriver, chromium)) = browser_programs() else {
        return;
    };
    let driver = start_driver(chromedriver, chromium).await;
    let client = open_browser(&driver).await;
    let outcome = flow(&client, &server, &receiver, receiver_addr).await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        panic!("browser flow failed: {e:#}");
    }
}

async fn flow(
    client: &Client,
    server: &TestServer,
    receiver: &Receiver,
    receiver_addr: SocketAddr,
) -> Result<()> {
    let base = &server.base;
    let http = reqwest::Client::new();

    // Any dashboard page without a session leads to the sign-in page.
    client.goto(&format!("{base}/dashboard")).await?;
    let heading = text_of(client, "h1").await?;
    ensure!(
        heading.contains("Sign in"),
        "expected sign-in, got {heading}"
    );
    ensure!(client.current_url().await?.path() == "/dashboard/sign-in");
    shot(client, "01-sign-in").await?;

    // Sign in with the bootstrap key, read from <storage>/admin.key.
    let admin_key = std::fs::read_to_string(server.data_dir().join("admin.key"))?
        .trim()
        .to_string();
    fill(client, "#key", &admin_key).await?;
    click_nav(client, Locator::Css("form button[type=submit]")).await?;
    let heading = text_of(client, "h1").await?;
    ensure!(heading == "Sources", "after sign-in: {heading}");
    let source = client.source().await?;
    ensure!(source.contains("No sources yet"), "empty state missing");

    // API keys: New API key, tick Webhooks → webhooks:write, see it once.
    click_nav(client, Locator::LinkText("API keys")).await?;
    click_nav(client, Locator::LinkText("New API key")).await?;
    fill(client, "#key-name", "ci").await?;
    click(
        client,
        Locator::Css("input[name=scopes][value='webhooks:write']"),
    )
    .await?;
    click_nav(
        client,
        Locator::XPath("//button[normalize-space()='Create key']"),
    )
    .await?;
    let new_key = text_of(client, "#new-key").await?;
    ensure!(new_key.starts_with("krf_"), "new key shown: {new_key}");
    shot(client, "02-api-key-created").await?;
    // The key works against the API, with exactly the scope picked.
    let status = http
        .get(format!("{base}/api/v1/webhooks/sources"))
        .bearer_auth(&new_key)
        .send()
        .await?
        .status();
    ensure!(status == 200, "new key reads sources: {status}");
    let status = http
        .get(format!("{base}/api/v1/api-keys"))
        .bearer_auth(&new_key)
        .send()
        .await?
        .status();
    ensure!(status == 403, "a webhooks:write key is not admin: {status}");
    // Shown once: the list no longer has it.
    client.goto(&format!("{base}/dashboard/api-keys")).await?;
    let page = client.source().await?;
    ensure!(!page.contains(&new_key), "the key must not be shown again");
    ensure!(page.contains("webhooks:write") && page.contains(&new_key[..8]));
    shot(client, "03-api-keys").await?;

    // A Stripe source: its page shows the ingest URL to paste into Stripe.
    click_nav(client, Locator::LinkText("Sources")).await?;
    click_nav(client, Locator::LinkText("Create your first source")).await?;
    fill(client, "#name", "Stripe production").await?;
    client
        .find(Locator::Css("#provider"))
        .await?
        .select_by_value("stripe")
        .await?;
    fill(client, "#signing_secret", STRIPE_SECRET).await?;
    click_nav(
        client,
        Locator::XPath("//button[normalize-space()='Create source']"),
    )
    .await?;
    let ingest_url = text_of(client, "#ingest-url").await?;
    ensure!(
        ingest_url.starts_with(&format!("{base}/in/wh_")),
        "ingest URL: {ingest_url}"
    );
    ensure!(client.source().await?.contains("No destinations yet"));

    // Two destinations on the in-test receiver; each secret shown once.
    for (path, filter) in [("/a", "invoice.*"), ("/b", "")] {
        fill(
            client,
            "#dest-url",
            &format!("http://{receiver_addr}{path}"),
        )
        .await?;
        fill(client, "#dest-filter", filter).await?;
        click_nav(
            client,
            Locator::XPath("//button[normalize-space()='Add destination']"),
        )
        .await?;
        let secret = text_of(client, "#new-secret").await?;
        ensure!(secret.starts_with("whsec_"), "destination secret: {secret}");
        if path == "/b" {
            shot(client, "04-source-with-destinations").await?;
        }
    }
    let rows = client
        .find_all(Locator::Css("#destinations tbody tr"))
        .await?;
    ensure!(
        rows.len() == 2,
        "two destinations listed, got {}",
        rows.len()
    );

    // A signed Stripe event, sent by "Stripe" (this test) to the ingest URL.
    let body = br#"{"id":"evt_1BrowserTest","type":"invoice.paid","data":{"object":{"id":"in_1","amount_paid":4200}}}"#;
    let resp = http
        .post(&ingest_url)
        .header("content-type", "application/json")
        .header(
            "Stripe-Signature",
            common::stripe_signature(STRIPE_SECRET, body),
        )
        .body(body.to_vec())
        .send()
        .await?;
    ensure!(resp.status() == 200, "ingest answered {}", resp.status());

    // The events list shows it, delivered to both destinations.
    click_nav(client, Locator::LinkText("Events")).await?;
    reload_until(client, "both deliveries to succeed", |page| {
        page.contains("invoice.paid") && page.contains("2 <span class=\"pill pill-ok\"")
    })
    .await?;
    shot(client, "05-events").await?;

    // The event page: headers, body, both deliveries with their attempt.
    click_nav(client, Locator::Css("#events tbody a")).await?;
    let page = reload_until(client, "the event page", |page| {
        deliveries_with(page, "succeeded") == 2
    })
    .await?;
    ensure!(page.contains("HTTP 200"), "attempt status code shown");
    ensure!(page.contains("stripe-signature"), "headers shown");
    ensure!(page.contains("amount_paid"), "body shown");

    // Replay to one chosen destination (/b) only.
    click(
        client,
        Locator::XPath("//label[contains(., '/b')]/input[@name='destination_ids']"),
    )
    .await?;
    click_nav(client, Locator::Css("button[name=mode][value=chosen]")).await?;
    let notice = text_of(client, ".notice").await?;
    ensure!(
        notice.contains("queued to 1 destination"),
        "replay notice: {notice}"
    );
    reload_until(client, "the replayed delivery to succeed", |page| {
        deliveries_with(page, "succeeded") == 3
    })
    .await?;
    shot(client, "06-event-replayed").await?;
    // The receiver saw one delivery at /a and two (same webhook-id) at /b.
    let (to_a, to_b) = (ids_to(receiver, "/a"), ids_to(receiver, "/b"));
    ensure!(to_a.len() == 1, "deliveries to /a: {to_a:?}");
    ensure!(
        to_b.len() == 2 && to_b[0] == to_b[1],
        "deliveries to /b: {to_b:?}"
    );

    // The same page on a phone-sized screen.
    client.set_window_size(390, 844).await?;
    client.refresh().await?;
    shot(client, "07-event-narrow").await?;
    client.set_window_size(1280, 900).await?;

    // All events: the search box finds the event by Stripe's own id.
    click_nav(client, Locator::LinkText("All events")).await?;
    ensure!(text_of(client, "h1").await? == "All events");
    fill(client, "#q", "evt_1BrowserTest").await?;
    click_nav(client, Locator::XPath("//button[normalize-space()='Find']")).await?;
    let rows = client
        .find_all(Locator::Css("#all-events tbody tr"))
        .await?;
    ensure!(rows.len() == 1, "the search found {} rows", rows.len());
    shot(client, "07b-all-events-search").await?;

    // Send a test event from the source page: Krafter signs its delivery
    // to both destinations (no Stripe secret needed on the client side).
    click_nav(client, Locator::LinkText("Sources")).await?;
    click_nav(client, Locator::LinkText("Stripe production")).await?;
    click_nav(
        client,
        Locator::XPath("//button[normalize-space()='Send a test event']"),
    )
    .await?;
    let notice = text_of(client, ".notice").await?;
    ensure!(
        notice.contains("Test event stored"),
        "test event notice: {notice}"
    );
    reload_until(client, "the test event to be delivered", |page| {
        page.contains("krafter.test") && deliveries_with(page, "succeeded") == 2
    })
    .await?;
    ensure!(ids_to(receiver, "/a").len() == 2, "test event at /a");

    // Sign out; the old session no longer opens pages.
    click_nav(
        client,
        Locator::XPath("//button[normalize-space()='Sign out']"),
    )
    .await?;
    let notice = text_of(client, ".notice").await?;
    ensure!(notice.contains("signed out"), "sign-out notice: {notice}");
    client.goto(&format!("{base}/dashboard/sources")).await?;
    ensure!(client.current_url().await?.path() == "/dashboard/sign-in");

    // Signed in with the webhooks:write key: sources yes, API keys no.
    fill(client, "#key", &new_key).await?;
    click_nav(client, Locator::Css("form button[type=submit]")).await?;
    ensure!(text_of(client, "h1").await? == "Sources");
    let links = client.find_all(Locator::LinkText("API keys")).await?;
    ensure!(links.is_empty(), "a non-admin key sees no API keys link");
    ensure!(client.source().await?.contains("Stripe production"));
    shot(client, "08-sources").await?;
    Ok(())
}
