//! The command line: `serve`, `check-config`, `api-keys ...`, the API
//! client commands (`sources`, `destinations`, `events`, `replay`,
//! `send-test-event`), `listen` and `events tail` (the live stream), the
//! `receive` test receiver, completions and man page.

pub mod listen;
pub mod output;
pub mod receive;
pub mod remote;
pub mod test_event;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigFile, LogFormat};
use crate::metrics::Metrics;
use crate::model::ids::ApiKeyId;
use crate::model::time::format_ms;
use crate::ops::{api_keys, Caller, OpError};
use crate::store::{Store, StoreError};
use output::outln;

/// `krafter --version`: the version, the git commit it was built from
/// ("unknown" outside a git checkout), the build date and cargo profile.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KRAFTER_BUILD_COMMIT"),
    ", built ",
    env!("KRAFTER_BUILD_DATE"),
    ", ",
    env!("KRAFTER_BUILD_PROFILE"),
    ")"
);

/// Krafter: a self-hosted webhook relay.
#[derive(Debug, Parser)]
#[command(name = "krafter", version = VERSION, about)]
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
    Serve(ServeArgs),
    /// Validate the configuration; print which file and data directory are
    /// in effect, then the configuration (secrets masked).
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
    /// Sources on the running server (API).
    Sources {
        #[command(subcommand)]
        command: remote::SourcesCommand,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Destinations of a source on the running server (API).
    Destinations {
        #[command(subcommand)]
        command: remote::DestinationsCommand,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Events of a source on the running server (API).
    Events {
        #[command(subcommand)]
        command: remote::EventsCommand,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Replay an event to its destinations (API).
    Replay {
        #[command(flatten)]
        args: remote::ReplayArgs,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Send a sample event, signed as the source's provider would, to the
    /// source's ingest URL; prints the event id.
    SendTestEvent {
        #[command(flatten)]
        args: test_event::SendTestEventArgs,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Forward a source's live events to a local URL, signed with Standard
    /// Webhooks (SPEC §14), until Ctrl-C.
    Listen {
        #[command(flatten)]
        args: listen::ListenArgs,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// A local receiver that prints each delivery (and checks its signature).
    Receive(receive::ReceiveArgs),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// Arguments of `serve`. Precedence: flag > environment > file > default.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `server.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory (overrides `storage.path`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Once serving (`/healthz` answers), write the bound address
    /// (`127.0.0.1:PORT` and a newline) to this file, replacing it whole;
    /// removed on a graceful stop. With `--listen 127.0.0.1:0` the system
    /// picks a free port, and a script or test reads it here.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
}

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup; must not exist.
    #[arg(long)]
    pub to: PathBuf,
    /// The server's base URL (default: `$KRAFTER_URL`, else derived from
    /// `server.listen`).
    #[arg(long, env = "KRAFTER_URL")]
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
    match cli.command {
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut command(), "krafter", &mut buf);
            output::out(&String::from_utf8_lossy(&buf));
            return Ok(());
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(command())
                .render(&mut buf)
                .context("rendering the man page")?;
            output::out(&String::from_utf8_lossy(&buf));
            return Ok(());
        }
        Command::Receive(args) => return runtime()?.block_on(receive::run(args)),
        Command::Sources { command, remote } => {
            return remote_command(cli.config.as_deref(), &remote, |api| async move {
                remote::sources(&api, command).await
            })
        }
        Command::Destinations { command, remote } => {
            return remote_command(cli.config.as_deref(), &remote, |api| async move {
                remote::destinations(&api, command).await
            })
        }
        Command::Events { command, remote } => {
            return remote_command(cli.config.as_deref(), &remote, |api| async move {
                remote::events(&api, command).await
            })
        }
        Command::Replay { args, remote } => {
            return remote_command(cli.config.as_deref(), &remote, |api| async move {
                remote::replay(&api, args).await
            })
        }
        Command::SendTestEvent { args, remote } => {
            return remote_command(cli.config.as_deref(), &remote, |api| async move {
                test_event::run(&api, args).await
            })
        }
        Command::Listen { args, remote } => {
            return remote_command(cli.config.as_deref(), &remote, |api| async move {
                listen::listen(&api, args).await
            })
        }
        _ => {}
    }
    let located = Config::locate(cli.config.as_deref())?;
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::CheckConfig => {
            outln!("# configuration is valid");
            outln!("# config file: {}", located.describe());
            outln!("# data directory: {}", shown_path(&config.storage.path));
            warn_about_location(&located, &config, |line| eprintln!("warning: {line}"));
            output::out(&config.to_masked_toml());
            Ok(())
        }
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            // A data directory named on purpose (flag, or a file named by
            // --config/$KRAFTER_CONFIG, as the packaged unit does) is no
            // surprise; only implicit choices are logged as warnings.
            let chosen = args.data_dir.is_some()
                || matches!(located, ConfigFile::Flag(_) | ConfigFile::Env(_));
            if let Some(dir) = args.data_dir {
                config.storage.path = dir;
            }
            init_logging(&config);
            tracing::info!(
                config = %located.describe(),
                data_dir = %shown_path(&config.storage.path),
                "configuration"
            );
            warn_about_location(&located, &config, |line| {
                if chosen {
                    tracing::info!("{line}");
                } else {
                    tracing::warn!("{line}");
                }
            });
            runtime()?.block_on(serve(config, args.addr_file))
        }
        Command::ApiKeys(cmd) => runtime()?.block_on(api_keys_command(config, cmd)),
        Command::Backup(args) => runtime()?.block_on(backup(config, args)),
        Command::Restore { from } => {
            let rows = Store::restore(&from, &config.storage.path)?;
            eprintln!(
                "restored {rows} rows from {} into {}; start the server with this configuration",
                from.display(),
                config.storage.path.display()
            );
            Ok(())
        }
        // Handled above, before any configuration is read.
        Command::Completions { .. }
        | Command::Man
        | Command::Receive(_)
        | Command::Sources { .. }
        | Command::Destinations { .. }
        | Command::Events { .. }
        | Command::Replay { .. }
        | Command::SendTestEvent { .. }
        | Command::Listen { .. } => Ok(()),
    }
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// A path as given plus, when relative, where it resolves to.
fn shown_path(path: &Path) -> String {
    if path.is_absolute() {
        return path.display().to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => {
            let clean: PathBuf = path
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            format!("{} ({})", path.display(), cwd.join(clean).display())
        }
        Err(_) => path.display().to_string(),
    }
}

/// Says loudly when the data directory is not the default `./krafter-data`,
/// or a system-wide file was picked up without being asked for (a checkout
/// on a machine with the package installed would otherwise silently use
/// `/etc/krafter/krafter.toml` and `/var/lib/krafter`).
fn warn_about_location(located: &ConfigFile, config: &Config, mut warn: impl FnMut(String)) {
    if let ConfigFile::System(path) = located {
        warn(format!(
            "using {} because no --config, ${} or ./{} was given; pass --config to choose another file",
            path.display(),
            crate::config::CONFIG_ENV,
            crate::config::LOCAL_CONFIG
        ));
    }
    let default = crate::config::StorageConfig::default().path;
    let normal = |p: &Path| {
        p.components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect::<PathBuf>()
    };
    if normal(&config.storage.path) != normal(&default) {
        warn(format!(
            "the data directory is {}, not the default {}",
            shown_path(&config.storage.path),
            default.display()
        ));
    }
}

/// Runs an API client command: the configuration is read only for where
/// `admin.key` lives and the network settings, and a configuration that
/// does not load is no reason to fail (defaults are used).
fn remote_command<F, Fut>(
    config_path: Option<&Path>,
    remote: &remote::RemoteArgs,
    f: F,
) -> anyhow::Result<()>
where
    F: FnOnce(remote::Api) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = Config::load(config_path).unwrap_or_default();
    let rt = runtime()?;
    rt.block_on(async {
        let api = remote::Api::new(remote, &config.storage.path, &config.delivery)?;
        f(api).await
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: never ANSI escapes in files or journald.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn serve(config: Config, addr_file: Option<PathBuf>) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives as soon as `/healthz` answers
    // must stop the server gracefully, not kill it with the default action.
    let signals = Signals::install()?;
    // A file left by an earlier run must not be read as this run's address.
    if let Some(path) = &addr_file {
        remove_addr_file(path)?;
    }
    let server = crate::server::start(config).await?;
    if let Some(path) = &addr_file {
        if let Err(e) = write_addr_file(path, server.addr()) {
            server.shutdown().await;
            return Err(e);
        }
    }
    // systemd `Type=notify`: ready means the listener is open and the
    // bootstrap key written. A no-op outside systemd.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    signals.wait().await;
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.shutdown().await;
    if let Some(path) = &addr_file {
        if let Err(e) = remove_addr_file(path) {
            tracing::warn!(error = %e, "could not remove the address file");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes `addr` and a newline to `path` through a sibling temporary file
/// and a rename, so a reader never sees a partial address.
fn write_addr_file(path: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the address file {}", path.display()))
}

/// Removes the address file; one that is not there is fine.
fn remove_addr_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e)
                .context(format!("removing the address file {}", path.display())))
        }
        _ => Ok(()),
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
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
            let new = api_keys::create(store, &Caller::local_admin(), &args.name, &args.scopes)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created {} ({}); the key is shown only this once:",
                new.record.id, new.record.name
            );
            outln!("{}", new.key);
        }
        ApiKeysCommand::List => {
            let mut cursor = None;
            outln!(
                "{:<30}  {:<8}  {:<24}  {:<30}  NAME",
                "ID",
                "PREFIX",
                "CREATED",
                "SCOPES"
            );
            loop {
                let page = api_keys::list(store, &Caller::local_admin(), cursor, 250)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                for k in &page.items {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    outln!(
                        "{:<30}  {:<8}  {:<24}  {:<30}  {}",
                        k.id.to_string(),
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
            let Some(raw) = ApiKeyId::parse(&id) else {
                bail!("`{id}` is not an API key id (they look like key_01J...)");
            };
            match api_keys::revoke(store, &Caller::local_admin(), raw).await {
                Ok(()) => eprintln!("revoked {id}"),
                Err(OpError::NotFound(_)) => bail!("no API key {id}"),
                Err(e) => bail!("{e}"),
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
            let path = args.api_key_file.clone().unwrap_or_else(|| {
                config
                    .storage
                    .path
                    .join(crate::ops::api_keys::ADMIN_KEY_FILE)
            });
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
    let client = crate::delivery::client::build_with_body::<Empty<bytes::Bytes>>(
        &delivery,
        crate::delivery::resolve::Resolver::system(),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(located: ConfigFile, config: &Config) -> Vec<String> {
        let mut lines = Vec::new();
        warn_about_location(&located, config, |l| lines.push(l));
        lines
    }

    #[test]
    fn implicit_system_file_and_other_data_dir_are_warned_about() {
        let mut config = Config::default();
        assert!(warnings(ConfigFile::None, &config).is_empty());
        // `./krafter-data` and `krafter-data` are the same default.
        config.storage.path = PathBuf::from("krafter-data");
        assert!(warnings(ConfigFile::Local("krafter.toml".into()), &config).is_empty());

        config.storage.path = PathBuf::from("/var/lib/krafter");
        let lines = warnings(
            ConfigFile::System(PathBuf::from(crate::config::SYSTEM_CONFIG)),
            &config,
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("/etc/krafter/krafter.toml because no --config"));
        assert!(lines[1].contains("/var/lib/krafter, not the default ./krafter-data"));
    }

    #[test]
    fn version_carries_build_info() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains("(commit "));
        assert!(!env!("KRAFTER_BUILD_COMMIT").is_empty());
    }
}
