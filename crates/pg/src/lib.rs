//! Connecting to PostgreSQL on its primary, wherever it is.
//!
//! A URL may name several hosts, as libpq's does: `postgres://user@db1:5432,db2:5432/gitstratum`.
//! They are tried in order and the first that accepts writes (`pg_is_in_recovery()` is false) is
//! the one the pool connects to — libpq's `target_session_attrs=read-write`, which is what a
//! frontend always needs (the parameter itself is accepted and ignored).
//!
//! With more than one host, a task follows the primary: every [`CHECK_EVERY`] it asks it, on a
//! connection of its own, whether it still is one. When it is not, or does not answer within
//! [`PROBE_TIMEOUT`], the task looks for a primary among the other hosts (the current one last)
//! and points the pool at it (`Pool::set_connect_options`). From then on the pool closes the
//! connections it opened before the move instead of handing them out again, and it refuses a new
//! connection that lands on a replica (and asks the task to look at once), so it only ever hands
//! out connections to a primary. No restart is needed, and nothing is retried behind the
//! caller's back: a statement in flight when the primary dies fails, and its transaction either
//! committed on the old primary (replicated, with synchronous replication, to the one promoted)
//! or did not.
//!
//! A single host gets no task: a lost connection is replaced on the same host, as before.
//!
//! Every connection goes through a relay of this process's own ([`relay`]): TCP keepalives and
//! a user timeout on its socket, so a statement sent to a server that went silent fails within
//! seconds, and when the primary moves every connection to the old one is cut at once.
//!
//! Every session asks the server to give up on it when this end goes silent
//! ([`server_keepalives`], the same policy as the relay's sockets): a frontend cut off the network (or its machine gone) then has its
//! sessions ended, its transactions rolled back and its advisory locks — the singletons'
//! turns — released within seconds, not after the kernel's two hours. (A statement timeout is
//! deliberately not set: cancelling a commit that waits for its synchronous replica reports it
//! committed when only the primary has it.)

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::Notify;

mod relay;
use relay::Relay;

/// How often the primary is asked whether it still is one.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a host may take to connect and answer while the primary is being looked for.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each host may take when the pool is first opened (a server starting).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A silent peer is probed after [`KEEPALIVE_IDLE`] without traffic, then every
/// [`KEEPALIVE_INTERVAL`], and given up after [`KEEPALIVE_PROBES`] unanswered probes; data
/// unacknowledged for [`USER_TIMEOUT`] ends the connection as well. Both ends apply it: the
/// relay's sockets ([`relay`]) and the server's ([`server_keepalives`]).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub const KEEPALIVE_PROBES: u32 = 3;
pub const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The session parameters that make the server apply the keepalive policy to this client's
/// connection (user-settable; ignored when the server's end is a Unix socket).
pub fn server_keepalives() -> [(&'static str, String); 4] {
    [
        ("tcp_keepalives_idle", KEEPALIVE_IDLE.as_secs().to_string()),
        ("tcp_keepalives_interval", KEEPALIVE_INTERVAL.as_secs().to_string()),
        ("tcp_keepalives_count", KEEPALIVE_PROBES.to_string()),
        ("tcp_user_timeout", USER_TIMEOUT.as_millis().to_string()),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid database URL {}: {message}", redact_url(url))]
    Url { url: String, message: String },
    #[error("invalid schema name {0:?}: use lower-case letters, digits and '_'")]
    Schema(String),
    #[error("no PostgreSQL primary among the database hosts ({})", describe(.0))]
    NoPrimary(Vec<(String, String)>),
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
}

fn describe(tried: &[(String, String)]) -> String {
    tried.iter().map(|(host, why)| format!("{host}: {why}")).collect::<Vec<_>>().join("; ")
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') { format!("{scheme}://{user}:***@{host}{path}") } else { url.to_owned() }
        }
        None => url.to_owned(),
    }
}

/// One of the hosts a URL names: how it is called in logs, and how to connect to it.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub options: PgConnectOptions,
}

/// The hosts `url` names, in order, each with the URL's user, database and parameters.
pub fn hosts(url: &str) -> Result<Vec<Host>, ConnectError> {
    let bad = |message: String| ConnectError::Url { url: url.to_owned(), message };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("it has no scheme (postgres://…)".into()))?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (userinfo, list) = match authority.rsplit_once('@') {
        Some((userinfo, list)) => (Some(userinfo), list),
        None => (None, authority),
    };
    let tail = without_param(tail, "target_session_attrs");
    let specs: Vec<&str> = if list.is_empty() { vec![""] } else { list.split(',').collect() };
    specs
        .into_iter()
        .map(|spec| {
            if spec.is_empty() && list.contains(',') {
                return Err(bad("the host list has an empty entry".into()));
            }
            let one = match userinfo {
                Some(userinfo) => format!("{scheme}://{userinfo}@{spec}{tail}"),
                None => format!("{scheme}://{spec}{tail}"),
            };
            let options = PgConnectOptions::from_str(&one).map_err(|e| bad(e.to_string()))?;
            let name = if spec.is_empty() { "localhost".to_owned() } else { spec.to_owned() };
            Ok(Host { name, options })
        })
        .collect()
}

/// `tail` (`/db?a=1&b=2`) without the query parameter `key`.
fn without_param(tail: &str, key: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else { return tail.to_owned() };
    let kept: Vec<&str> = query.split('&').filter(|p| p.split('=').next() != Some(key)).collect();
    if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) }
}

/// Checks that `schema` is a plain lower-case identifier (it is spliced into SQL).
pub fn check_schema(schema: &str) -> Result<(), ConnectError> {
    if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(ConnectError::Schema(schema.to_owned()));
    }
    Ok(())
}

/// Opens `pool` on the primary among `url`'s hosts; with `schema`, every table lives in that
/// schema (created when missing). With several hosts, spawns (on the current runtime) the task
/// that follows the primary, for as long as the pool is open.
pub async fn connect(url: &str, schema: Option<&str>, pool: PgPoolOptions) -> Result<PgPool, ConnectError> {
    let mut hosts = hosts(url)?;
    if let Some(schema) = schema {
        check_schema(schema)?;
    }
    for host in &mut hosts {
        host.options = host.options.clone().options(server_keepalives());
    }
    // Without a relay (no writable temporary directory, say) connections go straight to the
    // hosts, as sqlx makes them: everything works, but a silent server is noticed late.
    let mut relayed = hosts.clone();
    let relay = match Relay::start(&mut relayed) {
        Ok(relay) => {
            hosts = relayed;
            Some(relay)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the PostgreSQL connection relay; connecting directly, without TCP keepalives");
            None
        }
    };
    let (at, mut conn) = find_primary(&hosts, 0..hosts.len(), OPEN_TIMEOUT).await.map_err(ConnectError::NoPrimary)?;
    if let Some(schema) = schema {
        // Checked above to be a plain identifier, so it is safe to splice.
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
            .execute(&mut conn)
            .await
            .map_err(ConnectError::Open)?;
        for host in &mut hosts {
            host.options = host.options.clone().options([("search_path", schema)]);
        }
    }
    if hosts.len() == 1 {
        drop(conn);
        // The pool keeps the relay (its hooks live as long as it does).
        let pool = pool.after_connect(move |_, _| {
            let _relay = &relay;
            Box::pin(async { Ok(()) })
        });
        return pool.connect_with(hosts[0].options.clone()).await.map_err(ConnectError::Open);
    }
    let watch = Arc::new(Watch { moved: Mutex::new(None), look: Notify::new() });
    let pool = follow(pool, &watch, relay.clone())
        .connect_with(hosts[at].options.clone())
        .await
        .map_err(ConnectError::Open)?;
    tokio::spawn(follow_primary(pool.clone(), hosts, at, conn, watch, relay));
    Ok(pool)
}

/// What the pool's hooks and the task following the primary share.
struct Watch {
    /// When the pool was last pointed at another host.
    moved: Mutex<Option<Instant>>,
    /// Asks the task to look for the primary now.
    look: Notify,
}

impl Watch {
    /// Whether a connection `age` old was opened after the last move.
    fn current(&self, age: Duration) -> bool {
        self.moved.lock().unwrap_or_else(PoisonError::into_inner).is_none_or(|at| age < at.elapsed())
    }
}

/// `pool` with the hooks that keep its connections on the primary (and `relay` alive).
fn follow(pool: PgPoolOptions, watch: &Arc<Watch>, relay: Option<Arc<Relay>>) -> PgPoolOptions {
    let (connected, acquired, released) = (watch.clone(), watch.clone(), watch.clone());
    pool.after_connect(move |conn, _| {
        let _relay = &relay;
        let watch = connected.clone();
        Box::pin(async move {
            if is_replica(conn).await? {
                watch.look.notify_one();
                return Err(sqlx::Error::Protocol("connected to a replica; looking for the primary".into()));
            }
            Ok(())
        })
    })
    .before_acquire(move |_, meta| {
        let current = acquired.current(meta.age);
        Box::pin(async move { Ok(current) })
    })
    .after_release(move |_, meta| {
        let current = released.current(meta.age);
        Box::pin(async move { Ok(current) })
    })
}

async fn is_replica(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(conn).await
}

/// The first of `order`'s hosts that is a primary, with a connection to it; otherwise what each
/// said.
async fn find_primary(
    hosts: &[Host],
    order: impl Iterator<Item = usize>,
    timeout: Duration,
) -> Result<(usize, PgConnection), Vec<(String, String)>> {
    let mut tried = Vec::new();
    for at in order {
        let host = &hosts[at];
        let probe = async {
            let mut conn = <PgConnection as sqlx::Connection>::connect_with(&host.options).await?;
            let replica = is_replica(&mut conn).await?;
            Ok::<_, sqlx::Error>((conn, replica))
        };
        let why = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok((conn, false))) => return Ok((at, conn)),
            Ok(Ok((_, true))) => "a replica (in recovery)".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", timeout.as_millis()),
        };
        tried.push((host.name.clone(), why));
    }
    Err(tried)
}

/// Follows the primary for `pool` until the pool is closed; `conn` is a connection to the
/// current one, `hosts[at]`.
async fn follow_primary(
    pool: PgPool,
    hosts: Vec<Host>,
    mut at: usize,
    conn: PgConnection,
    watch: Arc<Watch>,
    relay: Option<Arc<Relay>>,
) {
    let mut probe = Some(conn);
    let mut lost: Option<Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = watch.look.notified() => {}
        }
        if pool.is_closed() {
            return;
        }
        if let Some(conn) = probe.as_mut()
            && let Ok(Ok(false)) = tokio::time::timeout(PROBE_TIMEOUT, is_replica(conn)).await
        {
            continue;
        }
        probe = None;
        // The others first, in the URL's order after the current one; the current one last.
        let order = (1..=hosts.len()).map(|i| (at + i) % hosts.len());
        match find_primary(&hosts, order, PROBE_TIMEOUT).await {
            Ok((found, conn)) => {
                probe = Some(conn);
                if found != at {
                    // Pointed first, then marked: a connection opened in between is closed, never
                    // one to the old host kept. Then every connection to the old host is cut: a
                    // statement still waiting on it fails now.
                    pool.set_connect_options(hosts[found].options.clone());
                    *watch.moved.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    if let Some(relay) = &relay {
                        relay.cut(at);
                    }
                    tracing::warn!(
                        from = hosts[at].name,
                        to = hosts[found].name,
                        "the PostgreSQL primary moved; following it"
                    );
                    at = found;
                } else if lost.is_some() {
                    tracing::info!(host = hosts[at].name, "the PostgreSQL primary answers again");
                }
                lost = None;
            }
            Err(tried) => {
                if lost.is_none() {
                    tracing::warn!(
                        tried = describe(&tried),
                        "no PostgreSQL primary answers; looking again every second"
                    );
                    lost = Some(Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_hosts_in_order() {
        let named =
            hosts("postgres://u:pw@db1:5433,db2,[::1]:6000/app?sslmode=disable&target_session_attrs=read-write")
                .expect("parses");
        let names: Vec<&str> = named.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1:5433", "db2", "[::1]:6000"]);
        assert_eq!(named[0].options.get_port(), 5433);
        assert_eq!(named[1].options.get_port(), 5432);
        assert_eq!(named[1].options.get_host(), "db2");
        for h in &named {
            assert_eq!(h.options.get_username(), "u");
            assert_eq!(h.options.get_database(), Some("app"));
        }
        assert_eq!(hosts("postgresql://localhost/x").expect("one host").len(), 1);
        assert_eq!(without_param("/db?target_session_attrs=any", "target_session_attrs"), "/db");
        assert_eq!(without_param("/db?a=1&target_session_attrs=any&b", "target_session_attrs"), "/db?a=1&b");
    }

    #[test]
    fn bad_urls_and_schemas_are_refused_without_the_password() {
        let e = hosts("postgres://u:hunter2@db1,,db2/app").expect_err("empty entry").to_string();
        assert!(e.contains("empty entry") && !e.contains("hunter2"), "{e}");
        let e = hosts("db1/app").expect_err("no scheme").to_string();
        assert!(e.contains("scheme"), "{e}");
        assert!(hosts("postgres://u@db1:notaport/app").is_err());
        assert!(check_schema("ok_1").is_ok());
        assert!(check_schema("Bad;drop").is_err());
        assert!(check_schema("").is_err());
    }

    #[test]
    fn connections_older_than_the_last_move_are_not_current() {
        let watch = Watch { moved: Mutex::new(None), look: Notify::new() };
        assert!(watch.current(Duration::from_secs(3600)));
        *watch.moved.lock().expect("not poisoned") = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        assert!(watch.current(Duration::from_millis(1)));
        assert!(!watch.current(Duration::from_secs(1)));
    }
}
