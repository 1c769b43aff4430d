//! Webhooks and their deliveries: a durable queue in the database. Deliveries are created in the
//! same transaction that advances the consumer's cursor on the ref-change log, so a crash neither
//! loses nor doubles one; the deliverer retries failures with exponential backoff.

use gitstratum_core::Timestamp;
use sea_query::{Expr, ExprTrait, Order, Query};

use crate::audit::{Actor, AuditEvent, append_audit};
use crate::db::{DbRow, FromDbRow};
use crate::events::move_log_cursor;
use crate::secrets::SecretKey;
use crate::store::{Account, Error, PlatformStore, Repo, Result};

/// Attempts before a delivery is given up (it can still be redelivered by hand).
pub const MAX_ATTEMPTS: i64 = 8;

/// What a webhook (or a secret, or a variable) belongs to: one repository, or an organization
/// (then it reaches the repositories the organization owns).
#[derive(Debug, Clone, Copy)]
pub enum HookOwner<'a> {
    Repo(&'a Repo),
    Org(&'a Account),
}

impl HookOwner<'_> {
    /// How the audit log names it.
    pub(crate) fn audit_target(&self) -> String {
        match self {
            HookOwner::Repo(repo) => format!("repo:{}/{}", repo.owner, repo.name),
            HookOwner::Org(org) => format!("org:{}", org.name),
        }
    }

    pub(crate) fn audit_org(&self) -> Option<i64> {
        match self {
            HookOwner::Repo(_) => None,
            HookOwner::Org(org) => Some(org.id),
        }
    }

    /// The column and value that select its hooks.
    pub(crate) fn column(&self) -> (&'static str, i64) {
        match self {
            HookOwner::Repo(repo) => ("repo_id", repo.id),
            HookOwner::Org(org) => ("org_id", org.id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    /// The repository of a repository hook.
    pub repo_id: Option<i64>,
    /// The organization of an organization hook.
    pub org_id: Option<i64>,
    pub url: String,
    /// The HMAC key as stored: sealed (see [`Webhook::signing_secret`]); never shown.
    pub secret: Option<String>,
    /// Whether `secret` is sealed (rows from before sealing hold it in the clear until the server
    /// seals them at start).
    pub secret_sealed: bool,
    pub events: Vec<String>,
    pub active: bool,
    pub created_at: Timestamp,
}

impl FromDbRow for Webhook {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let events: String = row.get("events")?;
        Ok(Webhook {
            id: row.get("id")?,
            repo_id: row.get("repo_id")?,
            org_id: row.get("org_id")?,
            url: row.get("url")?,
            secret: row.get("secret")?,
            secret_sealed: row.get("secret_sealed")?,
            events: events.split_whitespace().map(str::to_owned).collect(),
            active: row.get("active")?,
            created_at: Timestamp(row.get("created_at")?),
        })
    }
}

const HOOK_COLUMNS: [&str; 9] =
    ["id", "repo_id", "org_id", "url", "secret", "secret_sealed", "events", "active", "created_at"];

impl Webhook {
    /// The HMAC key deliveries are signed with, opened with the server's key.
    pub fn signing_secret(&self, key: &SecretKey) -> Result<Option<String>, crate::secrets::SecretError> {
        match &self.secret {
            None => Ok(None),
            Some(plain) if !self.secret_sealed => Ok(Some(plain.clone())),
            Some(sealed) => {
                let bytes = key.open(&hook_slot(self.id), sealed)?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
    }
}

pub(crate) fn hook_slot(id: i64) -> String {
    format!("webhook:{id}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub guid: String,
    pub event: String,
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

impl FromDbRow for Delivery {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Delivery {
            id: row.get("id")?,
            webhook_id: row.get("webhook_id")?,
            guid: row.get("guid")?,
            event: row.get("event")?,
            payload: row.get("payload")?,
            state: row.get("state")?,
            attempts: row.get("attempts")?,
            next_attempt_at: Timestamp(row.get("next_attempt_at")?),
            status_code: row.get("status_code")?,
            error: row.get("error")?,
            duration_ms: row.get("duration_ms")?,
            created_at: Timestamp(row.get("created_at")?),
            delivered_at: row.get::<Option<i64>>("delivered_at")?.map(Timestamp),
        })
    }
}

const DELIVERY_COLUMNS: [&str; 13] = [
    "id",
    "webhook_id",
    "guid",
    "event",
    "payload",
    "state",
    "attempts",
    "next_attempt_at",
    "status_code",
    "error",
    "duration_ms",
    "created_at",
    "delivered_at",
];

/// A delivery to enqueue: which hook, which event, the JSON body.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub webhook_id: i64,
    pub guid: String,
    pub event: String,
    pub payload: String,
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub success: bool,
}

/// A new delivery id (`X-GitHub-Delivery`): 128 random bits in hex.
pub fn delivery_guid() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Seconds before retry `attempts` (1, 2, …): 10 s doubling, at most an hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 10) - 1).unwrap_or(0);
    Ord::min(10_000i64 << exp, 3_600_000)
}

impl PlatformStore {
    /// Creates a webhook; its `secret` (with the key to seal it under) signs deliveries.
    pub async fn create_webhook(
        &self,
        owner: HookOwner<'_>,
        url: &str,
        secret: Option<(&str, &SecretKey)>,
        events: &[String],
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Webhook> {
        let (column, owner_id) = owner.column();
        let insert = Query::insert()
            .into_table("webhooks")
            .columns([column, "url", "events", "active", "created_at"])
            .values_panic([owner_id.into(), url.into(), events.join(" ").into(), true.into(), now.0.into()])
            .returning_col("id")
            .to_owned();
        let mut tx = self.db.begin().await?;
        let id: i64 = tx.conn().fetch_one(&insert).await?;
        // Sealed for its own row (the id is the slot), in the same transaction.
        let sealed = match secret {
            None => None,
            Some((secret, key)) => {
                let sealed = key.seal(&hook_slot(id), secret.as_bytes()).map_err(|e| Error::Refused(e.to_string()))?;
                let update = Query::update()
                    .table("webhooks")
                    .values([("secret", sealed.as_str().into()), ("secret_sealed", true.into())])
                    .and_where(Expr::col("id").eq(id))
                    .to_owned();
                tx.conn().execute(&update).await?;
                Some(sealed)
            }
        };
        let event = AuditEvent::new("webhook.create", owner.audit_target())
            .org(owner.audit_org())
            .details(format!(r#"{{"id":{id},"url":{url:?},"events":{:?}}}"#, events.join(" ")));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        let (repo_id, org_id) = match owner {
            HookOwner::Repo(repo) => (Some(repo.id), None),
            HookOwner::Org(org) => (None, Some(org.id)),
        };
        Ok(Webhook {
            id,
            repo_id,
            org_id,
            url: url.to_owned(),
            secret_sealed: sealed.is_some(),
            secret: sealed,
            events: events.to_vec(),
            active: true,
            created_at: now,
        })
    }

    /// Seals the webhook secrets stored in the clear (written before secrets were sealed).
    /// Returns how many.
    pub async fn seal_webhook_secrets(&self, key: &SecretKey) -> Result<usize> {
        let mut tx = self.db.begin().await?;
        let q = Query::select()
            .columns(HOOK_COLUMNS)
            .from("webhooks")
            .and_where(Expr::col("secret").is_not_null())
            .and_where(Expr::col("secret_sealed").eq(false))
            .to_owned();
        let plain: Vec<Webhook> = tx.conn().fetch_all(&q).await?;
        for hook in &plain {
            let Some(secret) = &hook.secret else { continue };
            let sealed = key.seal(&hook_slot(hook.id), secret.as_bytes()).map_err(|e| Error::Refused(e.to_string()))?;
            let update = Query::update()
                .table("webhooks")
                .values([("secret", sealed.into()), ("secret_sealed", true.into())])
                .and_where(Expr::col("id").eq(hook.id))
                .to_owned();
            tx.conn().execute(&update).await?;
        }
        tx.commit().await?;
        Ok(plain.len())
    }

    /// The hooks of a repository, or of an organization.
    pub async fn list_webhooks(&self, owner: HookOwner<'_>) -> Result<Vec<Webhook>> {
        let (column, id) = owner.column();
        let q = Query::select()
            .columns(HOOK_COLUMNS)
            .from("webhooks")
            .and_where(Expr::col(column).eq(id))
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Every hook that hears about a repository: its own and its owning organization's (a user
    /// owner has none). `repo_id` and `owner_id` may name a repository that is gone.
    pub async fn hooks_hearing(&self, repo_id: i64, owner_id: i64) -> Result<Vec<Webhook>> {
        let q = Query::select()
            .columns(HOOK_COLUMNS)
            .from("webhooks")
            .cond_where(
                sea_query::Cond::any().add(Expr::col("repo_id").eq(repo_id)).add(Expr::col("org_id").eq(owner_id)),
            )
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    pub async fn get_webhook(&self, id: i64) -> Result<Option<Webhook>> {
        let q = Query::select().columns(HOOK_COLUMNS).from("webhooks").and_where(Expr::col("id").eq(id)).to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    pub async fn delete_webhook(&self, owner: HookOwner<'_>, id: i64, actor: &Actor, now: Timestamp) -> Result<bool> {
        let (column, owner_id) = owner.column();
        let delete = Query::delete()
            .from_table("webhooks")
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col(column).eq(owner_id))
            .to_owned();
        let event = AuditEvent::new("webhook.delete", owner.audit_target())
            .org(owner.audit_org())
            .details(format!(r#"{{"id":{id}}}"#));
        self.delete_audited(&delete, actor, &event, now).await
    }

    /// A consumer's position on the ref-change log (0 before its first event).
    pub async fn log_cursor(&self, name: &str) -> Result<u64> {
        crate::events::log_cursor(&mut self.db.acquire().await?.conn(), name).await
    }

    /// Enqueues deliveries and moves the consumer's cursor from `from` to `to`, in one
    /// transaction — unless another server moved the cursor first (then nothing is written, and
    /// this returns `false`).
    pub async fn enqueue_deliveries(
        &self,
        cursor: &str,
        from: u64,
        to: u64,
        deliveries: &[NewDelivery],
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        if !move_log_cursor(&mut tx.conn(), cursor, from, to).await? {
            return Ok(false);
        }
        for d in deliveries {
            let insert = Query::insert()
                .into_table("webhook_deliveries")
                .columns(["webhook_id", "guid", "event", "payload", "state", "next_attempt_at", "created_at"])
                .values_panic([
                    d.webhook_id.into(),
                    d.guid.as_str().into(),
                    d.event.as_str().into(),
                    d.payload.as_str().into(),
                    "pending".into(),
                    now.0.into(),
                    now.0.into(),
                ])
                .to_owned();
            tx.conn().execute(&insert).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Pending deliveries whose time has come, oldest first.
    pub async fn due_deliveries(&self, now: Timestamp, limit: u64) -> Result<Vec<Delivery>> {
        let q = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from("webhook_deliveries")
            .and_where(Expr::col("state").eq("pending"))
            .and_where(Expr::col("next_attempt_at").lte(now.0))
            .order_by("id", Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Claims a due delivery for one attempt: moves its next attempt `lease_ms` on, only if no
    /// other server did since it was read. `false`: another server is delivering it. A server that
    /// dies mid-attempt leaves it due again once the lease is over.
    pub async fn claim_delivery(&self, delivery: &Delivery, now: Timestamp, lease_ms: i64) -> Result<bool> {
        let update = Query::update()
            .table("webhook_deliveries")
            .value("next_attempt_at", now.0 + lease_ms)
            .and_where(Expr::col("id").eq(delivery.id))
            .and_where(Expr::col("state").eq("pending"))
            .and_where(Expr::col("attempts").eq(delivery.attempts))
            .and_where(Expr::col("next_attempt_at").eq(delivery.next_attempt_at.0))
            .to_owned();
        Ok(self.db.acquire().await?.conn().execute(&update).await? == 1)
    }

    /// Records an attempt: delivered, retried later (with backoff), or failed for good.
    pub async fn record_attempt(&self, delivery: &Delivery, outcome: &AttemptOutcome, now: Timestamp) -> Result<()> {
        let attempts = delivery.attempts + 1;
        let (state, next) = if outcome.success {
            ("delivered", now.0)
        } else if attempts >= MAX_ATTEMPTS {
            ("failed", now.0)
        } else {
            ("pending", now.0 + backoff_ms(attempts))
        };
        let update = Query::update()
            .table("webhook_deliveries")
            .values([
                ("state", state.into()),
                ("attempts", attempts.into()),
                ("next_attempt_at", next.into()),
                ("status_code", outcome.status_code.into()),
                ("error", outcome.error.clone().into()),
                ("duration_ms", outcome.duration_ms.into()),
                ("delivered_at", outcome.success.then_some(now.0).into()),
            ])
            .and_where(Expr::col("id").eq(delivery.id))
            .and_where(Expr::col("state").eq("pending"))
            .to_owned();
        self.db.acquire().await?.conn().execute(&update).await?;
        Ok(())
    }

    pub async fn list_deliveries(&self, webhook_id: i64, limit: u64) -> Result<Vec<Delivery>> {
        let q = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from("webhook_deliveries")
            .and_where(Expr::col("webhook_id").eq(webhook_id))
            .order_by("id", Order::Desc)
            .limit(limit)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Queues a delivery again, now, as a new delivery with the same payload.
    pub async fn redeliver(
        &self,
        webhook_id: i64,
        delivery_id: i64,
        guid: &str,
        now: Timestamp,
    ) -> Result<Option<i64>> {
        let q = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from("webhook_deliveries")
            .and_where(Expr::col("id").eq(delivery_id))
            .and_where(Expr::col("webhook_id").eq(webhook_id))
            .to_owned();
        let mut conn = self.db.acquire().await?;
        let Some(old): Option<Delivery> = conn.conn().fetch_optional(&q).await? else { return Ok(None) };
        let insert = Query::insert()
            .into_table("webhook_deliveries")
            .columns(["webhook_id", "guid", "event", "payload", "state", "next_attempt_at", "created_at"])
            .values_panic([
                webhook_id.into(),
                guid.into(),
                old.event.into(),
                old.payload.into(),
                "pending".into(),
                now.0.into(),
                now.0.into(),
            ])
            .returning_col("id")
            .to_owned();
        Ok(Some(conn.conn().fetch_one(&insert).await?))
    }

    /// A repository by its id.
    pub async fn get_repo_by_id(&self, id: i64) -> Result<Option<Repo>> {
        let q = crate::store::repo_select().and_where(Expr::col(("repos", "id")).eq(id)).to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(super::backoff_ms(1), 10_000);
        assert_eq!(super::backoff_ms(2), 20_000);
        assert_eq!(super::backoff_ms(4), 80_000);
        assert_eq!(super::backoff_ms(30), 3_600_000);
    }
}
