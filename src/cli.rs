//! The command line: `serve`, `check-config`, `api-keys ...`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::api::api_keys::validate_key_request;
use crate::api::auth::generate_key;
use crate::clock::format_ms;
use crate::config::{Config, LogFormat};
use crate::metrics::Metrics;
use crate::store::ids::{format_id, parse_id, IdKind};
use crate::store::{api_keys, Store, StoreError};

/// Krafter: a self-hosted webhook relay.
#[derive(Debug, Parser)]
#[command(name = "krafter", version, about)]
pub struct Cli {
    /// Config file (default: $KRAFTER_CONFIG, ./krafter.toml, /etc/krafter/krafter.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve,
    /// Validate the configuration and print it (secrets masked).
    CheckConfig,
    /// Manage API keys while the server is stopped.
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
    /// Download a consistent backup from the running server (admin key).
    Backup(BackupArgs),
    /// Restore a backup into an empty data directory (server stopped).
    Restore {
        /// A file written by `krafter backup`.
        #[arg(long)]
        from: PathBuf,
    },
}

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup; must not exist.
    #[arg(long)]
    pub to: PathBuf,
    /// The server's base URL (default: derived from `server.listen`).
    #[arg(long)]
    pub url: Option<String>,
    /// File holding an admin API key (default: `<storage.path>/admin.key`);
    /// `$KRAFTER_API_KEY` takes precedence.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
}

/// `krafter api-keys ...`
#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key and print it once.
    Create(CreateKeyArgs),
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key's id (`key_...`).
        id: String,
    },
}

/// Arguments of `api-keys create`.
#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    #[arg(long)]
    pub name: String,
    /// `webhooks:read`, `webhooks:write` or `admin`; repeat for several.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::CheckConfig => {
            let file = Config::find_file(cli.config.as_deref())?;
            match file {
                Some(path) => println!("# configuration is valid (file: {})", path.display()),
                None => println!("# configuration is valid (no file; defaults and environment)"),
            }
            print!("{}", config.to_masked_toml());
            Ok(())
        }
        Command::Serve => {
            init_logging(&config);
            runtime()?.block_on(serve(config))
        }
        Command::ApiKeys(cmd) => runtime()?.block_on(api_keys_command(config, cmd)),
        Command::Backup(args) => runtime()?.block_on(backup(config, args)),
        Command::Restore { from } => {
            let rows = crate::store::backup::restore(&from, &config.storage.path)?;
            eprintln!(
                "restored {rows} rows from {} into {}; start the server with this configuration",
                from.display(),
                config.storage.path.display()
            );
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives once the listener answers
    // must mean a graceful stop, not the default action (death by signal).
    let stop = stop_signal()?;
    let server = crate::app::start(config).await?;
    // systemd `Type=notify`: ready means the listener is open and the
    // bootstrap key written. A no-op outside systemd.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    stop.await;
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the returned future
/// resolves at the first of either.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn api_keys_command(config: Config, cmd: ApiKeysCommand) -> anyhow::Result<()> {
    let store = match Store::open(&config.storage, Arc::new(Metrics::new())) {
        Ok(store) => store,
        Err(StoreError::InUse(path)) => bail!(
            "the database {path} is in use by a running Krafter server; \
             stop it first, or manage keys through the API (POST /api/v1/api-keys)"
        ),
        Err(e) => return Err(e.into()),
    };
    let result = run_key_command(&store, cmd).await;
    store.close().await;
    result
}

async fn run_key_command(store: &Store, cmd: ApiKeysCommand) -> anyhow::Result<()> {
    match cmd {
        ApiKeysCommand::Create(args) => {
            let scopes = validate_key_request(&args.name, &args.scopes)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let new = generate_key(args.name.trim(), scopes);
            let record = new.record.clone();
            store
                .write(move |txn| api_keys::insert(txn, &record))
                .await?;
            eprintln!(
                "created {} ({}); the key is shown only this once:",
                format_id(IdKind::ApiKey, new.record.id),
                new.record.name
            );
            println!("{}", new.key);
        }
        ApiKeysCommand::List => {
            let mut cursor = None;
            println!(
                "{:<30}  {:<8}  {:<24}  {:<30}  NAME",
                "ID", "PREFIX", "CREATED", "SCOPES"
            );
            loop {
                let page = store.read(|txn| api_keys::list(txn, cursor, 250))?;
                for k in &page.items {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    println!(
                        "{:<30}  {:<8}  {:<24}  {:<30}  {}",
                        format_id(IdKind::ApiKey, k.id),
                        k.prefix,
                        format_ms(k.created_at_ms),
                        scopes.join(","),
                        k.name
                    );
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        ApiKeysCommand::Revoke { id } => {
            let Some(raw) = parse_id(IdKind::ApiKey, &id) else {
                bail!("`{id}` is not an API key id (they look like key_01J...)");
            };
            match store.write(move |txn| api_keys::delete(txn, raw)).await {
                Ok(()) => eprintln!("revoked {id}"),
                Err(StoreError::NotFound) => bail!("no API key {id}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn backup(config: Config, args: BackupArgs) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Empty};
    use tokio::io::AsyncWriteExt;

    if args.to.exists() {
        bail!("{} already exists; choose a new file", args.to.display());
    }
    let key = match std::env::var("KRAFTER_API_KEY") {
        Ok(key) => key,
        Err(_) => {
            let path = args
                .api_key_file
                .clone()
                .unwrap_or_else(|| config.storage.path.join(crate::api::auth::ADMIN_KEY_FILE));
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading the API key from {} (or set KRAFTER_API_KEY)",
                    path.display()
                )
            })?
        }
    };
    let base = args.url.unwrap_or_else(|| {
        let mut addr = config.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if config.tls_enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    });
    let mut delivery = config.delivery.clone();
    delivery.allow_private_networks = true;
    let client = crate::delivery::client::build_with_body::<Empty<bytes::Bytes>>(&delivery)?;
    let request = http::Request::get(format!("{}/api/v1/backup", base.trim_end_matches('/')))
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", key.trim()),
        )
        .body(Empty::new())?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("connecting to {base}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let partial = args.to.with_extension("partial");
    // The backup holds the secrets key: only its owner may read it.
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut body = response.into_body();
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            file.write_all(data).await?;
            written += data.len() as u64;
        }
    }
    file.sync_all().await?;
    tokio::fs::rename(&partial, &args.to).await?;
    eprintln!(
        "wrote {} ({written} bytes); it holds the secrets key: keep it private",
        args.to.display()
    );
    Ok(())
}
