//! The server as an operator meets it: the real binary, its config, its
//! bootstrap key, TLS, signals and the offline CLI.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{krafter, TestServer};
use figment::providers::Format;
use krafter::config::Config;
use serde_json::json;

/// Starts `krafter serve` on a port the system picks, with its data in
/// `dir`; returns the child and its base URL once `/healthz` answers (the
/// server reports its address in a file only then).
fn spawn_binary(dir: &Path, extra_env: &[(&str, &str)]) -> (Child, String) {
    let data = dir.join("data");
    let addr_file = common::addr_file(&data);
    let mut cmd = krafter();
    cmd.arg("serve")
        .arg("--addr-file")
        .arg(&addr_file)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // env_clear dropped it: the test network guard.
        .env("KRAFTER_DELIVERY__LOOPBACK_ONLY", "true")
        .env("KRAFTER_SERVER__LISTEN", "127.0.0.1:0")
        .env("KRAFTER_STORAGE__PATH", &data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    common::database_env(&mut cmd, common::database_for(&data).as_deref());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn krafter");
    let base = common::served_base_blocking(&mut child, &addr_file);
    (child, base)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("krafter did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_bootstraps_an_admin_key_never_logs_it_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_binary(dir.path(), &[]);
    // Listening on port 0, it reported the port the system gave it, whole.
    let addr_file = common::addr_file(&dir.path().join("data"));
    let reported = std::fs::read_to_string(&addr_file).unwrap();
    let port: u16 = reported
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.strip_suffix('\n'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{reported:?}"));
    assert_ne!(port, 0);
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    let key_file = dir.path().join("data/admin.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(key.ends_with('\n'));
    let key = key.trim();
    assert!(key.starts_with("krf_") && key.len() >= 36, "{key}");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        common::blocking_get_status(&format!("{base}/readyz")).unwrap(),
        200
    );

    let started = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "slow shutdown");
    assert!(
        !addr_file.exists(),
        "a stopped server leaves no address file"
    );

    let mut logs = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        logs.push_str(&line.unwrap());
        logs.push('\n');
    }
    assert!(
        logs.contains("admin.key"),
        "the key's path is logged: {logs}"
    );
    assert!(!logs.contains(key), "the key itself must never be logged");
    assert!(
        logs.lines()
            .any(|l| l.contains("listening") && l.contains(&format!("127.0.0.1:{port}"))),
        "the bound address is logged: {logs}"
    );
}

#[test]
fn offline_cli_refuses_while_the_server_runs_and_manages_keys_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _base) = spawn_binary(dir.path(), &[]);
    let data = dir.path().join("data");
    let cli = |args: &[&str]| {
        let mut cli = krafter();
        cli.args(args)
            .current_dir(dir.path())
            .env("KRAFTER_STORAGE__PATH", &data);
        common::database_env(&mut cli, common::database_for(&data).as_deref());
        cli.output().expect("run cli")
    };
    // redb only: the file is locked by the running server (nodes share a
    // PostgreSQL database, so there the offline CLI has nothing to refuse).
    if !common::on_postgres() {
        let out = cli(&[
            "api-keys",
            "create",
            "--name",
            "ci",
            "--scope",
            "webhooks:read",
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("in use by a running Krafter server"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());

    let out = cli(&[
        "api-keys",
        "create",
        "--name",
        "ci",
        "--scope",
        "webhooks:read",
        "--scope",
        "webhooks:write",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("krf_"), "{key}");

    let out = cli(&["api-keys", "list"]);
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains(&key[..8]), "{listing}");
    assert!(!listing.contains(&key), "list must not print keys");
    let id = listing
        .lines()
        .find(|l| l.contains(" ci") && l.contains("webhooks:read,webhooks:write"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the new key is listed with its scopes")
        .to_string();

    let out = cli(&["api-keys", "create", "--name", "x", "--scope", "root"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope"));

    let out = cli(&["api-keys", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["api-keys", "revoke", &id]);
    assert!(!out.status.success());

    // The key made offline works once the server is back, and the revoked one does not exist.
    let (mut child, base) = spawn_binary(dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/api/v1/webhooks/sources"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 401, "the revoked key must not work");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn offline_key_works_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cli = krafter();
    cli.args([
        "api-keys",
        "create",
        "--name",
        "reader",
        "--scope",
        "webhooks:read",
    ])
    .current_dir(dir.path())
    .env("KRAFTER_STORAGE__PATH", &data);
    common::database_env(&mut cli, common::database_for(&data).as_deref());
    let out = cli.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // A key exists, so the first serve makes no bootstrap key.
    let (mut child, base) = spawn_binary(dir.path(), &[]);
    assert!(!dir.path().join("data/admin.key").exists());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (read, write) = rt.block_on(async {
        let c = reqwest::Client::new();
        let read = c
            .get(format!("{base}/api/v1/webhooks/sources"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status();
        let write = c
            .post(format!("{base}/api/v1/webhooks/sources"))
            .bearer_auth(&key)
            .json(&json!({"name": "x", "provider": "none"}))
            .send()
            .await
            .unwrap()
            .status();
        (read, write)
    });
    assert_eq!(read, 200);
    assert_eq!(write, 403);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn bad_configuration_fails_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)], file: Option<&str>| {
        let mut cmd = krafter();
        cmd.arg("check-config").current_dir(dir.path()).env_clear();
        if let Some(text) = file {
            std::fs::write(dir.path().join("krafter.toml"), text).unwrap();
        } else {
            let _ = std::fs::remove_file(dir.path().join("krafter.toml"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[("KRAFTER_DELIVERY__TIMEOUT", "soon")], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("delivery.timeout"));

    let out = run(
        &[],
        Some("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_port"));

    let out = run(&[("KRAFTER_SERVER__LISTN", "127.0.0.1:1")], None);
    assert!(!out.status.success(), "a misspelt env key is an error too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("listn"));

    // ./krafter.toml is found, the environment wins over it, and the
    // effective config is printed.
    let out = run(
        &[("KRAFTER_SERVER__MAX_BODY_BYTES", "777")],
        Some("[server]\nlisten = \"127.0.0.1:9999\"\nmax_body_bytes = 1\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("krafter.toml"), "{shown}");
    assert!(shown.contains("127.0.0.1:9999"), "{shown}");
    assert!(shown.contains("max_body_bytes = 777"), "{shown}");

    let out = krafter()
        .args(["--config", "/nonexistent/k.toml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/k.toml"));
}

#[test]
fn version_flag_prints_the_version() {
    let out = krafter().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
}

/// The example documents every key with its default: loading it gives the
/// defaults, and every key of the config struct appears in it (commented-out
/// keys count: they are the optional ones with no default).
#[test]
fn example_config_documents_every_key_with_its_default() {
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("krafter.toml.example");
    let text = std::fs::read_to_string(&example_path).unwrap();
    let loaded = Config::from_figment(
        figment::Figment::from(figment::providers::Serialized::defaults(Config::default()))
            .merge(figment::providers::Toml::file_exact(&example_path)),
    )
    .expect("the example loads");
    assert_eq!(
        loaded,
        Config::default(),
        "example values must equal the defaults"
    );

    // Every key of the struct, including optional ones that serialise as null.
    let mut keys = Vec::new();
    collect_keys(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut keys,
    );
    let mut optional = Vec::new();
    collect_optional(&mut optional);
    keys.extend(optional);
    assert!(keys.len() > 15, "walked the struct: {keys:?}");
    let mut section = String::new();
    let mut documented = std::collections::HashSet::new();
    for line in text.lines() {
        let l = line.trim().trim_start_matches('#').trim();
        if l.starts_with('[') && l.ends_with(']') {
            section = l.trim_matches(['[', ']']).to_string();
        } else if let Some((k, _)) = l.split_once(" = ") {
            documented.insert(format!("{section}.{}", k.trim()));
        }
    }
    for key in keys {
        assert!(
            documented.contains(&key),
            "{key} is missing from krafter.toml.example"
        );
    }
}

fn collect_keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_object() {
                collect_keys(&path, v, out);
            } else {
                out.push(path);
            }
        }
    }
}

/// Optional keys are null by default; set them to find their names.
fn collect_optional(out: &mut Vec<String>) {
    let mut c = Config::default();
    c.server.tls.cert_path = Some("x".into());
    c.server.tls.key_path = Some("x".into());
    c.delivery.extra_ca_path = Some("x".into());
    c.delivery.proxy_url = Some("x".into());
    c.storage.secrets_key_file = Some("x".into());
    c.telemetry.otlp_endpoint = Some("x".into());
    collect_keys("", &serde_json::to_value(c).unwrap(), out);
}

#[tokio::test]
async fn https_only_when_tls_is_configured() {
    let (server, cert_pem) = TestServer::start_tls(&["localhost", "127.0.0.1"]).await;
    let addr = server.server.as_ref().unwrap().addr();
    let ca = reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let https = format!("https://localhost:{}", addr.port());
    let resp = client
        .post(format!("{https}/api/v1/webhooks/sources"))
        .bearer_auth(&server.admin_key)
        .json(&json!({"name": "tls", "provider": "github", "signing_secret": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["data"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{body}"
    );

    // Plain HTTP on the TLS listener gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // A client that does not trust the certificate is refused.
    let untrusting = reqwest::Client::new()
        .get(format!("{https}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err());
}

#[tokio::test]
async fn data_survives_a_restart() {
    let server = TestServer::start().await;
    let source = server.create_source("kept").await;
    let id = source["id"].as_str().unwrap().to_string();
    let (read_id, read_key) = server.create_key(&["webhooks:read"]).await;
    let admin = server.admin_key.clone();
    let server = server.restart().await;
    assert_eq!(server.admin_key, admin, "no second bootstrap key");
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/webhooks/sources/{id}"),
            Some(&read_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "kept");
    assert_eq!(body["data"]["slug"], source["slug"]);
    let (status, _) = server.delete(&format!("/api/v1/api-keys/{read_id}")).await;
    assert_eq!(status, 204);
}
