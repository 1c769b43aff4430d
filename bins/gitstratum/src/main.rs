//! `gitstratum`: the one binary. Parses flags, loads configuration, installs logging and metrics,
//! and hands over to the library. Everything else lives in the crates.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gitstratum_server::{Config, ConfigLayer, LogFormat, Server};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod client_cmd;
mod workflow_cmd;

#[derive(Parser)]
#[command(name = "gitstratum", version, about = "Git hosting and CI/CD, built for CI-heavy traffic")]
struct Cli {
    /// Print results as JSON (for scripts) instead of tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: Git over HTTP, the REST API and metrics, on embedded storage by default.
    Serve(ServeArgs),
    /// Run CI jobs for a server (needs bubblewrap), until SIGTERM or Ctrl-C
    Runner(RunnerArgs),
    /// Check workflow files and preview what they run (works without a server).
    #[command(subcommand)]
    Workflow(workflow_cmd::WorkflowCommand),
    /// Administer an installation directly through its data directory or database.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Log in to a server and remember it (with a token, or a username and password)
    Login(client_cmd::LoginArgs),
    /// Forget the stored login (revoking it on the server when it was a password session)
    Logout,
    /// Show who the stored login is
    Whoami,
    /// Repositories
    #[command(subcommand)]
    Repo(client_cmd::RepoCommand),
    /// Personal access tokens
    #[command(subcommand)]
    Token(client_cmd::TokenCommand),
    /// Organizations and their members
    #[command(subcommand)]
    Org(client_cmd::OrgCommand),
    /// Accounts (site administrators)
    #[command(subcommand)]
    User(client_cmd::UserCommand),
    /// Workflow runs: list, view, watch, logs, cancel, rerun
    #[command(subcommand)]
    Run(client_cmd::RunCommand),
    /// Pull requests: create, list, view, checkout, merge, review, close, reopen
    #[command(subcommand)]
    Pr(client_cmd::PrCommand),
    /// Repository and organization webhooks, and their deliveries
    #[command(subcommand)]
    Webhook(client_cmd::WebhookCommand),
    /// CI secrets of a repository or organization (values are never shown)
    #[command(subcommand)]
    Secret(client_cmd::SecretCommand),
    /// CI variables of a repository or organization (the vars context)
    #[command(subcommand)]
    Variable(client_cmd::VariableCommand),
    /// CI usage of an organization (or, without one, of your own repositories): job minutes by
    /// runner labels and repository, log, artifact and cache storage
    Usage(client_cmd::UsageArgs),
    /// Artifacts of workflow runs: list, download (a zip), delete
    #[command(subcommand)]
    Artifact(client_cmd::ArtifactCommand),
    /// Your SSH public keys
    #[command(subcommand, name = "ssh-key")]
    SshKey(client_cmd::SshKeyCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Seal every CI secret under a new key and write it to DATA/secrets.key (stop the server first)
    RotateSecretsKey(StorageArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain; exits non-zero at the first entry that does not fit.
    Verify(StorageArgs),
}

/// Where the installation keeps its state (as for `serve`).
#[derive(Args)]
struct StorageArgs {
    /// Directory holding all state [default: ./gitstratum-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL for platform state [default: SQLite in the data directory]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:3000]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory holding all state [default: ./gitstratum-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Base URL clients reach this server at, for clone URLs [default: http://LISTEN]
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// PostgreSQL URL for platform state [default: SQLite in the data directory]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. "info" or "info,gitstratum_api=debug" [default: info]
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Do not run CI jobs in this process (leave them to external runners)
    #[arg(long)]
    no_embedded_runner: bool,
    /// Address to serve Git over SSH on, e.g. 0.0.0.0:2222, or "off" [default: off]
    #[arg(long, value_name = "ADDR")]
    ssh_listen: Option<String>,
}

#[derive(Args)]
struct RunnerArgs {
    /// The server's URL [default: $GITSTRATUM_SERVER]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// A token of scope ci:runner, or - to read it from stdin [default: $GITSTRATUM_RUNNER_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// This runner's name [default: the host name]
    #[arg(long)]
    name: Option<String>,
    /// Labels (comma-separated or repeated) [default: self-hosted,linux,x64,ubuntu-latest]
    #[arg(long = "labels", value_delimiter = ',')]
    labels: Vec<String>,
    /// Jobs this runner runs at once
    #[arg(long, default_value_t = 1)]
    capacity: usize,
    /// Where job workspaces are made [default: ./gitstratum-runner]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The network jobs see: isolated (loopback only) or host
    #[arg(long, default_value = "isolated")]
    network: String,
    /// Memory limit of each job, in MiB
    #[arg(long, default_value_t = 4096)]
    memory_mb: u64,
    /// Process limit of each job
    #[arg(long, default_value_t = 2048)]
    processes: u64,
}

/// Files and directories the process creates are readable by its own user only (0600 and 0700):
/// the data directory holds the database, Git data, logs and secrets, and a runner's work
/// directory holds jobs' workspaces. Set before any thread starts.
fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_) | Command::Runner(_) | Command::Admin(_)) {
        private_files();
    }
    let json = cli.json;
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Runner(args) => runner(args),
        Command::Workflow(command) => workflow_cmd::run(command, json),
        Command::Admin(AdminCommand::Audit(AuditCommand::Verify(args))) => audit_verify(args),
        Command::Admin(AdminCommand::RotateSecretsKey(args)) => rotate_secrets_key(args),
        Command::Login(args) => client_cmd::login(args, json),
        Command::Logout => client_cmd::logout(),
        Command::Whoami => client_cmd::whoami(json),
        Command::Repo(command) => client_cmd::repo(command, json),
        Command::Token(command) => client_cmd::token(command, json),
        Command::Org(command) => client_cmd::org(command, json),
        Command::User(command) => client_cmd::user(command, json),
        Command::SshKey(command) => client_cmd::ssh_key(command, json),
        Command::Webhook(command) => client_cmd::webhook(command, json),
        Command::Secret(command) => client_cmd::secret(command, json),
        Command::Variable(command) => client_cmd::variable(command, json),
        Command::Usage(args) => client_cmd::usage(args, json),
        Command::Artifact(command) => client_cmd::artifact(command, json),
        Command::Run(command) => client_cmd::run(command, json),
        Command::Pr(command) => client_cmd::pr(command, json),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the chain of causes on one line; a backtrace would only bury it.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let flags = ConfigLayer {
        listen: args.listen,
        ssh_listen: args.ssh_listen,
        data_dir: args.data_dir,
        public_url: args.public_url,
        database_url: args.database_url,
        log_format: args.log_format,
        log_level: args.log_level,
        embedded_runner: args.no_embedded_runner.then(|| "false".to_owned()),
        ..ConfigLayer::default()
    };
    let config = Config::load(flags, std::env::vars()).context("invalid configuration")?;
    init_logging(&config)?;
    let recorder = gitstratum_server::metrics_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (listen, ssh_listen) = (config.listen, config.ssh_listen);
        let mut server = Server::open(config, metrics).await?;
        if let Some(token) = &server.initial_admin_token {
            eprintln!(
                "\nCreated the 'admin' account. Its token is shown once here and saved in {}:\n\n    {}\n",
                server.data_dir().initial_admin_token_path().display(),
                token.expose()
            );
        }
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        if let Some(addr) = ssh_listen {
            let ssh = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for SSH on {addr}"))?;
            server = server.with_ssh_listener(ssh);
        }
        server.serve(listener, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    tracing::info!("shut down cleanly");
    Ok(())
}

fn audit_verify(args: StorageArgs) -> anyhow::Result<()> {
    let flags = ConfigLayer { data_dir: args.data_dir, database_url: args.database_url, ..ConfigLayer::default() };
    let config = Config::load(flags, std::env::vars()).context("invalid configuration")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let verification = runtime.block_on(async {
        let store = gitstratum_server::open_platform(&config).await?;
        let result = store.verify_audit().await;
        store.close().await;
        anyhow::Ok(result?)
    })?;
    match verification.broken_at {
        None => {
            println!("audit log intact: {} entries, hash chain verified", verification.entries);
            Ok(())
        }
        Some((id, why)) => anyhow::bail!("audit log broken at entry {id}: {why}"),
    }
}

/// Re-seals every secret under a fresh key (one transaction), then renames the new key over
/// `DATA/secrets.key`. The new key is written (synced) to `secrets.key.new` before anything is
/// re-sealed, so an interruption between the two steps leaves the key the secrets need on disk.
fn rotate_secrets_key(args: StorageArgs) -> anyhow::Result<()> {
    let flags = ConfigLayer { data_dir: args.data_dir, database_url: args.database_url, ..ConfigLayer::default() };
    let config = Config::load(flags, std::env::vars()).context("invalid configuration")?;
    if config.secrets_key.is_some() {
        anyhow::bail!(
            "the secrets key comes from GITSTRATUM_SECRETS_KEY: rotate it where it is kept (unset it to use DATA/secrets.key)"
        );
    }
    let old = gitstratum_server::secrets_key(&config)?;
    let new = gitstratum_platform::SecretKey::generate()?;
    let path = config.data_dir.join("secrets.key");
    let aside = config.data_dir.join("secrets.key.new");
    write_private(&aside, &format!("{}\n", new.to_hex()))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let count = runtime.block_on(async {
        let store = gitstratum_server::open_platform(&config).await?;
        let count = store.reseal_secrets(&old, &new).await;
        store.close().await;
        anyhow::Ok(count?)
    })?;
    std::fs::rename(&aside, &path).with_context(|| {
        format!("the secrets are sealed under the key in {}; move it to {} by hand", aside.display(), path.display())
    })?;
    println!("sealed {count} secrets under a new key in {}", path.display());
    Ok(())
}

/// Writes a file only its owner can read, synced.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    // The configuration has validated the filter's syntax already.
    let filter: Targets =
        config.log_level.parse().with_context(|| format!("invalid log level {:?}", config.log_level))?;
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true).with_current_span(true)).try_init(),
    }
    .context("cannot install the logger")
}

fn runner(args: RunnerArgs) -> anyhow::Result<()> {
    let server = args
        .server
        .or_else(|| std::env::var("GITSTRATUM_SERVER").ok())
        .context("name the server with --server URL (or GITSTRATUM_SERVER)")?;
    let token = match args.token.or_else(|| std::env::var("GITSTRATUM_RUNNER_TOKEN").ok()) {
        Some(t) if t == "-" => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the token from stdin")?;
            line.trim().to_owned()
        }
        Some(t) => t,
        None => anyhow::bail!("give a ci:runner token with --token (or GITSTRATUM_RUNNER_TOKEN)"),
    };
    let labels = if args.labels.is_empty() {
        gitstratum_runner::DEFAULT_LABELS.map(str::to_owned).to_vec()
    } else {
        args.labels
    };
    let name = args.name.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "runner".to_owned())
    });
    let config = gitstratum_runner::RunnerConfig {
        server,
        token,
        name,
        labels,
        work_dir: args.work_dir.unwrap_or_else(|| PathBuf::from("./gitstratum-runner")),
        network: args.network.parse().map_err(anyhow::Error::msg)?,
        limits: gitstratum_runner::Limits {
            memory_bytes: args.memory_mb.max(1) << 20,
            processes: args.processes.max(1),
        },
        capacity: args.capacity.clamp(1, 64),
        on_registered: None,
    };
    let filter = Targets::new().with_default(tracing::Level::INFO);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry().with(filter).with(fmt).try_init().context("cannot install the logger")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let http = gitstratum_server::http::client()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(());
        });
        gitstratum_runner::run(config, http, stopped).await?;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
    }
}
