//! The client side of the CLI: `login`, `logout`, `whoami`, `repo`, `token`, `org`, `user`. Each
//! command is one or two calls to the REST API; the server and token come from `login` (stored in
//! the user's config directory, mode 0600) or from `GITSTRATUM_SERVER` / `GITSTRATUM_TOKEN`.
//!
//! Output is a table for people and JSON with `--json`; a failure prints the server's message and
//! error code and exits non-zero.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Args)]
pub struct LoginArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:3000
    #[arg(long, value_name = "URL")]
    server: String,
    /// Log in with an existing token instead of a password (`-` reads it from stdin)
    #[arg(long, value_name = "TOKEN", conflicts_with = "username")]
    token: Option<String>,
    /// Log in with this username; the password is read from stdin
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
}

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create a repository (under your account, or `--owner` an organization you belong to)
    Create {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        private: bool,
        /// One line saying what it is
        #[arg(long)]
        description: Option<String>,
    },
    /// Repositories you have a role on
    List,
    /// Show one repository
    View { repo: String },
    /// Fork a repository (OWNER/NAME) into your account or `--org` an organization you belong to;
    /// its CI starts switched off
    Fork {
        repo: String,
        #[arg(long)]
        org: Option<String>,
        /// The fork's name (default the repository's)
        #[arg(long)]
        name: Option<String>,
        /// Copy only the default branch
        #[arg(long)]
        default_branch_only: bool,
    },
    /// Delete a repository and all its Git data
    Delete {
        repo: String,
        /// Confirm: deletion cannot be undone
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once
    Create {
        name: String,
        /// repo:read, repo:write, repo:admin, admin or ci:runner (repeatable)
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
    /// Your tokens
    List,
    /// Revoke a token by id; it stops working at once
    Revoke { id: i64 },
}

#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an organization; you become its owner
    Create { name: String },
    /// Your organizations
    List,
    /// Members of an organization
    #[command(subcommand)]
    Member(MemberCommand),
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Add a member or change their role
    Add {
        org: String,
        user: String,
        #[arg(long, default_value = "member", value_parser = ["member", "owner"])]
        role: String,
    },
    /// Remove a member
    Remove { org: String, user: String },
    /// List members
    List { org: String },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account (site administrators)
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
        /// Read a password for the account from stdin, so the user can log in
        #[arg(long)]
        password_stdin: bool,
    },
    /// Suspend a user: its tokens, sessions, Git access and CI jobs stop at once (site administrators)
    Suspend { name: String },
    /// Lift a user's suspension (site administrators)
    Unsuspend { name: String },
    /// Delete a user; its repositories go to --transfer-to, or are deleted (site administrators)
    Delete {
        name: String,
        #[arg(long)]
        transfer_to: Option<String>,
    },
    /// A user's tokens (site administrators)
    Tokens { name: String },
    /// Revoke a user's token (site administrators)
    RevokeToken { name: String, id: i64 },
}

#[derive(Subcommand)]
pub enum SshKeyCommand {
    /// Add a public key (a .pub file, or `-` for stdin)
    Add {
        file: PathBuf,
        #[arg(long)]
        title: Option<String>,
    },
    /// Your keys with their fingerprints
    List,
    /// Remove a key by id
    Remove { id: i64 },
}

/// Workflow runs.
#[derive(Subcommand)]
pub enum RunCommand {
    /// A repository's runs, newest first
    List {
        repo: String,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Only runs with this status (queued, in_progress, completed) or conclusion (success, failure, cancelled, …)
        #[arg(long)]
        status: Option<String>,
    },
    /// A run with its jobs and steps (with durations) and their annotations
    View { id: i64 },
    /// Follow a run until it completes (exits non-zero unless it succeeded)
    Watch { id: i64 },
    /// The logs of a run's jobs (or of one job, by its key); --follow streams them as they are written
    Logs {
        id: i64,
        #[arg(long, value_name = "KEY")]
        job: Option<String>,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a run
    Cancel { id: i64 },
    /// Run a completed run again (every job, or with --failed only the failed ones and what needs them)
    Rerun {
        id: i64,
        #[arg(long)]
        failed: bool,
    },
}

/// Webhooks belong to a repository (`OWNER/REPO`) or to an organization (`ORG`, no slash: such a
/// hook hears every repository of the organization).
#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Add a webhook to a repository (OWNER/REPO) or an organization (ORG)
    Create {
        target: String,
        #[arg(long)]
        url: String,
        /// Event to send: push, repository, workflow_run, workflow_job or * (repeatable; default push)
        #[arg(long = "event", value_name = "EVENT")]
        events: Vec<String>,
        /// Read a secret from stdin; deliveries are then signed (X-Hub-Signature-256)
        #[arg(long)]
        secret_stdin: bool,
    },
    /// The webhooks of a repository (OWNER/REPO) or an organization (ORG)
    List { target: String },
    /// Remove a webhook
    Delete { target: String, id: i64 },
    /// Recent deliveries of a webhook, with their response codes
    Deliveries { target: String, id: i64 },
    /// Send a delivery again
    Redeliver { target: String, id: i64, delivery: i64 },
}

/// Secrets and variables of a repository (`--repo OWNER/REPO`) or an organization (`--org ORG`).
#[derive(clap::Args)]
pub struct SecretScope {
    /// The repository (OWNER/REPO)
    #[arg(long, value_name = "OWNER/REPO", conflicts_with = "org", required_unless_present = "org")]
    repo: Option<String>,
    /// The organization
    #[arg(long, value_name = "ORG")]
    org: Option<String>,
}

impl SecretScope {
    /// The API path of the scope's `what` (`secrets`, `variables`).
    fn path(&self, what: &str) -> anyhow::Result<String> {
        match (&self.repo, &self.org) {
            (Some(repo), _) => {
                let (owner, name) = split_repo(repo)?;
                Ok(format!("/repos/{owner}/{name}/{what}"))
            }
            (None, Some(org)) => Ok(format!("/orgs/{org}/{what}")),
            (None, None) => bail!("name a repository with --repo OWNER/REPO or an organization with --org ORG"),
        }
    }
}

/// CI secrets: values go in (from a file or stdin) and never come out.
#[derive(Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret; the value is read from --body-file or stdin
    Set {
        name: String,
        #[command(flatten)]
        scope: SecretScope,
        /// Read the value from this file (else from stdin)
        #[arg(long, value_name = "FILE")]
        body_file: Option<std::path::PathBuf>,
        /// Organization secrets: all, private or selected
        #[arg(long)]
        visibility: Option<String>,
        /// Organization secrets of visibility selected: the repositories (comma-separated names)
        #[arg(long = "repos", value_delimiter = ',')]
        repos: Vec<String>,
    },
    /// The secrets' names and dates
    List {
        #[command(flatten)]
        scope: SecretScope,
    },
    /// Delete a secret
    Delete {
        name: String,
        #[command(flatten)]
        scope: SecretScope,
    },
}

/// CI variables (the `vars` context).
#[derive(Subcommand)]
pub enum VariableCommand {
    /// Create or replace a variable
    Set {
        name: String,
        value: String,
        #[command(flatten)]
        scope: SecretScope,
    },
    /// The variables and their values
    List {
        #[command(flatten)]
        scope: SecretScope,
    },
    /// Delete a variable
    Delete {
        name: String,
        #[command(flatten)]
        scope: SecretScope,
    },
}

/// The API path of a target's hooks: `OWNER/REPO` is a repository, a single name an organization.
fn hooks_path(target: &str) -> anyhow::Result<String> {
    if target.contains('/') {
        let (owner, name) = split_repo(target)?;
        Ok(format!("/repos/{owner}/{name}/hooks"))
    } else if target.is_empty() {
        anyhow::bail!("name a repository as OWNER/REPO or an organization as ORG")
    } else {
        Ok(format!("/orgs/{target}/hooks"))
    }
}

/// What `login` stores.
#[derive(Serialize, Deserialize)]
struct Credentials {
    server: String,
    token: String,
    /// `session` (from a password; revoked by `logout`) or `token` (given; left alone).
    kind: String,
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?).join(".config")
        }
    };
    Ok(base.join("gitstratum").join("credentials.json"))
}

fn load_credentials() -> anyhow::Result<Option<Credentials>> {
    let path = credentials_path()?;
    match std::fs::read(&path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save_credentials(c: &Credentials) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = credentials_path()?;
    let dir = path.parent().context("credentials path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(&serde_json::to_vec_pretty(c)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A client bound to one server and (maybe) a token.
struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    fn new(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        let server = server.trim_end_matches('/').to_owned();
        if server.starts_with("https://") {
            bail!("this build of the CLI speaks plain HTTP only; use an http:// URL (TLS support is not built yet)");
        }
        if !server.starts_with("http://") {
            bail!("--server must be a URL such as http://127.0.0.1:3000");
        }
        Ok(Client { http: gitstratum_server::http::client()?, server, token })
    }

    /// From the environment (`GITSTRATUM_SERVER`, `GITSTRATUM_TOKEN`) or the stored login.
    fn from_config() -> anyhow::Result<Client> {
        let stored = load_credentials()?;
        let server = std::env::var("GITSTRATUM_SERVER").ok().or_else(|| stored.as_ref().map(|c| c.server.clone()));
        let token = std::env::var("GITSTRATUM_TOKEN").ok().or_else(|| stored.map(|c| c.token));
        let server = server.context("not logged in: run `gitstratum login --server URL` or set GITSTRATUM_SERVER")?;
        Client::new(&server, token)
    }

    /// Prints a job's log as it is written (its SSE stream), until the job ends; returns its
    /// conclusion.
    async fn follow_log(&self, job: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        let req = self.request(reqwest::Method::GET, &format!("/jobs/{job}/logs/stream"));
        let mut resp = req.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        if !resp.status().is_success() {
            bail!("the server refused the log stream (HTTP {})", resp.status().as_u16());
        }
        let mut pending = String::new();
        let mut event = String::new();
        let mut data: Vec<String> = Vec::new();
        while let Some(chunk) = resp.chunk().await.context("the log stream broke off")? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                let line = line.trim_end_matches('\n');
                if line.is_empty() {
                    // The end of an event.
                    if event == "end" {
                        return Ok(data.join("\n"));
                    }
                    if event == "log" {
                        let mut out = std::io::stdout().lock();
                        for l in &data {
                            writeln!(out, "{l}")?;
                        }
                        out.flush()?;
                    }
                    event.clear();
                    data.clear();
                } else if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push(value.to_owned());
                }
            }
        }
        Ok("unknown".to_owned())
    }

    /// A request to `path` under `/api/v1`, with the token when there is one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}/api/v1{path}", self.server));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// The error for a refused request: the server's message and code.
    fn refusal(status: reqwest::StatusCode, value: &Value) -> anyhow::Error {
        let message = value["error"]["message"].as_str().unwrap_or("request failed");
        let code = value["error"]["code"].as_str().unwrap_or("unknown");
        match value["error"]["field"].as_str() {
            Some(field) => anyhow::anyhow!("{message} (field {field}; {code}, HTTP {})", status.as_u16()),
            None => anyhow::anyhow!("{message} ({code}, HTTP {})", status.as_u16()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        let status = resp.status();
        let text = resp.text().await.context("cannot read the server's answer")?;
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok(value);
        }
        Err(Self::refusal(status, &value))
    }
}

fn read_secret_line(what: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{what}: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        bail!("no {what} given on stdin");
    }
    Ok(line)
}

/// Prints rows as aligned columns under a header.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

fn rows(list: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    list.as_array().map_or_else(Vec::new, |items| {
        items.iter().map(|item| fields.iter().map(|f| text(&item[*f])).collect()).collect()
    })
}

fn split_repo(repo: &str) -> anyhow::Result<(&str, &str)> {
    repo.split_once('/').filter(|(o, n)| !o.is_empty() && !n.is_empty()).context("name the repository as OWNER/NAME")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn login(args: LoginArgs, json_out: bool) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (token, kind) = match (&args.token, &args.username) {
            (Some(t), _) => {
                let token = if t == "-" { read_secret_line("token")? } else { t.clone() };
                (token, "token")
            }
            (None, Some(username)) => {
                let password = read_secret_line("password")?;
                let client = Client::new(&args.server, None)?;
                let session = client
                    .call(reqwest::Method::POST, "/session", Some(json!({"username": username, "password": password})))
                    .await?;
                (session["token"].as_str().context("the server sent no token")?.to_owned(), "session")
            }
            (None, None) => bail!("give --token TOKEN, or --username NAME with the password on stdin"),
        };
        let client = Client::new(&args.server, Some(token.clone()))?;
        let me =
            client.call(reqwest::Method::GET, "/user", None).await.context("the server refused these credentials")?;
        let path = save_credentials(&Credentials { server: client.server.clone(), token, kind: kind.into() })?;
        if json_out {
            print_json(&me)
        } else {
            println!("Logged in to {} as {} (credentials in {}).", client.server, text(&me["name"]), path.display());
            Ok(())
        }
    })
}

pub fn logout() -> anyhow::Result<()> {
    let Some(stored) = load_credentials()? else {
        println!("Not logged in.");
        return Ok(());
    };
    if stored.kind == "session" {
        let client = Client::new(&stored.server, Some(stored.token.clone()))?;
        if let Err(e) = runtime()?.block_on(client.call(reqwest::Method::DELETE, "/session", None)) {
            eprintln!("warning: could not revoke the session on the server: {e:#}");
        }
    }
    std::fs::remove_file(credentials_path()?)?;
    println!("Logged out of {}.", stored.server);
    Ok(())
}

pub fn whoami(json_out: bool) -> anyhow::Result<()> {
    let client = Client::from_config()?;
    let me = runtime()?.block_on(client.call(reqwest::Method::GET, "/user", None))?;
    if json_out {
        return print_json(&me);
    }
    let admin = if me["site_admin"] == true { ", site administrator" } else { "" };
    println!("{} on {} (token scopes: {}{admin})", text(&me["name"]), client.server, text(&me["scopes"]));
    Ok(())
}

pub fn repo(command: RepoCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            RepoCommand::Create { name, owner, private, description } => {
                let body = json!({"name": name, "owner": owner, "private": private, "description": description});
                let repo = client.call(Method::POST, "/repos", Some(body)).await?;
                if json_out {
                    return print_json(&repo);
                }
                println!(
                    "Created {} ({}). Clone URL: {}",
                    text(&repo["full_name"]),
                    visibility(&repo),
                    text(&repo["clone_url"])
                );
            }
            RepoCommand::List => {
                let list = client.call(Method::GET, "/user/repos", None).await?;
                if json_out {
                    return print_json(&list);
                }
                let rows = list.as_array().map_or_else(Vec::new, |items| {
                    items
                        .iter()
                        .map(|r| {
                            vec![
                                text(&r["full_name"]),
                                visibility(r).into(),
                                text(&r["default_branch"]),
                                text(&r["clone_url"]),
                            ]
                        })
                        .collect()
                });
                table(&["name", "visibility", "default branch", "clone url"], rows);
            }
            RepoCommand::View { repo } => {
                let (owner, name) = split_repo(&repo)?;
                let repo = client.call(Method::GET, &format!("/repos/{owner}/{name}"), None).await?;
                if json_out {
                    return print_json(&repo);
                }
                for (label, key) in [
                    ("name", "full_name"),
                    ("default branch", "default_branch"),
                    ("clone url", "clone_url"),
                    ("created", "created_at"),
                ] {
                    println!("{label:<15} {}", text(&repo[key]));
                }
                println!("{:<15} {}", "visibility", visibility(&repo));
                if let Some(description) = repo["description"].as_str() {
                    println!("{:<15} {description}", "description");
                }
                if let Some(parent) = repo["parent"]["full_name"].as_str() {
                    println!("{:<15} {parent}", "forked from");
                } else if repo["fork"] == true {
                    println!("{:<15} (a repository since deleted)", "forked from");
                }
            }
            RepoCommand::Fork { repo, org, name, default_branch_only } => {
                let (owner, repo_name) = split_repo(&repo)?;
                let body = json!({"organization": org, "name": name, "default_branch_only": default_branch_only});
                let fork = client.call(Method::POST, &format!("/repos/{owner}/{repo_name}/forks"), Some(body)).await?;
                if json_out {
                    return print_json(&fork);
                }
                println!(
                    "Forked {owner}/{repo_name} to {} ({}). Clone URL: {}",
                    text(&fork["full_name"]),
                    visibility(&fork),
                    text(&fork["clone_url"])
                );
            }
            RepoCommand::Delete { repo, yes } => {
                let (owner, name) = split_repo(&repo)?;
                if !yes {
                    bail!("deleting {owner}/{name} cannot be undone; add --yes to confirm");
                }
                client.call(Method::DELETE, &format!("/repos/{owner}/{name}"), None).await?;
                if !json_out {
                    println!("Deleted {owner}/{name}.");
                }
            }
        }
        Ok(())
    })
}

fn visibility(repo: &Value) -> &'static str {
    if repo["private"] == true { "private" } else { "public" }
}

pub fn token(command: TokenCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            TokenCommand::Create { name, scopes, expires_in_days } => {
                let body = json!({"name": name, "scopes": scopes, "expires_in_days": expires_in_days});
                let created = client.call(Method::POST, "/tokens", Some(body)).await?;
                if json_out {
                    return print_json(&created);
                }
                eprintln!(
                    "Created token {} ({}). It is shown once; store it now:",
                    text(&created["id"]),
                    text(&created["scopes"])
                );
                println!("{}", text(&created["token"]));
            }
            TokenCommand::List => {
                let list = client.call(Method::GET, "/tokens", None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(
                    &["id", "name", "scopes", "expires", "last used", "created"],
                    rows(&list, &["id", "name", "scopes", "expires_at", "last_used_at", "created_at"]),
                );
            }
            TokenCommand::Revoke { id } => {
                client.call(Method::DELETE, &format!("/tokens/{id}"), None).await?;
                if !json_out {
                    println!("Revoked token {id}.");
                }
            }
        }
        Ok(())
    })
}

pub fn org(command: OrgCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            OrgCommand::Create { name } => {
                let org = client.call(Method::POST, "/orgs", Some(json!({"name": name}))).await?;
                if json_out {
                    return print_json(&org);
                }
                println!("Created organization {}; you are its owner.", text(&org["name"]));
            }
            OrgCommand::List => {
                let list = client.call(Method::GET, "/orgs", None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(&["name", "created"], rows(&list, &["name", "created_at"]));
            }
            OrgCommand::Member(MemberCommand::Add { org, user, role }) => {
                client.call(Method::PUT, &format!("/orgs/{org}/members/{user}"), Some(json!({"role": role}))).await?;
                if !json_out {
                    println!("{user} is now {role} of {org}.");
                }
            }
            OrgCommand::Member(MemberCommand::Remove { org, user }) => {
                client.call(Method::DELETE, &format!("/orgs/{org}/members/{user}"), None).await?;
                if !json_out {
                    println!("Removed {user} from {org}.");
                }
            }
            OrgCommand::Member(MemberCommand::List { org }) => {
                let list = client.call(Method::GET, &format!("/orgs/{org}/members"), None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(&["user", "role"], rows(&list, &["username", "role"]));
            }
        }
        Ok(())
    })
}

pub fn user(command: UserCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    let done = |what: String| {
        if !json_out {
            println!("{what}");
        }
        Ok(())
    };
    let (name, admin, password_stdin) = match command {
        UserCommand::Create { name, admin, password_stdin } => (name, admin, password_stdin),
        UserCommand::Suspend { name } => {
            runtime()?.block_on(client.call(Method::PUT, &format!("/users/{name}/suspended"), None))?;
            return done(format!("Suspended {name}."));
        }
        UserCommand::Unsuspend { name } => {
            runtime()?.block_on(client.call(Method::DELETE, &format!("/users/{name}/suspended"), None))?;
            return done(format!("Lifted the suspension of {name}."));
        }
        UserCommand::Delete { name, transfer_to } => {
            let path = match &transfer_to {
                Some(heir) => format!("/users/{name}?transfer_to={heir}"),
                None => format!("/users/{name}"),
            };
            runtime()?.block_on(client.call(Method::DELETE, &path, None))?;
            return done(match transfer_to {
                Some(heir) => format!("Deleted {name}; its repositories now belong to {heir}."),
                None => format!("Deleted {name} and its repositories."),
            });
        }
        UserCommand::Tokens { name } => {
            let list = runtime()?.block_on(client.call(Method::GET, &format!("/users/{name}/tokens"), None))?;
            if json_out {
                return print_json(&list);
            }
            table(
                &["id", "name", "scopes", "expires", "last used", "created"],
                rows(&list, &["id", "name", "scopes", "expires_at", "last_used_at", "created_at"]),
            );
            return Ok(());
        }
        UserCommand::RevokeToken { name, id } => {
            runtime()?.block_on(client.call(Method::DELETE, &format!("/users/{name}/tokens/{id}"), None))?;
            return done(format!("Revoked token {id} of {name}."));
        }
    };
    let password = if password_stdin { Some(read_secret_line("password")?) } else { None };
    let body = json!({"username": name, "admin": admin, "password": password});
    let created = runtime()?.block_on(client.call(reqwest::Method::POST, "/users", Some(body)))?;
    if json_out {
        return print_json(&created);
    }
    println!("Created user {}{}.", text(&created["name"]), if admin { " (site administrator)" } else { "" });
    Ok(())
}

pub fn ssh_key(command: SshKeyCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            SshKeyCommand::Add { file, title } => {
                let key = if file.as_os_str() == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                    text
                } else {
                    std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
                };
                let added =
                    client.call(Method::POST, "/user/keys", Some(json!({"key": key.trim(), "title": title}))).await?;
                if json_out {
                    return print_json(&added);
                }
                println!(
                    "Added key {} ({}): {}",
                    text(&added["id"]),
                    text(&added["title"]),
                    text(&added["fingerprint"])
                );
            }
            SshKeyCommand::List => {
                let list = client.call(Method::GET, "/user/keys", None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(
                    &["id", "title", "fingerprint", "bits", "created"],
                    rows(&list, &["id", "title", "fingerprint", "bits", "created_at"]),
                );
            }
            SshKeyCommand::Remove { id } => {
                client.call(Method::DELETE, &format!("/user/keys/{id}"), None).await?;
                if !json_out {
                    println!("Removed key {id}.");
                }
            }
        }
        Ok(())
    })
}

pub fn webhook(command: WebhookCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            WebhookCommand::Create { target, url, events, secret_stdin } => {
                let hooks = hooks_path(&target)?;
                let secret = if secret_stdin { Some(read_secret_line("secret")?) } else { None };
                let events = if events.is_empty() { vec!["push".to_owned()] } else { events };
                let body = json!({"url": url, "events": events, "secret": secret});
                let hook = client.call(Method::POST, &hooks, Some(body)).await?;
                if json_out {
                    return print_json(&hook);
                }
                println!("Created webhook {} on {target} for {}.", text(&hook["id"]), text(&hook["events"]));
            }
            WebhookCommand::List { target } => {
                let list = client.call(Method::GET, &hooks_path(&target)?, None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(
                    &["id", "url", "events", "signed", "created"],
                    rows(&list, &["id", "url", "events", "has_secret", "created_at"]),
                );
            }
            WebhookCommand::Delete { target, id } => {
                client.call(Method::DELETE, &format!("{}/{id}", hooks_path(&target)?), None).await?;
                if !json_out {
                    println!("Deleted webhook {id}.");
                }
            }
            WebhookCommand::Deliveries { target, id } => {
                let list = client.call(Method::GET, &format!("{}/{id}/deliveries", hooks_path(&target)?), None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(
                    &["id", "event", "state", "attempts", "status", "error", "created"],
                    rows(&list, &["id", "event", "state", "attempts", "status_code", "error", "created_at"]),
                );
            }
            WebhookCommand::Redeliver { target, id, delivery } => {
                let path = format!("{}/{id}/deliveries/{delivery}/redeliver", hooks_path(&target)?);
                let queued = client.call(Method::POST, &path, None).await?;
                if json_out {
                    return print_json(&queued);
                }
                println!("Queued delivery {} again as {}.", delivery, text(&queued["id"]));
            }
        }
        Ok(())
    })
}

pub fn secret(command: SecretCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            SecretCommand::Set { name, scope, body_file, visibility, repos } => {
                let value = match body_file {
                    Some(path) => {
                        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?
                    }
                    None => {
                        if std::io::stdin().is_terminal() {
                            eprintln!("value of {name} (end with Ctrl-D):");
                        }
                        let mut value = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)?;
                        value.strip_suffix('\n').map(str::to_owned).unwrap_or(value)
                    }
                };
                if value.is_empty() {
                    bail!("the value of {name} is empty");
                }
                let mut body = json!({"value": value});
                if let Some(visibility) = visibility {
                    body["visibility"] = json!(visibility);
                }
                if !repos.is_empty() {
                    body["selected_repositories"] = json!(repos);
                }
                client.call(Method::PUT, &format!("{}/{name}", scope.path("secrets")?), Some(body)).await?;
                if !json_out {
                    println!("Set secret {}.", name.to_ascii_uppercase());
                }
            }
            SecretCommand::List { scope } => {
                let list = client.call(Method::GET, &scope.path("secrets")?, None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(
                    &["name", "visibility", "updated"],
                    rows(&list["secrets"], &["name", "visibility", "updated_at"]),
                );
            }
            SecretCommand::Delete { name, scope } => {
                client.call(Method::DELETE, &format!("{}/{name}", scope.path("secrets")?), None).await?;
                if !json_out {
                    println!("Deleted secret {}.", name.to_ascii_uppercase());
                }
            }
        }
        Ok(())
    })
}

pub fn variable(command: VariableCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            VariableCommand::Set { name, value, scope } => {
                let body = json!({"value": value});
                client.call(Method::PUT, &format!("{}/{name}", scope.path("variables")?), Some(body)).await?;
                if !json_out {
                    println!("Set variable {}.", name.to_ascii_uppercase());
                }
            }
            VariableCommand::List { scope } => {
                let list = client.call(Method::GET, &scope.path("variables")?, None).await?;
                if json_out {
                    return print_json(&list);
                }
                table(&["name", "value", "updated"], rows(&list["variables"], &["name", "value", "updated_at"]));
            }
            VariableCommand::Delete { name, scope } => {
                client.call(Method::DELETE, &format!("{}/{name}", scope.path("variables")?), None).await?;
                if !json_out {
                    println!("Deleted variable {}.", name.to_ascii_uppercase());
                }
            }
        }
        Ok(())
    })
}

/// `usage ORG`: an organization's CI usage over a period.
#[derive(clap::Args)]
pub struct UsageArgs {
    /// The organization [default: your own repositories]
    org: Option<String>,
    /// Start (YYYY-MM-DD) [default: the first of this month]
    #[arg(long)]
    from: Option<String>,
    /// End, exclusive (YYYY-MM-DD) [default: now]
    #[arg(long)]
    to: Option<String>,
}

pub fn usage(args: UsageArgs, json_out: bool) -> anyhow::Result<()> {
    let client = Client::from_config()?;
    let mut query = Vec::new();
    if let Some(from) = &args.from {
        query.push(format!("from={from}"));
    }
    if let Some(to) = &args.to {
        query.push(format!("to={to}"));
    }
    let base = match &args.org {
        Some(org) => format!("/orgs/{org}/usage"),
        None => "/user/usage".to_owned(),
    };
    let path = format!("{base}{}{}", if query.is_empty() { "" } else { "?" }, query.join("&"));
    runtime()?.block_on(async {
        let usage = client.call(reqwest::Method::GET, &path, None).await?;
        if json_out {
            return print_json(&usage);
        }
        println!(
            "{} from {} to {}: {} jobs, {} job minutes, {} bytes of logs; now {} of artifacts, {} of caches",
            args.org.as_deref().unwrap_or("Your repositories"),
            text(&usage["from"]),
            text(&usage["to"]),
            text(&usage["jobs"]),
            text(&usage["job_minutes"]),
            text(&usage["log_bytes"]),
            human_bytes(usage["artifact_bytes"].as_u64().unwrap_or(0)),
            human_bytes(usage["cache_bytes"].as_u64().unwrap_or(0)),
        );
        table(&["labels", "jobs", "minutes"], rows(&usage["by_labels"], &["labels", "jobs", "job_minutes"]));
        table(
            &["repository", "jobs", "minutes", "log bytes"],
            rows(&usage["by_repository"], &["repository", "jobs", "job_minutes", "log_bytes"]),
        );
        Ok(())
    })
}

fn run_line(run: &Value) -> String {
    let state = if run["status"] == "completed" { text(&run["conclusion"]) } else { text(&run["status"]) };
    format!(
        "#{} {} ({}) on {} at {}: {state}",
        text(&run["run_number"]),
        text(&run["display_title"]),
        text(&run["id"]),
        text(&run["head_branch"]),
        short_sha(&run["head_sha"])
    )
}

fn short_sha(v: &Value) -> String {
    v.as_str().map_or_else(|| "-".to_owned(), |s| s.chars().take(10).collect())
}

fn job_state(job: &Value) -> String {
    if job["status"] == "completed" { text(&job["conclusion"]) } else { text(&job["status"]) }
}

/// How long something took (or has taken so far): `1m 05s`; empty when it has not started.
fn duration(item: &Value, started: &str, completed: &str) -> String {
    use gitstratum_core::Timestamp;
    let Some(start) = item[started].as_str().and_then(Timestamp::parse_rfc3339) else { return String::new() };
    let end = item[completed].as_str().and_then(Timestamp::parse_rfc3339);
    let end = end.unwrap_or_else(|| gitstratum_core::Clock::now(&gitstratum_core::SystemClock));
    let secs = (end.as_millis() - start.as_millis()).max(0) / 1000;
    let text = match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    };
    format!(" in {text}")
}

fn print_run(run: &Value) {
    println!("{}{}", run_line(run), duration(run, "run_started_at", "completed_at"));
    if let Some(message) = run["message"].as_str() {
        println!("{message}");
    }
    for job in run["jobs"].as_array().into_iter().flatten() {
        let attempt = job["attempt"].as_i64().filter(|a| *a > 1).map(|a| format!(" (attempt {a})")).unwrap_or_default();
        println!(
            "  {} [{}]{}{attempt}  job {}",
            text(&job["name"]),
            job_state(job),
            duration(job, "started_at", "completed_at"),
            text(&job["id"])
        );
        if let Some(message) = job["message"].as_str() {
            println!("    {message}");
        }
        for step in job["steps"].as_array().into_iter().flatten() {
            println!(
                "    {}. {} [{}]{}",
                text(&step["number"]),
                text(&step["name"]),
                job_state(step),
                duration(step, "started_at", "completed_at")
            );
        }
        for note in job["annotations"].as_array().into_iter().flatten() {
            let place = match (note["file"].as_str(), note["line"].as_i64()) {
                (Some(file), Some(line)) => format!(" {file}:{line}"),
                (Some(file), None) => format!(" {file}"),
                _ => String::new(),
            };
            println!("    {} (step {}){place}: {}", text(&note["level"]), text(&note["step"]), text(&note["message"]));
        }
    }
}

pub fn run(command: RunCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            RunCommand::List { repo, limit, status } => {
                let (owner, name) = split_repo(&repo)?;
                let mut path = format!("/repos/{owner}/{name}/runs?limit={}", limit.clamp(1, 100));
                if let Some(status) = status {
                    path.push_str(&format!("&status={status}"));
                }
                let page = client.call(Method::GET, &path, None).await?;
                if json_out {
                    return print_json(&page);
                }
                let rows = page["runs"].as_array().map_or_else(Vec::new, |runs| {
                    runs.iter()
                        .map(|r| {
                            let state =
                                if r["status"] == "completed" { text(&r["conclusion"]) } else { text(&r["status"]) };
                            vec![
                                text(&r["id"]),
                                text(&r["run_number"]),
                                text(&r["display_title"]),
                                text(&r["event"]),
                                text(&r["head_branch"]),
                                short_sha(&r["head_sha"]),
                                state,
                                text(&r["created_at"]),
                            ]
                        })
                        .collect()
                });
                table(&["id", "number", "workflow", "event", "branch", "commit", "state", "created"], rows);
            }
            RunCommand::View { id } => {
                let run = client.call(Method::GET, &format!("/runs/{id}"), None).await?;
                if json_out {
                    return print_json(&run);
                }
                print_run(&run);
            }
            RunCommand::Watch { id } => {
                let mut last = String::new();
                loop {
                    let run = client.call(Method::GET, &format!("/runs/{id}"), None).await?;
                    let jobs: Vec<String> = run["jobs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|j| format!("  {} [{}]", text(&j["name"]), job_state(j)))
                        .collect();
                    let now = format!("{}\n{}", run_line(&run), jobs.join("\n"));
                    if now != last {
                        println!("{now}");
                        last = now;
                    }
                    if run["status"] == "completed" {
                        if run["conclusion"] != "success" {
                            bail!("run {id} ended: {}", text(&run["conclusion"]));
                        }
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }
            RunCommand::Logs { id, job, follow } => {
                let run = client.call(Method::GET, &format!("/runs/{id}"), None).await?;
                let jobs: Vec<&Value> = run["jobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|j| job.as_deref().is_none_or(|k| j["key"] == k))
                    .collect();
                if jobs.is_empty() {
                    bail!("run {id} has no job {}", job.as_deref().unwrap_or("at all"));
                }
                if follow {
                    // One job after another, each as it is written (Server-Sent Events).
                    for j in jobs {
                        println!("=== {}", text(&j["name"]));
                        let conclusion = client.follow_log(&text(&j["id"])).await?;
                        println!("=== {} [{conclusion}]", text(&j["name"]));
                    }
                    return Ok(());
                }
                for j in jobs {
                    let log = client.call(Method::GET, &format!("/jobs/{}/logs", text(&j["id"])), None).await?;
                    println!("=== {} [{}]", text(&j["name"]), job_state(j));
                    print!("{}", log.as_str().unwrap_or_default());
                }
            }
            RunCommand::Cancel { id } => {
                client.call(Method::POST, &format!("/runs/{id}/cancel"), None).await?;
                if !json_out {
                    println!(
                        "Cancelling run {id}: jobs not yet running are cancelled, running ones stop within seconds."
                    );
                }
            }
            RunCommand::Rerun { id, failed } => {
                let what = if failed { "rerun-failed" } else { "rerun" };
                client.call(Method::POST, &format!("/runs/{id}/{what}"), None).await?;
                if !json_out {
                    println!(
                        "Run {id} queued again{}.",
                        if failed { " (its failed jobs and what needs them)" } else { "" }
                    );
                }
            }
        }
        Ok(())
    })
}

/// `workflow run`: a `workflow_dispatch` run of `file` at `git_ref`, with `KEY=VALUE` inputs.
pub fn workflow_run(repo: &str, file: &str, git_ref: &str, fields: &[String], json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let (owner, name) = split_repo(repo)?;
    let mut inputs = serde_json::Map::new();
    for field in fields {
        let (key, value) = field.split_once('=').with_context(|| format!("{field:?} is not KEY=VALUE"))?;
        inputs.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        let body = json!({"ref": git_ref, "inputs": inputs});
        let made = client
            .call(Method::POST, &format!("/repos/{owner}/{name}/workflows/{file}/dispatches"), Some(body))
            .await?;
        if json_out {
            return print_json(&made);
        }
        println!(
            "Started run {} of {file} at {git_ref}; follow it with: gitstratum run watch {}",
            text(&made["run_id"]),
            text(&made["run_id"])
        );
        Ok(())
    })
}

#[derive(Subcommand)]
pub enum ArtifactCommand {
    /// The artifacts of a run
    List {
        /// The run's id
        run: i64,
    },
    /// Download an artifact's zip (with a progress bar on a terminal)
    Download {
        /// The artifact's id
        id: i64,
        /// Where to write the zip [default: NAME.zip in the current directory]
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete an artifact
    Delete { id: i64 },
}

pub fn artifact(command: ArtifactCommand, json_out: bool) -> anyhow::Result<()> {
    let client = Client::from_config()?;
    runtime()?.block_on(async {
        match command {
            ArtifactCommand::List { run } => {
                let list = client.call(reqwest::Method::GET, &format!("/runs/{run}/artifacts"), None).await?;
                if json_out {
                    return print_json(&list);
                }
                let mut rows = Vec::new();
                for a in list["artifacts"].as_array().into_iter().flatten() {
                    let size = a["size_in_bytes"].as_u64().unwrap_or(0);
                    let state = if a["expired"] == true { "expired".to_owned() } else { text(&a["expires_at"]) };
                    rows.push(vec![text(&a["id"]), text(&a["name"]), human_bytes(size), text(&a["files"]), state]);
                }
                table(&["id", "name", "size", "files", "expires"], rows);
            }
            ArtifactCommand::Download { id, output } => {
                let meta = client.call(reqwest::Method::GET, &format!("/artifacts/{id}"), None).await?;
                let name = meta["name"].as_str().unwrap_or("artifact");
                let path = output.unwrap_or_else(|| PathBuf::from(format!("{}.zip", name.replace(['/', '\\'], "_"))));
                let bytes = client.download(&format!("/artifacts/{id}/download"), &path).await?;
                if json_out {
                    return print_json(&json!({"id": id, "name": name, "path": path, "bytes": bytes}));
                }
                println!("Downloaded artifact {name:?} to {} ({})", path.display(), human_bytes(bytes));
            }
            ArtifactCommand::Delete { id } => {
                client.call(reqwest::Method::DELETE, &format!("/artifacts/{id}"), None).await?;
                if !json_out {
                    println!("Deleted artifact {id}.");
                }
            }
        }
        Ok(())
    })
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A progress bar on stderr, when stderr is a terminal: `[#####-----]  42% 12.0 MiB / 28.5 MiB`.
struct Progress {
    total: Option<u64>,
    done: u64,
    shown: std::time::Instant,
    on: bool,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        Progress { total, done: 0, shown: std::time::Instant::now(), on: std::io::stderr().is_terminal() }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.on && self.shown.elapsed() >= std::time::Duration::from_millis(100) {
            self.shown = std::time::Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let line = match self.total {
            Some(total) if total > 0 => {
                let filled = usize::try_from(self.done.min(total) * 30 / total).unwrap_or(30);
                format!(
                    "[{}{}] {:>3}% {} / {}",
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    self.done.min(total) * 100 / total,
                    human_bytes(self.done),
                    human_bytes(total)
                )
            }
            _ => human_bytes(self.done),
        };
        eprint!("\r{line}\x1b[K");
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.on {
            self.draw();
            eprintln!();
        }
    }
}

impl Client {
    /// Streams `path` (under `/api/v1`) into a new file, showing progress; returns its length.
    /// The file is written beside its place and renamed there once complete.
    async fn download(&self, path: &str, to: &std::path::Path) -> anyhow::Result<u64> {
        let req = self.request(reqwest::Method::GET, path);
        let mut resp = req.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Self::refusal(status, &resp.json().await.unwrap_or_default()));
        }
        let partial = to.with_extension("zip.part");
        let mut file =
            std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        // The announced length (read now: reqwest's hint counts down as the body is read).
        let announced = resp.content_length();
        let mut progress = Progress::new(announced);
        while let Some(chunk) = resp.chunk().await.context("the download broke off")? {
            file.write_all(&chunk).with_context(|| format!("cannot write {}", partial.display()))?;
            progress.add(chunk.len() as u64);
        }
        progress.finish();
        if let Some(total) = announced
            && total != progress.done
        {
            let _ = std::fs::remove_file(&partial);
            bail!("the download ended after {} of {} bytes", progress.done, total);
        }
        file.sync_all()?;
        std::fs::rename(&partial, to).with_context(|| format!("cannot write {}", to.display()))?;
        Ok(progress.done)
    }
}

/// Pull requests.
#[derive(Subcommand)]
pub enum PrCommand {
    /// Open a pull request from branch HEAD into BASE (default: the repository's default branch)
    Create {
        /// OWNER/REPO
        repo: String,
        #[arg(long)]
        head: String,
        #[arg(long)]
        base: Option<String>,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        body: String,
        #[arg(long)]
        draft: bool,
    },
    /// Pull requests, newest first
    List {
        repo: String,
        #[arg(long, default_value = "open", value_parser = ["open", "closed", "all"])]
        state: String,
    },
    /// Show one, with whether it merges cleanly (and which files conflict)
    View { repo: String, number: i64 },
    /// Fetch its head into a local branch `pr/NUMBER` of the repository in the current directory,
    /// and check it out
    Checkout { repo: String, number: i64 },
    /// Merge it: a merge commit (default), --squash or --rebase
    Merge {
        repo: String,
        number: i64,
        #[arg(long, conflicts_with = "rebase")]
        squash: bool,
        #[arg(long)]
        rebase: bool,
    },
    /// Review it: --approve, --request-changes or a comment (--body)
    Review {
        repo: String,
        number: i64,
        #[arg(long, conflicts_with = "request_changes")]
        approve: bool,
        #[arg(long)]
        request_changes: bool,
        #[arg(long, default_value = "")]
        body: String,
    },
    /// Close it without merging
    Close { repo: String, number: i64 },
    /// Reopen a closed one
    Reopen { repo: String, number: i64 },
}

fn pr_line(p: &Value) -> Vec<String> {
    let state = if p["merged"] == true { "merged".to_owned() } else { text(&p["state"]) };
    vec![
        format!("#{}", text(&p["number"])),
        text(&p["title"]),
        format!("{} -> {}", text(&p["head"]["ref"]), text(&p["base"]["ref"])),
        state,
        text(&p["mergeable_state"]),
        text(&p["user"]["login"]),
    ]
}

pub fn pr(command: PrCommand, json_out: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::from_config()?;
    let pulls = |repo: &str| -> anyhow::Result<String> {
        let (owner, name) = split_repo(repo)?;
        Ok(format!("/repos/{owner}/{name}/pulls"))
    };
    runtime()?.block_on(async {
        let shown = match command {
            PrCommand::Create { repo, head, base, title, body, draft } => {
                let base = match base {
                    Some(base) => base,
                    None => {
                        let (owner, name) = split_repo(&repo)?;
                        text(
                            &client.call(Method::GET, &format!("/repos/{owner}/{name}"), None).await?["default_branch"],
                        )
                    }
                };
                let req = json!({"title": title, "head": head, "base": base, "body": body, "draft": draft});
                client.call(Method::POST, &pulls(&repo)?, Some(req)).await?
            }
            PrCommand::List { repo, state } => {
                let list =
                    client.call(Method::GET, &format!("{}?state={state}&per_page=100", pulls(&repo)?), None).await?;
                if json_out {
                    return print_json(&list);
                }
                let rows = list.as_array().map_or_else(Vec::new, |l| l.iter().map(pr_line).collect());
                table(&["number", "title", "branches", "state", "mergeable", "author"], rows);
                return Ok(());
            }
            PrCommand::View { repo, number } => {
                client.call(Method::GET, &format!("{}/{number}", pulls(&repo)?), None).await?
            }
            PrCommand::Checkout { repo, number } => {
                let (owner, name) = split_repo(&repo)?;
                let url = format!("{}/{owner}/{name}.git", client.server);
                let branch = format!("pr/{number}");
                let refspec = format!("+refs/pull/{number}/head:refs/heads/{branch}");
                // The token goes to git in its environment (not its arguments, which others see).
                let mut auth = Vec::new();
                if let Some(token) = &client.token {
                    use base64::Engine;
                    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"));
                    auth.push(("GIT_CONFIG_COUNT", "1".to_owned()));
                    auth.push(("GIT_CONFIG_KEY_0", "http.extraHeader".to_owned()));
                    auth.push(("GIT_CONFIG_VALUE_0", format!("Authorization: Basic {basic}")));
                }
                for args in [
                    vec!["fetch", "--quiet", url.as_str(), refspec.as_str()],
                    vec!["checkout", "--quiet", branch.as_str()],
                ] {
                    let status = std::process::Command::new("git")
                        .args(&args)
                        .envs(auth.iter().map(|(k, v)| (*k, v.as_str())))
                        .status()
                        .context("cannot run git")?;
                    if !status.success() {
                        bail!("git {} failed", args[0]);
                    }
                }
                println!("checked out pull request #{number} as {branch}");
                return Ok(());
            }
            PrCommand::Merge { repo, number, squash, rebase } => {
                let method = if squash {
                    "squash"
                } else if rebase {
                    "rebase"
                } else {
                    "merge"
                };
                let merged = client
                    .call(
                        Method::PUT,
                        &format!("{}/{number}/merge", pulls(&repo)?),
                        Some(json!({"merge_method": method})),
                    )
                    .await?;
                if json_out {
                    return print_json(&merged);
                }
                println!("merged pull request #{number} ({method}): {}", text(&merged["sha"]));
                return Ok(());
            }
            PrCommand::Review { repo, number, approve, request_changes, body } => {
                let event = if approve {
                    "APPROVE"
                } else if request_changes {
                    "REQUEST_CHANGES"
                } else {
                    "COMMENT"
                };
                let review = client
                    .call(
                        Method::POST,
                        &format!("{}/{number}/reviews", pulls(&repo)?),
                        Some(json!({"event": event, "body": body})),
                    )
                    .await?;
                if json_out {
                    return print_json(&review);
                }
                println!("reviewed pull request #{number}: {}", text(&review["state"]));
                return Ok(());
            }
            PrCommand::Close { repo, number } => {
                client
                    .call(Method::PATCH, &format!("{}/{number}", pulls(&repo)?), Some(json!({"state": "closed"})))
                    .await?
            }
            PrCommand::Reopen { repo, number } => {
                client
                    .call(Method::PATCH, &format!("{}/{number}", pulls(&repo)?), Some(json!({"state": "open"})))
                    .await?
            }
        };
        if json_out {
            return print_json(&shown);
        }
        table(&["number", "title", "branches", "state", "mergeable", "author"], vec![pr_line(&shown)]);
        let conflicts = text(&shown["conflicting_files"]);
        if shown["mergeable"] == false {
            println!("conflicts: {conflicts}");
        }
        println!("{}", text(&shown["html_url"]));
        Ok(())
    })
}
