//! Git over SSH: `git clone git@host:owner/repo.git` (or `ssh://git@host:port/owner/repo.git`),
//! fetch and push, served by the same [`GitService`](gitstratum_frontend::GitService) and the
//! same policy as smart HTTP.
//!
//! A client authenticates with one of its account's SSH keys (`/settings/keys`, `POST
//! /user/keys`); the user name it connects as is not looked at (`git@` by convention). The key
//! acts as its account with a full token's repository powers: what the account may read it
//! clones, what it may write it pushes, protected branches hold as on HTTP. Passwords and
//! keyboard-interactive logins are refused; so is a shell (`ssh -T` says who the key is, as
//! GitHub does).
//!
//! The only commands are `git-upload-pack '<path>'` and `git-receive-pack '<path>'`, the path
//! `owner/name` with or without a leading `/` and a `.git` suffix. The protocol version comes
//! from the `GIT_PROTOCOL` environment variable the client sends (git sends `version=2`).
//!
//! The session runs on the blocking pool: the channel is bridged into `Read`/`Write`, so a slow
//! client holds back the pack writer (SSH's window), never the server's memory.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gitstratum_frontend::{Protocol, ReceiveOptions, Service, UploadOptions};
use gitstratum_platform::Principal;
use gitstratum_store::{Actor, RepoId};
use russh::keys::{HashAlg, PrivateKey};
use russh::server::{Auth, Handler, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::AppState;
use crate::git::{Access, Counted, authorize, record_pack, record_push};

/// Connections served at once; one more is closed as soon as it is accepted.
const MAX_CONNECTIONS: usize = 512;
/// How long an idle connection is kept (no data either way).
const IDLE: Duration = Duration::from_secs(600);
/// How long a connection may take to sign in (OpenSSH's LoginGraceTime is 120 s).
const LOGIN_GRACE: Duration = Duration::from_secs(30);
/// How long commands in progress may run on once the server is stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest command line a client may send (`git-upload-pack '/owner/name.git'`).
const MAX_COMMAND: usize = 4096;

/// Loads the server's host key from `path` (OpenSSH's private key format, unencrypted); when it
/// is missing and `create` says so, makes an Ed25519 key there (readable by the server alone).
pub fn host_key(path: &Path, create: bool) -> io::Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes())
            .map_err(|e| io::Error::other(format!("the SSH host key {} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => Err(io::Error::other(format!(
            "the SSH host key {} does not exist (make one: ssh-keygen -t ed25519 -N '' -f {0})",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| io::Error::other(format!("no randomness for a host key: {e}")))?;
            let keypair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
            let key = PrivateKey::from(keypair);
            let text = key
                .to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .map_err(|e| io::Error::other(format!("cannot encode the SSH host key: {e}")))?;
            // Written aside and renamed: a crash never leaves half a key behind.
            let partial = path.with_extension("partial");
            {
                let mut file = std::fs::File::create(&partial)?;
                file.write_all(text.as_bytes())?;
                file.sync_all()?;
            }
            std::fs::rename(&partial, path)?;
            tracing::info!(path = %path.display(), fingerprint = %key.public_key().fingerprint(HashAlg::Sha256), "made an SSH host key");
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// Serves Git over SSH on `listener` until `shutdown` resolves; commands then in progress get
/// [`SHUTDOWN_GRACE`] to finish before their connections are told the server is going away.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    key: PrivateKey,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(format!("SSH-2.0-GitStratum_{}", env!("CARGO_PKG_VERSION")).into()),
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        keys: vec![key],
        // Refusals are not slowed much: keys are public (a probe learns nothing secret) and
        // passwords are never asked; an agent offering several keys tries each in turn.
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(IDLE),
        keepalive_interval: Some(Duration::from_secs(30)),
        max_auth_attempts: 6,
        nodelay: true,
        ..Default::default()
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (closing, _) = tokio::sync::broadcast::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "ssh: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("gitstratum_ssh_connections_total", "result" => "refused").increment(1);
            continue; // dropped: too many at once
        };
        metrics::counter!("gitstratum_ssh_connections_total", "result" => "accepted").increment(1);
        let _ = socket.set_nodelay(true);
        let signed_in = Arc::new(AtomicBool::new(false));
        let handler = Connection {
            state: state.clone(),
            signed_in: signed_in.clone(),
            peer,
            principal: None,
            fingerprint: String::new(),
            channels: HashMap::new(),
            protocol: HashMap::new(),
        };
        let config = config.clone();
        let mut closing = closing.subscribe();
        tokio::spawn(async move {
            let _permit = permit;
            let session = match russh::server::run_stream(config, socket, handler).await {
                Ok(session) => session,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "ssh: connection setup failed");
                    return;
                }
            };
            let handle = session.handle();
            tokio::pin!(session);
            let grace = tokio::time::sleep(LOGIN_GRACE);
            tokio::pin!(grace);
            let mut graced = false;
            loop {
                tokio::select! {
                    _ = closing.recv() => {
                        let _ = handle.disconnect(russh::Disconnect::ByApplication, "the server is shutting down".into(), String::new()).await;
                        break;
                    }
                    // A connection that has not signed in by now holds a slot for nothing.
                    _ = &mut grace, if !graced => {
                        graced = true;
                        if !signed_in.load(Ordering::Relaxed) {
                            let _ = handle.disconnect(russh::Disconnect::ByApplication, "sign-in took too long".into(), String::new()).await;
                            break;
                        }
                    }
                    result = &mut session => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "ssh: connection ended with an error");
                        }
                        break;
                    }
                }
            }
        });
    }
    // Stop accepting; commands in progress get a moment to finish (a push to be acknowledged),
    // then whatever is left is told the server is going away.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(MAX_CONNECTIONS as u32)).await.is_err() {
        tracing::info!("ssh: closing the connections still open");
    }
    let _ = closing.send(());
}

/// One client connection.
struct Connection {
    state: AppState,
    /// Set once a key signed in (the login grace no longer applies).
    signed_in: Arc<AtomicBool>,
    peer: SocketAddr,
    principal: Option<Principal>,
    /// The fingerprint of the key it signed in with (its rate limit's key).
    fingerprint: String,
    /// Session channels opened and not yet running a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// `GIT_PROTOCOL` as the client set it, per channel.
    protocol: HashMap<ChannelId, String>,
}

impl Handler for Connection {
    type Error = russh::Error;

    /// A key no account has is refused before the client signs with it (an agent then offers
    /// its next key at once).
    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let fingerprint = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        match self.state.store().find_ssh_key(&fingerprint).await {
            Ok(Some(_)) => Ok(Auth::Accept),
            Ok(None) => Ok(Auth::reject()),
            Err(e) => {
                tracing::error!(error = %e, "ssh: looking up a key failed");
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        let found = self.state.store().authenticate_ssh_key(&fingerprint, self.state.now()).await;
        match found {
            Ok(Some((_, principal))) => {
                metrics::counter!("gitstratum_ssh_auth_total", "result" => "accepted").increment(1);
                tracing::info!(peer = %self.peer, user = %principal.account.name, %fingerprint, "ssh: authenticated");
                self.principal = Some(principal);
                self.fingerprint = fingerprint;
                self.signed_in.store(true, Ordering::Relaxed);
                Ok(Auth::Accept)
            }
            Ok(None) => {
                metrics::counter!("gitstratum_ssh_auth_total", "result" => "rejected").increment(1);
                Ok(Auth::reject())
            }
            Err(e) => {
                tracing::error!(error = %e, "ssh: looking up a key failed");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= 8 {
            return Ok(()); // dropping the handle refuses the channel
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "GIT_PROTOCOL" && value.len() <= 256 {
            self.protocol.insert(channel, value.to_owned());
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // `ssh git@host` without -T asks for a terminal before its shell: refused, the shell
        // request that follows still gets its greeting.
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&channel) else { return Ok(()) };
        session.channel_success(channel.id())?;
        let name = self.principal.as_ref().map_or("", |p| p.account.name.as_str()).to_owned();
        let message =
            format!("Hi {name}! You've successfully authenticated, but GitStratum does not provide shell access.\n");
        tokio::spawn(finish(channel.split().1, Err(message)));
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&channel) else { return Ok(()) };
        let Some(principal) = self.principal.clone() else {
            session.channel_failure(channel.id())?;
            return Ok(());
        };
        session.channel_success(channel.id())?;
        let protocol = Protocol::from_header(self.protocol.remove(&channel.id()).as_deref());
        let state = self.state.clone();
        let fingerprint = self.fingerprint.clone();
        let command = String::from_utf8_lossy(&data[..data.len().min(MAX_COMMAND)]).into_owned();
        tokio::spawn(async move {
            let (reader, writer) = channel.split();
            let limited = parse_command(&command).and_then(|(service, owner, name)| {
                state.limiters().check_ssh(&fingerprint, &format!("{owner}/{name}"))?;
                Ok((service, owner, name))
            });
            let (writer, outcome) = match limited {
                Ok((service, owner, name)) => {
                    run(&state, &principal, service, &owner, &name, protocol, reader, writer).await
                }
                Err(message) => (Some(writer), Err(message)),
            };
            match writer {
                Some(writer) => finish(writer, outcome).await,
                None => tracing::error!(error = ?outcome.err(), "ssh: a Git session failed"),
            }
        });
        Ok(())
    }
}

/// Ends a channel: the error (if any) on stderr, the exit status, EOF and close.
async fn finish(writer: ChannelWriteHalf<Msg>, outcome: Result<(), String>) {
    let status = match outcome {
        Ok(()) => 0,
        Err(message) => {
            let text = if message.ends_with('\n') { message } else { format!("{message}\n") };
            let _ = writer.extended_data(1, text.as_bytes()).await;
            1
        }
    };
    let _ = writer.exit_status(status).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
}

/// Reads `git-upload-pack '/owner/name.git'` (git quotes the path for a shell, as `sq_quote`
/// does) into the service and the repository's owner and name.
fn parse_command(command: &str) -> Result<(Service, String, String), String> {
    let refuse = || {
        format!(
            "GitStratum serves only git-upload-pack and git-receive-pack over SSH (got {:?}).",
            command.chars().take(80).collect::<String>()
        )
    };
    let (verb, argument) = command.trim().split_once(' ').ok_or_else(refuse)?;
    let service = match verb {
        "git-upload-pack" => Service::UploadPack,
        "git-receive-pack" => Service::ReceivePack,
        _ => return Err(refuse()),
    };
    let path = unquote(argument.trim()).ok_or_else(refuse)?;
    let path = path.trim_start_matches('/').trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    match path.split_once('/') {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((service, owner.to_owned(), name.to_owned()))
        }
        _ => Err(format!("'{path}' is not a repository path (owner/name).")),
    }
}

/// Undoes a shell's single quoting (`'a'\''b'` is `a'b`); an unquoted word is taken as it is.
fn unquote(argument: &str) -> Option<String> {
    if !argument.starts_with('\'') {
        return (!argument.contains(['\'', '"', '\\', ' '])).then(|| argument.to_owned());
    }
    let mut out = String::new();
    let mut rest = argument;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('\'') {
            let end = after.find('\'')?;
            out.push_str(&after[..end]);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix("\\'") {
            out.push('\'');
            rest = after;
        } else {
            return None;
        }
    }
    Some(out)
}

/// Runs one Git command for `principal` over the channel; hands the channel's writer back (to
/// end the channel with; `None` if the session panicked with it) with the outcome.
#[allow(clippy::too_many_arguments)]
async fn run(
    state: &AppState,
    principal: &Principal,
    service: Service,
    owner: &str,
    name: &str,
    protocol: Protocol,
    reader: ChannelReadHalf,
    writer: ChannelWriteHalf<Msg>,
) -> (Option<ChannelWriteHalf<Msg>>, Result<(), String>) {
    let access = if service == Service::ReceivePack { Access::Write } else { Access::Read };
    // The same decision as over HTTP; what HTTP says with a status, SSH says in words (an
    // authenticated caller is never asked for credentials).
    let repo = match authorize(state, owner, name, Some(principal), access).await {
        Ok(repo) => repo,
        Err(e) => return (Some(writer), Err(e.message)),
    };
    let repo_name = format!("{}/{}", repo.owner, repo.name);
    let runtime = Handle::current();
    let git = state.git().clone();
    let mut input = io::BufReader::with_capacity(
        64 << 10,
        ChannelReader { runtime: runtime.clone(), rx: reader, buf: Bytes::new() },
    );
    let mut out = ChannelWriter { runtime, tx: writer, buf: Vec::with_capacity(64 << 10), written: Arc::default() };
    let joined = match service {
        Service::UploadPack => {
            let span = tracing::info_span!("ssh", repo = %repo_name, user = %principal.account.name);
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let result = (|| {
                    out.write_all(&git.advertisement(RepoId(repo.id), Service::UploadPack, protocol)?)?;
                    out.flush()?;
                    // Each pack's bytes and time, from the end of the previous one.
                    let written = out.written.clone();
                    let (mut start, mut before) = (std::time::Instant::now(), written.load(Ordering::Relaxed));
                    git.upload_pack_session(
                        RepoId(repo.id),
                        protocol,
                        &mut input,
                        &UploadOptions::default(),
                        &mut out,
                        &mut |stats| {
                            let now = written.load(Ordering::Relaxed);
                            record_pack(protocol, &stats, now - before, start.elapsed());
                            (start, before) = (std::time::Instant::now(), now);
                        },
                    )
                })();
                (out.tx, result.map_err(session_error))
            })
            .await
        }
        Service::ReceivePack => {
            let permit = tokio::time::timeout(crate::git::PUSH_WAIT, state.push_bodies().clone().acquire_owned()).await;
            let Ok(Ok(_permit)) = permit else {
                metrics::counter!("gitstratum_control_ratelimit_throttled_total", "limit" => "concurrent_pushes")
                    .increment(1);
                return (Some(out.tx), Err("Too many pushes in progress; try again in a moment.".into()));
            };
            let guard = match crate::protection::push_guard(state, principal, &repo).await {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::warn!(error = %e.message, "receive-pack: reading the branch protections failed");
                    return (Some(out.tx), Err("The branch protections cannot be read; try again in a moment.".into()));
                }
            };
            let options = ReceiveOptions { guard, ..ReceiveOptions::default() };
            let actor = Actor { name: principal.account.name.clone(), time_ms: state.now().as_millis() };
            tracing::info!(repo = %repo_name, transport = "ssh", "receive-pack: applying push");
            let span = tracing::Span::current();
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let result = (|| {
                    out.write_all(&git.advertisement(RepoId(repo.id), Service::ReceivePack, protocol)?)?;
                    out.flush()?;
                    let mut counted = Counted { inner: &mut input, count: 0 };
                    let outcome = git.receive_pack(RepoId(repo.id), &mut counted, &actor, &options, &mut out)?;
                    let received = counted.count;
                    out.flush()?;
                    record_push(&state, &repo_name, &outcome, received);
                    Ok(())
                })();
                (out.tx, result.map_err(session_error))
            })
            .await
        }
    };
    match joined {
        Ok((writer, outcome)) => (Some(writer), outcome),
        // The session panicked with the writer: the channel closes with the connection.
        Err(e) => (None, Err(format!("internal error: {e}"))),
    }
}

/// What the client is told when a session fails: its own mistakes in words, ours without detail.
fn session_error(e: gitstratum_frontend::Error) -> String {
    match e {
        gitstratum_frontend::Error::Protocol(message) => message,
        gitstratum_frontend::Error::Io(e) => {
            tracing::debug!(error = %e, "ssh: the session's channel failed");
            format!("the connection failed: {e}")
        }
        other => {
            tracing::error!(error = %other, "ssh: a Git session failed");
            "internal server error".into()
        }
    }
}

/// The client's data on a channel, read from the blocking pool.
struct ChannelReader {
    runtime: Handle,
    rx: ChannelReadHalf,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.runtime.block_on(self.rx.wait()) {
                Some(ChannelMsg::Data { data }) => self.buf = data,
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return Ok(0),
                Some(_) => {} // window adjustments, stderr, requests: not data
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// What the server sends on a channel, written from the blocking pool in packets of up to 64 KiB
/// (each waits for the client's window: a slow client slows the writer).
struct ChannelWriter {
    runtime: Handle,
    tx: ChannelWriteHalf<Msg>,
    buf: Vec<u8>,
    /// Bytes sent so far.
    written: Arc<AtomicU64>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::take(&mut self.buf));
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.runtime
            .block_on(self.tx.data_bytes(data))
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, format!("the client is gone: {e}")))?;
        self.buf = Vec::with_capacity(64 << 10);
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > 64 << 10 {
            self.send()?;
        }
        if data.len() >= 64 << 10 {
            self.buf.extend_from_slice(data);
            self.send()?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_a_service_and_a_repository() {
        let ok = |c: &str| parse_command(c).map(|(s, o, n)| (s.name(), o, n));
        assert_eq!(ok("git-upload-pack '/alice/app.git'"), Ok(("git-upload-pack", "alice".into(), "app".into())));
        assert_eq!(ok("git-receive-pack 'alice/app'"), Ok(("git-receive-pack", "alice".into(), "app".into())));
        assert_eq!(ok("git-upload-pack alice/app.git"), Ok(("git-upload-pack", "alice".into(), "app".into())));
        assert_eq!(ok("git-upload-pack 'it'\\''s/app'"), Ok(("git-upload-pack", "it's".into(), "app".into())));
        for bad in [
            "git-upload-archive 'alice/app.git'",
            "sh -c 'rm -rf /'",
            "git-upload-pack",
            "git-upload-pack 'alice/app.git",
            "git-upload-pack '/alice/app/extra.git'",
            "git-upload-pack '/alice'",
            "git-upload-pack alice/app; id",
            "git-upload-pack '//app'",
        ] {
            assert!(parse_command(bad).is_err(), "{bad}");
        }
    }
}
