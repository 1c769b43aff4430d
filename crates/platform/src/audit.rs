//! The audit log: an append-only, hash-chained record of every privileged action.
//!
//! Each entry stores the hash of the entry before it (`prev_hash`, unique, so the chain cannot
//! fork) and its own hash over its fields and `prev_hash`. Changing, inserting or removing an
//! entry in the middle breaks the chain at that point, which [`PlatformStore::verify_audit`]
//! reports. (Removing entries from the very end is not detectable from the log alone; an operator
//! who needs that anchors the latest hash elsewhere.)
//!
//! Entries are appended inside the transaction of the action they record, after its writes, so an
//! action and its entry commit together or not at all. Appends are serialized: on SQLite by the
//! write lock every transaction takes when it begins, on PostgreSQL by a table lock taken before the
//! chain's head is read.

use gitstratum_core::Timestamp;
use sea_query::{Expr, ExprTrait, Order, Query};
use sha2::{Digest, Sha256};

use crate::db::{Conn, DbRow, FromDbRow};
use crate::store::{PlatformStore, Result};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who performed an action, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: Option<i64>,
    pub name: String,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    /// The server itself (first start, background jobs).
    pub fn system() -> Actor {
        Actor { id: None, name: "system".into(), ip: None, request_id: None }
    }

    pub fn account(id: i64, name: &str) -> Actor {
        Actor { id: Some(id), name: name.to_owned(), ip: None, request_id: None }
    }

    pub fn from(mut self, ip: Option<String>, request_id: Option<String>) -> Actor {
        self.ip = ip;
        self.request_id = request_id;
        self
    }
}

/// What happened: an action such as `repo.create` on a target such as `repo:octo/hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub action: String,
    pub target: String,
    /// The organization the action belongs to, so its owners can read it.
    pub org_id: Option<i64>,
    /// A JSON object with the action's particulars (never a secret).
    pub details: String,
}

impl AuditEvent {
    pub fn new(action: &str, target: String) -> AuditEvent {
        AuditEvent { action: action.to_owned(), target, org_id: None, details: "{}".into() }
    }

    pub fn org(mut self, org_id: Option<i64>) -> AuditEvent {
        self.org_id = org_id;
        self
    }

    pub fn details(mut self, json: String) -> AuditEvent {
        self.details = json;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub prev_hash: String,
    pub hash: String,
    pub actor_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub org_id: Option<i64>,
    pub details: String,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub created_at: Timestamp,
}

impl FromDbRow for AuditEntry {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(AuditEntry {
            id: row.get("id")?,
            prev_hash: row.get("prev_hash")?,
            hash: row.get("hash")?,
            actor_id: row.get("actor_id")?,
            actor: row.get("actor")?,
            action: row.get("action")?,
            target: row.get("target")?,
            org_id: row.get("org_id")?,
            details: row.get("details")?,
            ip: row.get("ip")?,
            request_id: row.get("request_id")?,
            created_at: Timestamp(row.get("created_at")?),
        })
    }
}

const COLUMNS: [&str; 12] = [
    "id",
    "prev_hash",
    "hash",
    "actor_id",
    "actor",
    "action",
    "target",
    "org_id",
    "details",
    "ip",
    "request_id",
    "created_at",
];

/// The hash of an entry: SHA-256 over its fields, each length-prefixed so no two different
/// entries encode alike.
fn entry_hash(prev_hash: &str, actor: &Actor, event: &AuditEvent, created_at: Timestamp) -> String {
    let mut h = Sha256::new();
    let mut field = |value: &str| {
        h.update(value.len().to_string().as_bytes());
        h.update(b":");
        h.update(value.as_bytes());
        h.update(b";");
    };
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    field(prev_hash);
    field(&opt(actor.id));
    field(&actor.name);
    field(&event.action);
    field(&event.target);
    field(&opt(event.org_id));
    field(&event.details);
    field(actor.ip.as_deref().unwrap_or("-"));
    field(actor.request_id.as_deref().unwrap_or("-"));
    field(&created_at.0.to_string());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends an entry in the caller's transaction (after the action's own writes; see the module
/// documentation). Returns its id.
pub(crate) async fn append_audit(
    conn: &mut Conn<'_>,
    actor: &Actor,
    event: &AuditEvent,
    now: Timestamp,
) -> Result<i64> {
    if let Conn::Postgres(_) = conn {
        conn.execute_raw("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE").await?;
    }
    let head: Option<String> = conn
        .fetch_optional(
            &Query::select().column("hash").from("audit_log").order_by("id", Order::Desc).limit(1).to_owned(),
        )
        .await?;
    let prev = head.unwrap_or_else(|| GENESIS.to_owned());
    let hash = entry_hash(&prev, actor, event, now);
    let insert = Query::insert()
        .into_table("audit_log")
        .columns(COLUMNS[1..].iter().copied())
        .values_panic([
            prev.into(),
            hash.into(),
            actor.id.into(),
            actor.name.as_str().into(),
            event.action.as_str().into(),
            event.target.as_str().into(),
            event.org_id.into(),
            event.details.as_str().into(),
            actor.ip.clone().into(),
            actor.request_id.clone().into(),
            now.0.into(),
        ])
        .returning_col("id")
        .to_owned();
    Ok(conn.fetch_one(&insert).await?)
}

/// Which entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub org_id: Option<i64>,
    /// Only entries older than this id (the cursor of the previous page).
    pub before: Option<i64>,
    pub limit: u64,
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    pub entries: u64,
    /// The first entry where the chain breaks, and why.
    pub broken_at: Option<(i64, String)>,
}

impl PlatformStore {
    /// Deletes what `delete` matches and, when it matched anything, records `event` in the same
    /// transaction. False when nothing matched; then nothing is recorded.
    pub(crate) async fn delete_audited(
        &self,
        delete: &sea_query::DeleteStatement,
        actor: &Actor,
        event: &AuditEvent,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        if tx.conn().execute(delete).await? == 0 {
            return Ok(false);
        }
        append_audit(&mut tx.conn(), actor, event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records an action that has no other write of its own.
    pub async fn record_audit(&self, actor: &Actor, event: &AuditEvent, now: Timestamp) -> Result<i64> {
        let mut tx = self.db.begin().await?;
        let id = append_audit(&mut tx.conn(), actor, event, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut q = Query::select().columns(COLUMNS).from("audit_log").order_by("id", Order::Desc).to_owned();
        if let Some(actor) = &filter.actor {
            q.and_where(Expr::col("actor").eq(actor.as_str()));
        }
        if let Some(action) = &filter.action {
            q.and_where(Expr::col("action").eq(action.as_str()));
        }
        if let Some(target) = &filter.target {
            q.and_where(Expr::col("target").eq(target.as_str()));
        }
        if let Some(org) = filter.org_id {
            q.and_where(Expr::col("org_id").eq(org));
        }
        if let Some(before) = filter.before {
            q.and_where(Expr::col("id").lt(before));
        }
        q.limit(filter.limit.clamp(1, 1000));
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Walks the whole chain, oldest first, and reports the first entry that does not fit.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        const PAGE: u64 = 1000;
        let mut conn = self.db.acquire().await?;
        let mut expected_prev = GENESIS.to_owned();
        let mut after = 0i64;
        let mut entries = 0u64;
        loop {
            let page: Vec<AuditEntry> = conn
                .conn()
                .fetch_all(
                    &Query::select()
                        .columns(COLUMNS)
                        .from("audit_log")
                        .and_where(Expr::col("id").gt(after))
                        .order_by("id", Order::Asc)
                        .limit(PAGE)
                        .to_owned(),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for e in &page {
                entries += 1;
                if e.prev_hash != expected_prev {
                    let why = "its previous hash does not match the entry before it (an entry was removed, inserted or changed)";
                    return Ok(AuditVerification { entries, broken_at: Some((e.id, why.into())) });
                }
                let actor =
                    Actor { id: e.actor_id, name: e.actor.clone(), ip: e.ip.clone(), request_id: e.request_id.clone() };
                let event = AuditEvent {
                    action: e.action.clone(),
                    target: e.target.clone(),
                    org_id: e.org_id,
                    details: e.details.clone(),
                };
                if entry_hash(&e.prev_hash, &actor, &event, e.created_at) != e.hash {
                    return Ok(AuditVerification {
                        entries,
                        broken_at: Some((e.id, "its contents do not match its hash (the entry was altered)".into())),
                    });
                }
                expected_prev = e.hash.clone();
            }
        }
        Ok(AuditVerification { entries, broken_at: None })
    }
}
