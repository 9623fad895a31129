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
    let server = crate::app::start(config).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
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
