//! The pool's connections to PostgreSQL go through a relay of this process's own, which gives
//! their TCP sockets what libpq gives its and sqlx does not (sqlx 0.9 sets no socket option but
//! `TCP_NODELAY`): keepalive probes and a user timeout, so a connection to a server cut off the
//! network — or to a primary whose machine died — fails within seconds instead of hanging until
//! the kernel gives up (about 15 minutes of retransmissions). And when the primary moves, the
//! relay cuts every connection to the old one at once ([`Relay::cut`]), so a statement waiting on
//! it fails then, rather than when the partition heals.
//!
//! sqlx connects to a Unix socket in a directory only this user may enter (mode 0700; the
//! relay adds no credentials, but it must not let other local users reach the database from
//! this machine's address); the relay connects on to the host over TCP and copies bytes both
//! ways. One socket per host, made when the pool is opened, removed when it is dropped.
//! Hosts given as Unix sockets are connected to directly.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;

use crate::{KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, USER_TIMEOUT};

/// How long a connection to the host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a client's startup message read before telling it the host cannot be reached.
const MAX_STARTUP: u32 = 10_000;

/// The relay of one pool: a Unix socket per TCP host. Dropping it stops accepting and removes
/// the sockets; connections already relayed run until either side closes them.
pub(crate) struct Relay {
    dir: PathBuf,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Per host: bumped to cut every relayed connection to it.
    cuts: Vec<watch::Sender<u64>>,
}

impl Relay {
    /// Starts relaying for each of `hosts` that is reached over TCP and points its options at
    /// the relay; the others are left as they are.
    pub(crate) fn start(hosts: &mut [crate::Host]) -> std::io::Result<Arc<Relay>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "gitstratum-pg-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let mut relay = Relay { dir, listeners: Vec::new(), cuts: Vec::new() };
        for (i, host) in hosts.iter_mut().enumerate() {
            let (cut, cuts) = watch::channel(0);
            relay.cuts.push(cut);
            if host.options.get_socket().is_some() || host.options.get_host().starts_with('/') {
                continue;
            }
            let target = (host.options.get_host().to_owned(), host.options.get_port());
            // sqlx connects to `<dir>/.s.PGSQL.<port>`: a directory per host, the port kept.
            let at = relay.dir.join(i.to_string());
            std::fs::DirBuilder::new().mode(0o700).create(&at)?;
            let listener = UnixListener::bind(at.join(format!(".s.PGSQL.{}", target.1)))?;
            relay.listeners.push(tokio::spawn(accept(listener, target, cuts)));
            host.options = host.options.clone().socket(&at);
        }
        Ok(Arc::new(relay))
    }

    /// Cuts every relayed connection to host `i` (the primary moved away from it).
    pub(crate) fn cut(&self, i: usize) {
        if let Some(cut) = self.cuts.get(i) {
            cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn accept(listener: UnixListener, target: (String, u16), cuts: watch::Receiver<u64>) {
    loop {
        let Ok((mut local, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (target, mut cuts) = (target.clone(), cuts.clone());
        cuts.mark_unchanged();
        tokio::spawn(async move {
            // A connection still being made when the host is cut is given up at once.
            let connected = tokio::select! {
                connected = connect(&target) => connected,
                _ = cuts.changed() => Err(std::io::Error::other("the PostgreSQL primary moved away from it")),
            };
            match connected {
                Ok(remote) => relay(local, remote, cuts).await,
                // Said as the server would, with the code of a server that cannot take
                // connections yet, so that sqlx reports why — and a pool tries again, on its
                // current host, until its acquire timeout (as it does when a connection is refused).
                Err(e) => {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    // After the startup message sqlx sends first (read, so its write cannot
                    // fail on a closed socket instead).
                    let mut length = [0u8; 4];
                    let read = async {
                        local.read_exact(&mut length).await?;
                        let rest = u32::from_be_bytes(length).saturating_sub(4).min(MAX_STARTUP);
                        tokio::io::copy(&mut (&mut local).take(u64::from(rest)), &mut tokio::io::sink()).await
                    };
                    if let Ok(Ok(_)) = tokio::time::timeout(CONNECT_TIMEOUT, read).await {
                        let why = format!("cannot reach {}:{}: {e}", target.0, target.1);
                        let _ = local.write_all(&error_response(&why)).await;
                    }
                }
            }
        });
    }
}

/// A PostgreSQL `ErrorResponse`: FATAL, SQLSTATE 57P03 (`cannot_connect_now`).
fn error_response(message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "57P03"), (b'M', message)] {
        fields.push(code);
        fields.extend(value.bytes().filter(|&b| b != 0));
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend(u32::try_from(fields.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
    out.extend(fields);
    out
}

/// A TCP connection to `target` with keepalives and a user timeout.
async fn connect(target: &(String, u16)) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((target.0.as_str(), target.1)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to PostgreSQL timed out"))??;
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(&stream);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    socket.set_tcp_user_timeout(Some(USER_TIMEOUT))?;
    Ok(stream)
}

/// Copies both ways until either side closes, fails, or the host's connections are cut.
async fn relay(mut local: UnixStream, mut remote: TcpStream, mut cuts: watch::Receiver<u64>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut local, &mut remote) => {}
        _ = cuts.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgConnectOptions;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn host(port: u16) -> crate::Host {
        crate::Host { name: format!("127.0.0.1:{port}"), options: PgConnectOptions::new().host("127.0.0.1").port(port) }
    }

    #[tokio::test]
    async fn bytes_go_both_ways_until_the_host_is_cut() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = server.local_addr().expect("addr").port();
        let mut hosts = vec![host(port)];
        let relay = Relay::start(&mut hosts).expect("relay");
        let socket = hosts[0].options.get_socket().expect("pointed at the relay").join(format!(".s.PGSQL.{port}"));
        let mode = std::fs::metadata(relay.dir.clone()).expect("dir").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o700, "private to this user");

        let mut client = UnixStream::connect(&socket).await.expect("connect");
        let (mut far, _) = server.accept().await.expect("accept");
        client.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        far.write_all(b"pong").await.expect("write");
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");

        // The primary moved away: the connection ends on both sides, though the host still runs.
        relay.cut(0);
        assert_eq!(client.read(&mut got).await.expect("eof"), 0);
        assert_eq!(far.read(&mut got).await.expect("eof"), 0);

        // New connections are relayed again; dropping the relay removes its sockets.
        let _again = UnixStream::connect(&socket).await.expect("connect");
        let dir = relay.dir.clone();
        drop(relay);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_host_that_refuses_is_reported_as_the_server_would() {
        let port = {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            gone.local_addr().expect("addr").port()
        };
        let mut hosts = vec![host(port)];
        let _relay = Relay::start(&mut hosts).expect("relay");
        // sqlx itself, through the relay: the error names the host and the reason.
        let e = <sqlx::PgConnection as sqlx::Connection>::connect_with(&hosts[0].options)
            .await
            .expect_err("nothing listens there")
            .to_string();
        assert!(e.contains(&format!("cannot reach 127.0.0.1:{port}")) && e.contains("refused"), "{e}");
    }
}
