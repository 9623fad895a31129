//! The command line as a new user meets it: the real `krafter` binary, its
//! configuration, its errors, its output through pipes, and the API client
//! commands against a real server on 127.0.0.1.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{hmac_sha256, krafter, TestServer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `krafter` in `dir` with only PATH and the network guard from the
/// parent environment, plus `env`.
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = krafter();
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KRAFTER_DELIVERY__LOOPBACK_ONLY", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run krafter")
}

fn stop(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// `KRAFTER_API_KEY`, `KRAFTER_URL` and other single-underscore names are
/// the CLI's, never config keys: `check-config`, `serve` and `backup` work
/// with them set (they used to fail with "unknown field api_key").
#[test]
fn cli_variables_never_break_check_config_serve_or_backup() {
    let dir = tempfile::tempdir().unwrap();
    let noise = [
        ("KRAFTER_API_KEY", "krf_not_a_real_key_at_all_000000000000"),
        ("KRAFTER_URL", "http://127.0.0.1:1"),
        ("KRAFTER_SOMETHING", "x"),
    ];
    let out = run_in(dir.path(), &["check-config"], &noise);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut env = noise.to_vec();
    env.push(("KRAFTER_SERVER__LISTEN", "127.0.0.1:0"));
    let mut child = krafter()
        .args(["serve", "--addr-file", "addr"])
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = common::served_base_blocking(&mut child, &dir.path().join("addr"));
    let key = std::fs::read_to_string(dir.path().join("krafter-data/admin.key")).unwrap();
    let out = run_in(
        dir.path(),
        &["backup", "--to", "b.krafter", "--url", &url],
        &[
            ("KRAFTER_API_KEY", key.trim()),
            ("KRAFTER_URL", "http://127.0.0.1:1"),
        ],
    );
    let log = stop(child);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = std::fs::metadata(dir.path().join("b.krafter")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!log.contains("api_key"), "{log}");
}

#[test]
fn check_config_names_the_file_and_data_directory_and_warns_off_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["check-config"], &[]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("config file: none: built-in defaults"),
        "{stdout}"
    );
    assert!(
        stdout.contains("data directory: ./krafter-data"),
        "{stdout}"
    );
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(
        dir.path().join("krafter.toml"),
        "[storage]\npath = \"/srv/elsewhere\"\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["check-config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("config file: krafter.toml (found in the working directory)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("data directory: /srv/elsewhere"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "warning: the data directory is /srv/elsewhere, not the default ./krafter-data"
        ),
        "{stderr}"
    );
}

/// `serve --listen --data-dir` win over the environment and the file.
#[test]
fn serve_flags_override_environment_and_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("krafter.toml"),
        "[server]\nlisten = \"127.0.0.1:1\"\n[storage]\npath = \"from-file\"\n",
    )
    .unwrap();
    let mut child = krafter()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "from-flag",
            "--addr-file",
            "addr",
        ])
        .current_dir(dir.path())
        .env("KRAFTER_SERVER__LISTEN", "127.0.0.1:2")
        .env("KRAFTER_STORAGE__PATH", "from-env")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = common::served_base_blocking(&mut child, &dir.path().join("addr"));
    // The flag's port 0, not the environment's 2 nor the file's 1.
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    assert!(port > 2, "{base}");
    assert_eq!(
        common::blocking_get_status(&format!("{base}/healthz")).unwrap(),
        200
    );
    assert!(dir.path().join("from-flag/admin.key").is_file());
    assert!(!dir.path().join("from-env").exists());
    assert!(!dir.path().join("from-file").exists());
    let log = stop(child);
    // Logs go to a pipe here: no ANSI colour codes.
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a non-terminal log: {log:?}"
    );
}

/// A port in use: one line, the cause once, and no bootstrap key written
/// for a server that never ran.
#[test]
fn port_in_use_is_one_clean_line_and_leaves_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_in(
        dir.path(),
        &["serve", "--listen", &addr, "--data-dir", "data"],
        &[],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0];
    assert!(line.contains(&addr), "{line}");
    let cause = std::io::Error::from_raw_os_error(98).to_string(); // EADDRINUSE on Linux
    assert_eq!(line.matches(&cause).count(), 1, "cause repeated: {line}");
    assert!(
        !dir.path().join("data/admin.key").exists(),
        "bootstrap key written by a failed start"
    );
}

/// `krafter ... | head -1` ends quietly: no panic, status 0. The reading
/// end is closed before the child writes, so every write meets EPIPE.
#[test]
fn closed_pipes_end_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["check-config"][..],
        &["completions", "bash"],
        &["man"],
        &["--help"],
    ] {
        let mut child = krafter()
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
    // And as a user types it.
    let script = format!(
        "'{}' check-config | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        common::binary_dir().join("krafter").display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("KRAFTER_DELIVERY__LOOPBACK_ONLY", "true")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).starts_with("# configuration is valid\nstatus=0"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn version_names_commit_date_and_profile() {
    let out = krafter().arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = text(&out.stdout);
    assert!(
        line.starts_with(&format!("krafter {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains(", built 20"), "{line}");
    assert!(line.contains("debug") || line.contains("release"), "{line}");
}

#[test]
fn completions_and_man_page_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = krafter().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        for word in ["send-test-event", "receive", "check-config", "destinations"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = krafter().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH krafter"),
        "{}",
        &page[..200.min(page.len())]
    );
    let lower = page.to_lowercase();
    assert!(
        lower.contains("self\\-hosted webhook relay")
            || lower.contains("self-hosted webhook relay"),
        "{page}"
    );
    let bad = krafter().args(["completions", "tcsh"]).output().unwrap();
    assert!(!bad.status.success());
}

/// Runs a CLI command against `server` (blocking; call from a blocking
/// thread); returns (success, stdout, stderr).
fn api_cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let out = krafter()
        .args(args)
        .env("KRAFTER_URL", &server.base)
        .env("KRAFTER_API_KEY", &server.admin_key)
        .output()
        .unwrap();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_commands_manage_sources_destinations_events_and_replay() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let s = &server;
    let (ok, src, err) = api_cli(
        s,
        &[
            "sources",
            "create",
            "--name",
            "CLI",
            "--provider",
            "none",
            "--print",
            "id",
        ],
    );
    assert!(ok, "{err}");
    let src = src.trim().to_string();
    assert!(src.starts_with("src_"), "{src}");
    let (status, body) = s.get(&format!("/api/v1/webhooks/sources/{src}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["name"], "CLI");

    let (ok, out, _) = api_cli(s, &["sources", "get", &src, "--json"]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], src.as_str());
    let (ok, out, _) = api_cli(s, &["sources", "list"]);
    assert!(ok && out.contains(&src) && out.contains("CLI"), "{out}");

    // Destination: the secret is printed once; a bad URL prints the API's
    // message and the field, exit 1.
    let (ok, out, err) = api_cli(
        s,
        &[
            "destinations",
            "create",
            "--source",
            &src,
            "--endpoint",
            "http://127.0.0.1:9/hook",
            "--filter",
            "order.*",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let dst: Value = serde_json::from_str(&out).unwrap();
    assert!(dst["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(dst["event_filter"], json!(["order.*"]));
    let dst_id = dst["id"].as_str().unwrap().to_string();
    let (ok, _, err) = api_cli(
        s,
        &[
            "destinations",
            "create",
            "--source",
            &src,
            "--endpoint",
            "ftp://nowhere.invalid/x",
        ],
    );
    assert!(!ok);
    let line = err.lines().find(|l| l.starts_with("error:")).expect(&err);
    assert!(line.contains("url") && line.contains("422"), "{line}");
    let (ok, out, _) = api_cli(s, &["destinations", "list", "--source", &src]);
    assert!(
        ok && out.contains(&dst_id) && out.contains("order.*"),
        "{out}"
    );

    // Events: list, get (with deliveries), replay to one destination.
    let slug = body["data"]["slug"].as_str().unwrap().to_string();
    let evt = s
        .ingest_json(&slug, &json!({"type": "order.created", "n": 1}))
        .await;
    let (ok, out, _) = api_cli(s, &["events", "list", "--source", &src]);
    assert!(
        ok && out.contains(&evt) && out.contains("order.created"),
        "{out}"
    );
    let (ok, out, _) = api_cli(s, &["events", "get", "--source", &src, &evt]);
    assert!(ok, "{out}");
    assert!(out.contains("\"n\":1") && out.contains(&dst_id), "{out}");
    let (ok, out, err) = api_cli(
        s,
        &[
            "replay",
            "--source",
            &src,
            "--event",
            &evt,
            "--destination",
            &dst_id,
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let replay: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(replay["count"], 1);
    let (status, deliveries) = s
        .get(&format!(
            "/api/v1/webhooks/sources/{src}/events/{evt}/deliveries"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(deliveries["data"].as_array().unwrap().len(), 2);

    // Unknown ids and a bad key: the envelope's message, exit 1.
    let (ok, _, err) = api_cli(s, &["events", "get", "--source", &src, "evt_nope"]);
    assert!(!ok && err.contains("404"), "{err}");
    let out = krafter()
        .args([
            "sources",
            "list",
            "--url",
            &s.base,
            "--api-key",
            "krf_wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    let (ok, _, _) = api_cli(s, &["destinations", "delete", "--source", &src, &dst_id]);
    assert!(ok);
    let (ok, _, _) = api_cli(s, &["sources", "delete", &src]);
    assert!(ok);
    let (status, _) = s.get(&format!("/api/v1/webhooks/sources/{src}")).await;
    assert_eq!(status, 404);
}

/// Without `--api-key`/`KRAFTER_API_KEY` the CLI uses the bootstrap key in
/// `./krafter-data/admin.key` and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_commands_fall_back_to_the_bootstrap_key_file() {
    let server = TestServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("krafter-data")).unwrap();
    std::fs::copy(
        server.data_dir().join("admin.key"),
        cwd.path().join("krafter-data/admin.key"),
    )
    .unwrap();
    let out = run_in(cwd.path(), &["sources", "list", "--url", &server.base], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("using the API key in ./krafter-data/admin.key"));
    std::fs::remove_file(cwd.path().join("krafter-data/admin.key")).unwrap();
    let out = run_in(cwd.path(), &["sources", "list", "--url", &server.base], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("KRAFTER_API_KEY"),
        "{}",
        text(&out.stderr)
    );
}

/// `send-test-event` signs as each provider would: the real server's
/// verifier (tested against the providers' SDK vectors) accepts it, stores
/// it with the requested type, and refuses a wrong secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_event_signs_as_the_provider_would() {
    let server = TestServer::start().await;
    let s = &server;
    let svix_secret = format!("whsec_{}", STANDARD.encode([7u8; 24]));
    let cases: Vec<(&str, Option<&str>, Value)> = vec![
        ("stripe", Some("whsec_stripe_plain_secret"), Value::Null),
        ("github", Some("gh-secret"), Value::Null),
        ("shopify", Some("shpss_secret"), Value::Null),
        ("slack", Some("slack-signing-secret"), Value::Null),
        ("standard_webhooks", Some(&svix_secret), Value::Null),
        ("svix", Some(&svix_secret), Value::Null),
        (
            "generic_hmac",
            Some("hex-secret"),
            json!({"signature_header": "X-Sig", "encoding": "hex", "prefix": "sha256=", "event_type_pointer": "/meta/kind"}),
        ),
        (
            "generic_hmac",
            Some("b64-secret"),
            json!({"signature_header": "X-Sig", "encoding": "base64", "event_type_header": "X-Kind", "event_id_header": "X-Id"}),
        ),
        ("none", None, Value::Null),
    ];
    for (provider, secret, config) in cases {
        let mut body = json!({"name": format!("t {provider}"), "provider": provider});
        if let Some(secret) = secret {
            body["signing_secret"] = json!(secret);
        }
        if !config.is_null() {
            body["provider_config"] = config;
        }
        let (status, created) = s.post("/api/v1/webhooks/sources", body).await;
        assert_eq!(status, 201, "{created}");
        let src = created["data"]["id"].as_str().unwrap().to_string();
        let mut args = vec![
            "send-test-event",
            "--source",
            &src,
            "--type",
            "order.shipped",
        ];
        if let Some(secret) = secret {
            args.extend(["--secret", secret]);
        }
        let (ok, out, err) = api_cli(s, &args);
        assert!(ok, "{provider}: {err}");
        let evt = out.trim();
        assert!(evt.starts_with("evt_"), "{provider}: {out}");
        let (status, event) = s
            .get(&format!("/api/v1/webhooks/sources/{src}/events/{evt}"))
            .await;
        assert_eq!(status, 200, "{provider}");
        assert_eq!(
            event["data"]["type"], "order.shipped",
            "{provider}: {event}"
        );
        if let Some(secret) = secret {
            let (ok, _, err) = api_cli(
                s,
                &[
                    "send-test-event",
                    "--source",
                    &src,
                    "--secret",
                    &wrong_secret(secret),
                ],
            );
            assert!(
                !ok && err.contains("401"),
                "{provider} with a wrong secret: {err}"
            );
            let (ok, _, err) = api_cli(s, &["send-test-event", "--source", &src]);
            assert!(
                !ok && err.contains("--secret"),
                "{provider} without a secret: {err}"
            );
        }
    }
    // A provider it cannot sign for is refused by name.
    let (status, created) = s
        .post(
            "/api/v1/webhooks/sources",
            json!({"name": "p", "provider": "paddle", "signing_secret": "pdl_secret"}),
        )
        .await;
    assert_eq!(status, 201);
    let src = created["data"]["id"].as_str().unwrap();
    let (ok, _, err) = api_cli(s, &["send-test-event", "--source", src, "--secret", "x"]);
    assert!(
        !ok && err.contains("paddle") && err.contains("stripe"),
        "{err}"
    );
}

/// A different secret of the same shape (a Standard Webhooks secret must
/// stay `whsec_` + base64 to be usable at all).
fn wrong_secret(secret: &str) -> String {
    if secret.starts_with("whsec_") && secret.len() > 20 {
        format!("whsec_{}", STANDARD.encode([9u8; 24]))
    } else {
        format!("{secret}x")
    }
}

/// `receive` prints each request and checks its Standard Webhooks
/// signature; signatures here are computed by the test itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_prints_requests_and_verifies_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let key = [42u8; 32];
    let secret = format!("whsec_{}", STANDARD.encode(key));
    let mut child = krafter()
        .args([
            "receive",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            &secret,
            "--save",
            "got.jsonl",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first line names the address it is listening on (port 0: the
    // system's choice), once it listens.
    let stderr = child.stderr.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let base = first
        .strip_prefix("receiving on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{first:?}"))
        .trim_end_matches('/')
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let client = reqwest::Client::new();
    let url = format!("{base}/hooks?x=1");
    let body = r#"{"type":"invoice.paid","n":7}"#;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = STANDARD.encode(hmac_sha256(
        &key,
        &[b"msg_1.", ts.as_bytes(), b".", body.as_bytes()],
    ));
    let send = |signature: String| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", &ts)
            .header("webhook-signature", signature)
            .header("krafter-event-type", "invoice.paid")
            .body(body)
            .send()
    };
    let good = send(format!("v1,bm90IHRoaXMgb25l v1,{sig}")).await.unwrap();
    assert_eq!(good.status(), 200);
    let bad = send("v1,bm90IHRoaXMgb25l".to_string()).await.unwrap();
    assert_eq!(bad.status(), 401);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("POST /hooks?x=1"), "{out}");
    assert!(out.contains("krafter-event-type: invoice.paid"), "{out}");
    assert!(out.contains(body), "{out}");
    assert!(out.contains("signature: verified"), "{out}");
    assert!(out.contains("signature: NOT verified"), "{out}");
    let saved = std::fs::read_to_string(dir.path().join("got.jsonl")).unwrap();
    let lines: Vec<Value> = saved
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["method"] == "POST")
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"], body);
    assert_eq!(lines[0]["headers"]["webhook-id"], "msg_1");
}
