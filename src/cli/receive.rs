//! `krafter receive`: a tiny local receiver for trying Krafter out. Prints
//! each delivered request (method, path, the `webhook-*` and `krafter-*`
//! headers, body) and, with `--secret`, whether its Standard Webhooks
//! signature verifies, as the receiving app would check it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::output::outln;

/// Arguments of `receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The destination's signing secret (`whsec_...`): check each request's
    /// Standard Webhooks signature and answer 401 when it does not verify.
    #[arg(long, hide_env_values = true)]
    pub secret: Option<String>,
    /// Also append each request to this file as one JSON line
    /// (`method`, `path`, `headers`, `body`), e.g. for a verifier script.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

/// Largest body the receiver reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Standard Webhooks' timestamp tolerance.
const TOLERANCE_SECS: i64 = 300;

/// Checks a Standard Webhooks signature: any `v1,` signature in
/// `webhook-signature` over `{id}.{timestamp}.{body}`, timestamp within
/// five minutes. `Err` says why not.
pub fn verify(
    secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("no {name} header"))
    };
    let id = get("webhook-id")?;
    let timestamp = get("webhook-timestamp")?;
    let signatures = get("webhook-signature")?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_string())?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(format!("timestamp {ts} is more than 5 minutes from now"));
    }
    let key = crate::delivery::signer::secret_key(secret).map_err(|e| e.to_string())?;
    let expected = crate::delivery::signer::sign(&key, id, ts, body);
    let expected = expected.as_bytes();
    let ok = signatures.split(' ').any(|sig| {
        use subtle::ConstantTimeEq;
        sig.len() == expected.len() && bool::from(sig.as_bytes().ct_eq(expected))
    });
    if ok {
        Ok(())
    } else {
        Err("no signature matches this secret".to_string())
    }
}

struct Receiver {
    secret: Option<String>,
    save: Option<Mutex<tokio::fs::File>>,
}

/// Runs the receiver until Ctrl-C or SIGTERM.
pub async fn run(args: ReceiveArgs) -> anyhow::Result<()> {
    if let Some(secret) = &args.secret {
        crate::delivery::signer::secret_key(secret).map_err(|_| {
            anyhow::anyhow!("--secret must be a destination secret: `whsec_` followed by base64")
        })?;
    }
    let save = match &args.save {
        Some(path) => Some(Mutex::new(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!("warning: listening on {addr}, which is not a loopback address");
    }
    eprintln!(
        "receiving on http://{addr}/ ({}); Ctrl-C stops",
        if args.secret.is_some() {
            "checking Standard Webhooks signatures"
        } else {
            "not checking signatures: pass --secret whsec_..."
        }
    );
    let receiver = Arc::new(Receiver {
        secret: args.secret,
        save,
    });
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&receiver, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = accept => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

async fn handle(
    receiver: &Receiver,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or cut off\n",
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut text = format!(
        "--- {} {path}  at {}\n",
        parts.method,
        crate::model::time::format_ms(crate::model::time::now_ms())
    );
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if name.starts_with("webhook-")
            || name.starts_with("krafter-")
            || name == "content-type"
            || name == "user-agent"
        {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
    }
    text.push('\n');
    match std::str::from_utf8(&body) {
        Ok(s) => text.push_str(s),
        Err(_) => text.push_str(&format!("(binary, base64) {}", STANDARD.encode(&body))),
    }
    text.push('\n');
    let mut status = http::StatusCode::OK;
    if let Some(secret) = &receiver.secret {
        match verify(
            secret,
            &parts.headers,
            &body,
            crate::model::time::now_ms() / 1000,
        ) {
            Ok(()) => text.push_str("signature: verified (Standard Webhooks)\n"),
            Err(why) => {
                text.push_str(&format!("signature: NOT verified: {why}; answering 401\n"));
                status = http::StatusCode::UNAUTHORIZED;
            }
        }
    }
    outln!("{text}");
    if let Some(file) = &receiver.save {
        let mut headers = Map::new();
        for (name, value) in &parts.headers {
            headers.insert(
                name.as_str().to_string(),
                json!(String::from_utf8_lossy(value.as_bytes())),
            );
        }
        let mut line = json!({
            "method": parts.method.as_str(),
            "path": path,
            "headers": headers,
        });
        match std::str::from_utf8(&body) {
            Ok(s) => line["body"] = json!(s),
            Err(_) => line["body_base64"] = json!(STANDARD.encode(&body)),
        }
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let mut file = file.lock().await;
        if let Err(e) = file.write_all(&bytes).await.and(file.flush().await) {
            eprintln!("warning: could not save the request: {e}");
        }
    }
    respond(
        status,
        if status.is_success() {
            "ok\n"
        } else {
            "invalid signature\n"
        },
    )
}

fn respond(status: http::StatusCode, text: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
