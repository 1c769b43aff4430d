//! Refs, `HEAD`, the ref-change log and every repository's pack list in PostgreSQL: the one
//! place cluster mode decides anything (seed 001's metadata nodes; PostgreSQL replicates itself).
//!
//! A ref batch is one transaction: it takes the repository's advisory lock (so batches on one
//! repository are serialized and read what the last one committed), reads the refs it touches
//! and those it could clash with, checks every `old` value, writes the refs, then takes the
//! ref-change log's table lock and appends the events. The table lock is held to the commit, so
//! sequence numbers are assigned in commit order: a consumer that has read up to `n` never later
//! finds an event below `n` appear. (A rolled-back batch leaves a gap; gaps are harmless.)
//!
//! [`RefStore`] is synchronous (the frontend runs on blocking threads), sqlx is not: every call
//! runs as a task on this store's own small runtime and the caller waits for it. So a call works
//! from any thread, async or not, and a commit in flight is never cancelled with its caller.
//!
//! The tables are this store's own (`git_*`), created on open under an advisory lock.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::bridge::Bridge;
use crate::{Actor, Conflict, Error, ObjectId, RefEvent, RefNames, RefStore, RefUpdate, RepoId, Result};

/// Advisory lock classes (the first of the two `int4` keys), so ours never meet another user's.
const LOCK_SCHEMA: i32 = 0x6773_0001;
const LOCK_REPO_REFS: i32 = 0x6773_0002;
const SCHEMA: &[&str] = &[
    r#"CREATE TABLE IF NOT EXISTS git_refs (
        repo_id BIGINT NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        target BYTEA NOT NULL,
        PRIMARY KEY (repo_id, name))"#,
    r#"CREATE TABLE IF NOT EXISTS git_heads (
        repo_id BIGINT PRIMARY KEY,
        target TEXT NOT NULL)"#,
    r#"CREATE TABLE IF NOT EXISTS git_ref_events (
        seq BIGSERIAL PRIMARY KEY,
        repo_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        old BYTEA,
        new BYTEA,
        pusher TEXT NOT NULL,
        time_ms BIGINT NOT NULL)"#,
    r#"CREATE TABLE IF NOT EXISTS git_packs (
        id BIGSERIAL PRIMARY KEY,
        repo_id BIGINT NOT NULL,
        blob_key TEXT NOT NULL UNIQUE,
        checksum BYTEA NOT NULL,
        size BIGINT NOT NULL,
        objects BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        replaced BIGINT[] NOT NULL DEFAULT '{}')"#,
    "CREATE INDEX IF NOT EXISTS git_packs_by_repo ON git_packs (repo_id, id)",
    // A fork lists its parent's packs under the same keys: a key may be listed by several
    // repositories, and its blob stays while any lists it.
    // (Looked up first: ALTER TABLE would lock the table at every start even with IF EXISTS.)
    r#"DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'git_packs_blob_key_key' AND conrelid = 'git_packs'::regclass) THEN
            ALTER TABLE git_packs DROP CONSTRAINT git_packs_blob_key_key;
        END IF;
    END $$"#,
    "CREATE INDEX IF NOT EXISTS git_packs_by_key ON git_packs (blob_key)",
    // Packs a compaction replaced: their blobs stay for a grace period, for frontends that listed
    // them just before and are still downloading.
    r#"CREATE TABLE IF NOT EXISTS git_packs_retired (
        blob_key TEXT PRIMARY KEY,
        retired_ms BIGINT NOT NULL)"#,
];

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("postgresql: {e}"))
}

fn oid(bytes: &[u8]) -> Result<ObjectId> {
    ObjectId::try_from(bytes).map_err(|_| Error::Corrupt(format!("object id of {} bytes", bytes.len())))
}

/// A pack in a repository's pack list: immutable, in object storage under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    /// Increasing in the order packs were listed.
    pub id: i64,
    pub key: String,
    pub checksum: ObjectId,
    pub size: u64,
    pub objects: u64,
    /// The packs a compaction rolled into this one (their objects are all in it).
    pub replaced: Vec<i64>,
    /// Another repository (a fork, or the repository forked from) lists the same key.
    pub shared: bool,
}

/// A pack to list: in object storage under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPack {
    pub key: String,
    pub checksum: ObjectId,
    pub size: u64,
    pub objects: u64,
}

/// Refs, `HEAD`, the ref-change log and pack lists in PostgreSQL.
pub struct PgRefStore {
    bridge: Bridge,
    pool: PgPool,
}

impl std::fmt::Debug for PgRefStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRefStore").finish_non_exhaustive()
    }
}

impl PgRefStore {
    /// Connects to `url` (in `schema` when given: a plain lowercase identifier, created if
    /// missing; tests use one each) and creates the tables if they are missing.
    pub fn open(url: &str, schema: Option<&str>) -> Result<PgRefStore> {
        let bridge = Bridge::new("gitstratum-pg").map_err(|e| Error::Backend(format!("starting a runtime: {e}")))?;
        let (url, schema) = (url.to_owned(), schema.map(str::to_owned));
        let pool = bridge.run(async move {
            // On the primary among the URL's hosts, following it when it moves.
            let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10));
            let pool = gitstratum_pg::connect(&url, schema.as_deref(), pool)
                .await
                .map_err(|e| Error::Backend(e.to_string()))?;
            let mut tx = pool.begin().await.map_err(backend)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
                .bind(LOCK_SCHEMA)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            for statement in SCHEMA {
                sqlx::query(*statement).execute(&mut *tx).await.map_err(backend)?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(pool)
        })?;
        Ok(PgRefStore { bridge, pool })
    }

    /// The runtime this store's queries run on; an object storage client may share it.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.bridge.handle()
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(PgPool) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>>,
    ) -> Result<T> {
        self.bridge.run(work(self.pool.clone()))
    }

    /// Applies `updates` in one transaction: all or none (`atomic`), or each that can be.
    fn apply(
        &self,
        repo: RepoId,
        updates: &[RefUpdate],
        actor: &Actor,
        atomic: bool,
    ) -> Result<Vec<Result<RefEvent, Conflict>>> {
        let (updates, actor) = (updates.to_vec(), actor.clone());
        self.run(move |pool| {
            Box::pin(async move {
                let mut tx = pool.begin().await.map_err(backend)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                    .bind(LOCK_REPO_REFS)
                    .bind(repo.0 as i32) // truncated: a shared lock between two repositories is only slower
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                // The refs the batch names, and those it could clash with as file and directory.
                let mut exact: Vec<String> = Vec::new();
                let mut inside: Vec<String> = Vec::new();
                for u in &updates {
                    exact.push(u.name.clone());
                    exact.extend(u.name.match_indices('/').map(|(i, _)| u.name[..i].to_owned()));
                    inside.push(format!("{}/", u.name));
                }
                let rows = sqlx::query(
                    "SELECT name, target FROM git_refs WHERE repo_id = $1 AND (name = ANY($2) \
                     OR EXISTS (SELECT 1 FROM unnest($3::text[]) AS p(prefix) WHERE starts_with(name, p.prefix)))",
                )
                .bind(repo.0)
                .bind(&exact)
                .bind(&inside)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
                let mut current: HashMap<String, ObjectId> = HashMap::new();
                for row in rows {
                    let name: String = row.try_get(0).map_err(backend)?;
                    let target: Vec<u8> = row.try_get(1).map_err(backend)?;
                    current.insert(name, oid(&target)?);
                }
                let mut names = RefNames::new(current.keys().map(String::as_str));
                let mut outcome: Vec<Result<(), Conflict>> = Vec::with_capacity(updates.len());
                if atomic {
                    let conflict = updates
                        .iter()
                        .find(|u| current.get(&u.name).copied() != u.old)
                        .or_else(|| names.clone().first_clash(&updates))
                        .map(|u| Conflict { name: u.name.clone() });
                    if let Some(conflict) = conflict {
                        return Ok(updates.iter().map(|_| Err(conflict.clone())).collect());
                    }
                    outcome.extend(updates.iter().map(|_| Ok(())));
                } else {
                    for u in &updates {
                        let fits = current.get(&u.name).copied() == u.old
                            && (u.new.is_none() || names.clash(&u.name).is_none());
                        if !fits {
                            outcome.push(Err(Conflict { name: u.name.clone() }));
                            continue;
                        }
                        match u.new {
                            Some(new) => {
                                current.insert(u.name.clone(), new);
                                names.insert(&u.name);
                            }
                            None => {
                                current.remove(&u.name);
                                names.remove(&u.name);
                            }
                        }
                        outcome.push(Ok(()));
                    }
                }
                let applied: Vec<&RefUpdate> =
                    updates.iter().zip(&outcome).filter(|(_, o)| o.is_ok()).map(|(u, _)| u).collect();
                if applied.is_empty() {
                    return pair(outcome, Vec::new());
                }
                for u in &applied {
                    match u.new {
                        Some(new) => sqlx::query(
                            "INSERT INTO git_refs (repo_id, name, target) VALUES ($1, $2, $3) \
                             ON CONFLICT (repo_id, name) DO UPDATE SET target = EXCLUDED.target",
                        )
                        .bind(repo.0)
                        .bind(&u.name)
                        .bind(new.as_bytes())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?,
                        None => sqlx::query("DELETE FROM git_refs WHERE repo_id = $1 AND name = $2")
                            .bind(repo.0)
                            .bind(&u.name)
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?,
                    };
                }
                // Held to the commit: sequence numbers in commit order.
                sqlx::query("LOCK TABLE git_ref_events IN EXCLUSIVE MODE").execute(&mut *tx).await.map_err(backend)?;
                let mut events = Vec::with_capacity(applied.len());
                for u in &applied {
                    let seq: i64 = sqlx::query_scalar(
                        "INSERT INTO git_ref_events (repo_id, name, old, new, pusher, time_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
                    )
                    .bind(repo.0)
                    .bind(&u.name)
                    .bind(u.old.map(|id| id.as_bytes().to_vec()))
                    .bind(u.new.map(|id| id.as_bytes().to_vec()))
                    .bind(&actor.name)
                    .bind(actor.time_ms)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
                    events.push(RefEvent::of(u64::try_from(seq).unwrap_or(0), repo, u, &actor));
                }
                tx.commit().await.map_err(backend)?;
                pair(outcome, events)
            })
        })
    }

    /// Adds a pack (already durable in object storage under `key`) to a repository's list.
    pub fn list_pack(
        &self,
        repo: RepoId,
        key: &str,
        checksum: ObjectId,
        size: u64,
        objects: u64,
        now_ms: i64,
    ) -> Result<i64> {
        let key = key.to_owned();
        self.run(move |pool| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "INSERT INTO git_packs (repo_id, blob_key, checksum, size, objects, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(repo.0)
                .bind(&key)
                .bind(checksum.as_bytes())
                .bind(i64::try_from(size).unwrap_or(i64::MAX))
                .bind(i64::try_from(objects).unwrap_or(i64::MAX))
                .bind(now_ms)
                .fetch_one(&pool)
                .await
                .map_err(backend)
            })
        })
    }

    /// A repository's packs listed after `after` (an id; 0 for all), in the order listed.
    pub fn packs_after(&self, repo: RepoId, after: i64) -> Result<Vec<PackRecord>> {
        self.run(move |pool| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT id, blob_key, checksum, size, objects, replaced, EXISTS (SELECT 1 FROM git_packs o \
                     WHERE o.blob_key = p.blob_key AND o.repo_id <> p.repo_id) FROM git_packs p \
                     WHERE repo_id = $1 AND id > $2 ORDER BY id",
                )
                .bind(repo.0)
                .bind(after)
                .fetch_all(&pool)
                .await
                .map_err(backend)?;
                rows.into_iter()
                    .map(|row| {
                        let checksum: Vec<u8> = row.try_get(2).map_err(backend)?;
                        Ok(PackRecord {
                            id: row.try_get(0).map_err(backend)?,
                            key: row.try_get(1).map_err(backend)?,
                            checksum: oid(&checksum)?,
                            size: u64::try_from(row.try_get::<i64, _>(3).map_err(backend)?).unwrap_or(0),
                            objects: u64::try_from(row.try_get::<i64, _>(4).map_err(backend)?).unwrap_or(0),
                            replaced: row.try_get(5).map_err(backend)?,
                            shared: row.try_get(6).map_err(backend)?,
                        })
                    })
                    .collect()
            })
        })
    }

    /// Every pack key listed, and those retired since `retired_after_ms`, for the sweep of packs
    /// nothing lists; retired entries older than that are forgotten.
    pub fn all_pack_keys(&self, retired_after_ms: i64) -> Result<std::collections::HashSet<String>> {
        self.run(move |pool| {
            Box::pin(async move {
                sqlx::query("DELETE FROM git_packs_retired WHERE retired_ms < $1")
                    .bind(retired_after_ms)
                    .execute(&pool)
                    .await
                    .map_err(backend)?;
                let keys: Vec<String> = sqlx::query_scalar(
                    "SELECT blob_key FROM git_packs UNION ALL SELECT blob_key FROM git_packs_retired",
                )
                .fetch_all(&pool)
                .await
                .map_err(backend)?;
                Ok(keys.into_iter().collect())
            })
        })
    }

    /// Repositories listing at least `min` packs.
    pub fn repos_with_packs(&self, min: usize) -> Result<Vec<RepoId>> {
        self.run(move |pool| {
            Box::pin(async move {
                let ids: Vec<i64> =
                    sqlx::query_scalar("SELECT repo_id FROM git_packs GROUP BY repo_id HAVING count(*) >= $1")
                        .bind(i64::try_from(min).unwrap_or(i64::MAX))
                        .fetch_all(&pool)
                        .await
                        .map_err(backend)?;
                Ok(ids.into_iter().map(RepoId).collect())
            })
        })
    }

    /// Lists `new` in place of the packs `replaced` (ids), in one transaction — only if every one
    /// of them is still listed (another compaction may have replaced them first) and no other
    /// repository lists any of them (a fork made meanwhile); else nothing changes and this
    /// returns `None`. The replaced packs' keys are kept as retired.
    pub fn replace_packs(&self, repo: RepoId, replaced: &[i64], new: &NewPack, now_ms: i64) -> Result<Option<i64>> {
        let (replaced, new) = (replaced.to_vec(), new.clone());
        self.run(move |pool| {
            Box::pin(async move {
                let mut tx = pool.begin().await.map_err(backend)?;
                let keys: Vec<String> =
                    sqlx::query_scalar("DELETE FROM git_packs WHERE repo_id = $1 AND id = ANY($2) RETURNING blob_key")
                        .bind(repo.0)
                        .bind(&replaced)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(backend)?;
                if keys.len() != replaced.len() {
                    return Ok(None); // rolled back with the transaction
                }
                // A fork listed one of them meanwhile: replacing it would keep its objects twice.
                let shared: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM git_packs WHERE blob_key = ANY($1) AND repo_id <> $2)",
                )
                .bind(&keys)
                .bind(repo.0)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
                if shared {
                    return Ok(None);
                }
                for key in &keys {
                    sqlx::query(
                        "INSERT INTO git_packs_retired (blob_key, retired_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(key)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO git_packs (repo_id, blob_key, checksum, size, objects, created_ms, replaced) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(repo.0)
                .bind(&new.key)
                .bind(new.checksum.as_bytes())
                .bind(i64::try_from(new.size).unwrap_or(i64::MAX))
                .bind(i64::try_from(new.objects).unwrap_or(i64::MAX))
                .bind(now_ms)
                .bind(&replaced)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(Some(id))
            })
        })
    }

    /// Removes a repository's pack list; returns the keys it held that no other repository (a
    /// fork) lists.
    pub fn unlist_repo_packs(&self, repo: RepoId) -> Result<Vec<String>> {
        self.run(move |pool| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "WITH gone AS (DELETE FROM git_packs WHERE repo_id = $1 RETURNING blob_key) \
                     SELECT DISTINCT blob_key FROM gone \
                     WHERE blob_key NOT IN (SELECT blob_key FROM git_packs WHERE repo_id <> $1)",
                )
                .bind(repo.0)
                .fetch_all(&pool)
                .await
                .map_err(backend)
            })
        })
    }

    /// Lists every pack `from` lists for `to` as well, under the same keys (a fork), in one
    /// statement; returns how many.
    pub fn fork_packs(&self, from: RepoId, to: RepoId, now_ms: i64) -> Result<u64> {
        self.run(move |pool| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO git_packs (repo_id, blob_key, checksum, size, objects, created_ms) \
                     SELECT $2, blob_key, checksum, size, objects, $3 FROM git_packs WHERE repo_id = $1 ORDER BY id",
                )
                .bind(from.0)
                .bind(to.0)
                .bind(now_ms)
                .execute(&pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(backend)
            })
        })
    }
}

/// Each update's outcome: its event (in order) where it applied, its conflict where not.
fn pair(outcome: Vec<Result<(), Conflict>>, events: Vec<RefEvent>) -> Result<Vec<Result<RefEvent, Conflict>>> {
    let mut events = events.into_iter();
    outcome
        .into_iter()
        .map(|o| match o {
            Ok(()) => events.next().map(Ok).ok_or_else(|| Error::Backend("an update applied without its event".into())),
            Err(conflict) => Ok(Err(conflict)),
        })
        .collect()
}

impl RefStore for PgRefStore {
    fn list(&self, repo: RepoId) -> Result<Vec<(String, ObjectId)>> {
        self.run(move |pool| {
            Box::pin(async move {
                let rows = sqlx::query("SELECT name, target FROM git_refs WHERE repo_id = $1")
                    .bind(repo.0)
                    .fetch_all(&pool)
                    .await
                    .map_err(backend)?;
                let mut refs = rows
                    .into_iter()
                    .map(|row| {
                        let target: Vec<u8> = row.try_get(1).map_err(backend)?;
                        Ok((row.try_get::<String, _>(0).map_err(backend)?, oid(&target)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                // By bytes, as the other stores sort (whatever the server's collation).
                refs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                Ok(refs)
            })
        })
    }

    fn get(&self, repo: RepoId, name: &str) -> Result<Option<ObjectId>> {
        let name = name.to_owned();
        self.run(move |pool| {
            Box::pin(async move {
                let target: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT target FROM git_refs WHERE repo_id = $1 AND name = $2")
                        .bind(repo.0)
                        .bind(&name)
                        .fetch_optional(&pool)
                        .await
                        .map_err(backend)?;
                target.map(|t| oid(&t)).transpose()
            })
        })
    }

    fn update(&self, repo: RepoId, updates: &[RefUpdate], actor: &Actor) -> Result<Result<Vec<RefEvent>, Conflict>> {
        Ok(self.apply(repo, updates, actor, true)?.into_iter().collect())
    }

    fn update_each(
        &self,
        repo: RepoId,
        updates: &[RefUpdate],
        actor: &Actor,
    ) -> Result<Vec<Result<RefEvent, Conflict>>> {
        self.apply(repo, updates, actor, false)
    }

    fn head(&self, repo: RepoId) -> Result<Option<String>> {
        self.run(move |pool| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT target FROM git_heads WHERE repo_id = $1")
                    .bind(repo.0)
                    .fetch_optional(&pool)
                    .await
                    .map_err(backend)
            })
        })
    }

    fn set_head(&self, repo: RepoId, target: &str) -> Result<()> {
        let target = target.to_owned();
        self.run(move |pool| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO git_heads (repo_id, target) VALUES ($1, $2) \
                     ON CONFLICT (repo_id) DO UPDATE SET target = EXCLUDED.target",
                )
                .bind(repo.0)
                .bind(&target)
                .execute(&pool)
                .await
                .map_err(backend)?;
                Ok(())
            })
        })
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<RefEvent>> {
        self.run(move |pool| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT seq, repo_id, name, old, new, pusher, time_ms FROM git_ref_events \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&pool)
                .await
                .map_err(backend)?;
                rows.into_iter()
                    .map(|row| {
                        let id = |i: usize| -> Result<Option<ObjectId>> {
                            row.try_get::<Option<Vec<u8>>, _>(i).map_err(backend)?.map(|b| oid(&b)).transpose()
                        };
                        Ok(RefEvent {
                            seq: u64::try_from(row.try_get::<i64, _>(0).map_err(backend)?).unwrap_or(0),
                            repo: RepoId(row.try_get(1).map_err(backend)?),
                            name: row.try_get(2).map_err(backend)?,
                            old: id(3)?,
                            new: id(4)?,
                            pusher: row.try_get(5).map_err(backend)?,
                            time_ms: row.try_get(6).map_err(backend)?,
                        })
                    })
                    .collect()
            })
        })
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        self.run(move |pool| {
            Box::pin(async move {
                let mut tx = pool.begin().await.map_err(backend)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                    .bind(LOCK_REPO_REFS)
                    .bind(repo.0 as i32)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                sqlx::query("DELETE FROM git_refs WHERE repo_id = $1")
                    .bind(repo.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                sqlx::query("DELETE FROM git_heads WHERE repo_id = $1")
                    .bind(repo.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)
            })
        })
    }
}
