//! CI secrets and configuration variables of repositories and organizations.
//!
//! Secret values are sealed with XChaCha20-Poly1305 under the server's [`SecretKey`]; the
//! associated data names the slot (`repo:ID:NAME` or `org:ID:NAME`), so a sealed value moved to
//! another row does not open. Values are only ever opened to hand a job the secrets its workflow
//! references; no listing returns them. An organization's secret reaches the repositories its
//! visibility allows (`all`, `private` ones, or `selected` ones); a repository's secret of the same
//! name wins. Variables are plain text, readable by whoever may read the repository.

use std::collections::BTreeMap;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use gitstratum_core::Timestamp;
use sea_query::{Expr, ExprTrait, Order, Query};

use crate::audit::{Actor, AuditEvent, append_audit};
use crate::db::{Conn, DbRow, FromDbRow};
use crate::store::{Error, PlatformStore, Repo, Result};
use crate::webhooks::HookOwner as Owner;

/// The longest secret value (as GitHub: 48 KiB).
pub const MAX_SECRET_BYTES: usize = 48 * 1024;
/// The longest variable value.
pub const MAX_VARIABLE_BYTES: usize = 48 * 1024;

/// The key secrets are sealed with: 32 bytes, from `DATA/secrets.key` or the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a secrets key is 64 hexadecimal digits (32 bytes)")]
    BadKey,
    #[error("the secret cannot be opened with this key (a different key, or a damaged value)")]
    Open,
    #[error("no OS randomness: {0}")]
    Random(getrandom::Error),
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    /// From 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<SecretKey, SecretError> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SecretError::BadKey);
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| SecretError::BadKey)?;
        }
        Ok(SecretKey(key))
    }

    /// A fresh random key.
    pub fn generate() -> Result<SecretKey, SecretError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(SecretError::Random)?;
        Ok(SecretKey(key))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `plaintext` sealed for `slot`: base64 of a random 24-byte nonce and the ciphertext with its
    /// tag.
    pub fn seal(&self, slot: &str, plaintext: &[u8]) -> Result<String, SecretError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(SecretError::Random)?;
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: slot.as_bytes() })
            .map_err(|_| SecretError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Opens what [`SecretKey::seal`] sealed for `slot`.
    pub fn open(&self, slot: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| SecretError::Open)?;
        if bytes.len() < 24 + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| SecretError::Open)?;
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: slot.as_bytes() })
            .map_err(|_| SecretError::Open)
    }
}

/// [`normalize_name`] as a JSON Schema pattern, for the API's document.
pub const NAME_PATTERN: &str = r"^(?![0-9])(?![Gg][Ii][Tt][Hh][Uu][Bb]_)[A-Za-z0-9_]{1,100}$";

/// A secret's or variable's name as GitHub allows it: letters, digits and `_`, not starting with a
/// digit or `GITHUB_`, at most 100 characters. Names are case-insensitive; they are kept in
/// upper case.
pub fn normalize_name(name: &str) -> Result<String, String> {
    let upper = name.to_ascii_uppercase();
    if upper.is_empty() || upper.len() > 100 {
        return Err("a name has 1 to 100 characters".to_owned());
    }
    if !upper.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("a name has only letters, digits and _".to_owned());
    }
    if upper.as_bytes()[0].is_ascii_digit() {
        return Err("a name does not start with a digit".to_owned());
    }
    if upper.starts_with("GITHUB_") {
        return Err("names starting with GITHUB_ are reserved".to_owned());
    }
    Ok(upper)
}

/// Which repositories of an organization see one of its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    Private,
    /// These repositories (ids).
    Selected(Vec<i64>),
}

impl Visibility {
    pub fn as_str(&self) -> &'static str {
        match self {
            Visibility::All => "all",
            Visibility::Private => "private",
            Visibility::Selected(_) => "selected",
        }
    }
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Organization secrets only.
    pub visibility: Option<Visibility>,
}

/// A variable, value and all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub value: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

struct SecretRow {
    id: i64,
    repo_id: Option<i64>,
    org_id: Option<i64>,
    name: String,
    sealed: String,
    visibility: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl FromDbRow for SecretRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(SecretRow {
            id: row.get("id")?,
            repo_id: row.get("repo_id")?,
            org_id: row.get("org_id")?,
            name: row.get("name")?,
            sealed: row.get("sealed")?,
            visibility: row.get("visibility")?,
            created_at: Timestamp(row.get("created_at")?),
            updated_at: Timestamp(row.get("updated_at")?),
        })
    }
}

const SECRET_COLUMNS: [&str; 8] =
    ["id", "repo_id", "org_id", "name", "sealed", "visibility", "created_at", "updated_at"];

impl SecretRow {
    fn slot(&self) -> String {
        match (self.repo_id, self.org_id) {
            (Some(repo), _) => format!("repo:{repo}:{}", self.name),
            (None, Some(org)) => format!("org:{org}:{}", self.name),
            (None, None) => format!("none:{}", self.name),
        }
    }
}

fn slot(owner: Owner<'_>, name: &str) -> String {
    let (column, id) = owner.column();
    let kind = if column == "repo_id" { "repo" } else { "org" };
    format!("{kind}:{id}:{name}")
}

struct VariableRow {
    name: String,
    value: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl FromDbRow for VariableRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(VariableRow {
            name: row.get("name")?,
            value: row.get("value")?,
            created_at: Timestamp(row.get("created_at")?),
            updated_at: Timestamp(row.get("updated_at")?),
        })
    }
}

fn refused(e: SecretError) -> Error {
    Error::Refused(e.to_string())
}

impl PlatformStore {
    /// Creates or replaces a secret (sealed with `key`); true when it was created. `visibility`
    /// is for organization secrets (default `all`).
    #[allow(clippy::too_many_arguments)] // the slot, the value, its key, who and when
    pub async fn put_secret(
        &self,
        owner: Owner<'_>,
        name: &str,
        value: &str,
        visibility: Option<&Visibility>,
        key: &SecretKey,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<bool> {
        let name = normalize_name(name).map_err(Error::Refused)?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(Error::Refused(format!("a secret's value has at most {MAX_SECRET_BYTES} bytes")));
        }
        let sealed = key.seal(&slot(owner, &name), value.as_bytes()).map_err(refused)?;
        let (column, owner_id) = owner.column();
        let visibility = match owner {
            Owner::Repo(_) => None,
            Owner::Org(_) => Some(visibility.cloned().unwrap_or(Visibility::All)),
        };
        let mut tx = self.db.begin().await?;
        let existing = Query::select()
            .column("id")
            .from("secrets")
            .and_where(Expr::col(column).eq(owner_id))
            .and_where(Expr::col("name").eq(name.as_str()))
            .to_owned();
        let existing: Option<i64> = tx.conn().fetch_optional(&existing).await?;
        let id = match existing {
            Some(id) => {
                let update = Query::update()
                    .table("secrets")
                    .values([
                        ("sealed", sealed.into()),
                        ("visibility", visibility.as_ref().map(Visibility::as_str).into()),
                        ("updated_at", now.0.into()),
                    ])
                    .and_where(Expr::col("id").eq(id))
                    .to_owned();
                tx.conn().execute(&update).await?;
                id
            }
            None => {
                let insert = Query::insert()
                    .into_table("secrets")
                    .columns([column, "name", "sealed", "visibility", "created_at", "updated_at"])
                    .values_panic([
                        owner_id.into(),
                        name.as_str().into(),
                        sealed.into(),
                        visibility.as_ref().map(Visibility::as_str).into(),
                        now.0.into(),
                        now.0.into(),
                    ])
                    .returning_col("id")
                    .to_owned();
                tx.conn().fetch_one(&insert).await?
            }
        };
        let delete = Query::delete().from_table("secret_repos").and_where(Expr::col("secret_id").eq(id)).to_owned();
        tx.conn().execute(&delete).await?;
        if let Some(Visibility::Selected(repos)) = &visibility {
            for repo in repos {
                let insert = Query::insert()
                    .into_table("secret_repos")
                    .columns(["secret_id", "repo_id"])
                    .values_panic([id.into(), (*repo).into()])
                    .to_owned();
                tx.conn().execute(&insert).await?;
            }
        }
        let action = if existing.is_some() { "secret.update" } else { "secret.create" };
        let event = AuditEvent::new(action, owner.audit_target())
            .org(owner.audit_org())
            .details(format!(r#"{{"name":{name:?}}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(existing.is_none())
    }

    /// The secrets of a repository or organization, by name: names, dates, visibility.
    pub async fn list_secrets(&self, owner: Owner<'_>) -> Result<Vec<SecretInfo>> {
        let (column, owner_id) = owner.column();
        let q = Query::select()
            .columns(SECRET_COLUMNS)
            .from("secrets")
            .and_where(Expr::col(column).eq(owner_id))
            .order_by("name", Order::Asc)
            .to_owned();
        let mut conn = self.db.acquire().await?;
        let rows: Vec<SecretRow> = conn.conn().fetch_all(&q).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let visibility = match row.visibility.as_deref() {
                None => None,
                Some("selected") => Some(Visibility::Selected(selected_repos(&mut conn.conn(), row.id).await?)),
                Some("private") => Some(Visibility::Private),
                Some(_) => Some(Visibility::All),
            };
            out.push(SecretInfo { name: row.name, created_at: row.created_at, updated_at: row.updated_at, visibility });
        }
        Ok(out)
    }

    /// Deletes a secret; false when there was none of that name.
    pub async fn delete_secret(&self, owner: Owner<'_>, name: &str, actor: &Actor, now: Timestamp) -> Result<bool> {
        let name = name.to_ascii_uppercase();
        let (column, owner_id) = owner.column();
        let mut tx = self.db.begin().await?;
        let delete = Query::delete()
            .from_table("secrets")
            .and_where(Expr::col(column).eq(owner_id))
            .and_where(Expr::col("name").eq(name.as_str()))
            .to_owned();
        if tx.conn().execute(&delete).await? == 0 {
            return Ok(false);
        }
        let event = AuditEvent::new("secret.delete", owner.audit_target())
            .org(owner.audit_org())
            .details(format!(r#"{{"name":{name:?}}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The secrets a job of `repo` may have, opened: the organization's that reach the
    /// repository, then the repository's own (which win). Only `names` when given (upper case);
    /// every one when `None`.
    pub async fn secrets_for_repo(
        &self,
        repo: &Repo,
        names: Option<&[String]>,
        key: &SecretKey,
    ) -> Result<BTreeMap<String, String>> {
        if names.is_some_and(<[String]>::is_empty) {
            return Ok(BTreeMap::new());
        }
        let q = Query::select()
            .columns(SECRET_COLUMNS)
            .from("secrets")
            .cond_where(Expr::col("repo_id").eq(repo.id).or(Expr::col("org_id").eq(repo.owner_id)))
            .to_owned();
        let mut conn = self.db.acquire().await?;
        let rows: Vec<SecretRow> = conn.conn().fetch_all(&q).await?;
        let mut out = BTreeMap::new();
        // Organization secrets first, so the repository's own replace them.
        let (org, own): (Vec<SecretRow>, Vec<SecretRow>) = rows.into_iter().partition(|r| r.repo_id.is_none());
        for row in org.into_iter().chain(own) {
            if names.is_some_and(|n| !n.contains(&row.name)) {
                continue;
            }
            let reaches = match row.visibility.as_deref() {
                None | Some("all") => true,
                Some("private") => repo.private,
                Some(_) => selected_repos(&mut conn.conn(), row.id).await?.contains(&repo.id),
            };
            if row.repo_id.is_none() && !reaches {
                continue;
            }
            let value = key.open(&row.slot(), &row.sealed).map_err(refused)?;
            out.insert(row.name, String::from_utf8_lossy(&value).into_owned());
        }
        Ok(out)
    }

    /// Seals every secret (CI secrets and webhook secrets) again under `new` (after opening it
    /// with `old`), in one transaction. Returns how many.
    pub async fn reseal_secrets(&self, old: &SecretKey, new: &SecretKey) -> Result<usize> {
        let mut tx = self.db.begin().await?;
        let q = Query::select().columns(SECRET_COLUMNS).from("secrets").to_owned();
        let rows: Vec<SecretRow> = tx.conn().fetch_all(&q).await?;
        for row in &rows {
            let value = old.open(&row.slot(), &row.sealed).map_err(refused)?;
            let sealed = new.seal(&row.slot(), &value).map_err(refused)?;
            let update = Query::update()
                .table("secrets")
                .value("sealed", sealed)
                .and_where(Expr::col("id").eq(row.id))
                .to_owned();
            tx.conn().execute(&update).await?;
        }
        // Webhook secrets are sealed under the same key.
        let hooks = Query::select()
            .columns(["id", "secret"])
            .from("webhooks")
            .and_where(Expr::col("secret_sealed").eq(true))
            .to_owned();
        let hooks: Vec<SealedHook> = tx.conn().fetch_all(&hooks).await?;
        for hook in &hooks {
            let slot = crate::webhooks::hook_slot(hook.id);
            let value = old.open(&slot, &hook.secret).map_err(refused)?;
            let sealed = new.seal(&slot, &value).map_err(refused)?;
            let update = Query::update()
                .table("webhooks")
                .value("secret", sealed)
                .and_where(Expr::col("id").eq(hook.id))
                .to_owned();
            tx.conn().execute(&update).await?;
        }
        tx.commit().await?;
        Ok(rows.len() + hooks.len())
    }

    /// Creates or replaces a variable; true when it was created.
    pub async fn put_variable(
        &self,
        owner: Owner<'_>,
        name: &str,
        value: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<bool> {
        let name = normalize_name(name).map_err(Error::Refused)?;
        if value.len() > MAX_VARIABLE_BYTES {
            return Err(Error::Refused(format!("a variable's value has at most {MAX_VARIABLE_BYTES} bytes")));
        }
        let (column, owner_id) = owner.column();
        let mut tx = self.db.begin().await?;
        let update = Query::update()
            .table("variables")
            .values([("value", value.into()), ("updated_at", now.0.into())])
            .and_where(Expr::col(column).eq(owner_id))
            .and_where(Expr::col("name").eq(name.as_str()))
            .to_owned();
        let created = tx.conn().execute(&update).await? == 0;
        if created {
            let insert = Query::insert()
                .into_table("variables")
                .columns([column, "name", "value", "created_at", "updated_at"])
                .values_panic([owner_id.into(), name.as_str().into(), value.into(), now.0.into(), now.0.into()])
                .to_owned();
            tx.conn().execute(&insert).await?;
        }
        let action = if created { "variable.create" } else { "variable.update" };
        let event = AuditEvent::new(action, owner.audit_target())
            .org(owner.audit_org())
            .details(format!(r#"{{"name":{name:?}}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn list_variables(&self, owner: Owner<'_>) -> Result<Vec<Variable>> {
        let (column, owner_id) = owner.column();
        let q = Query::select()
            .columns(["name", "value", "created_at", "updated_at"])
            .from("variables")
            .and_where(Expr::col(column).eq(owner_id))
            .order_by("name", Order::Asc)
            .to_owned();
        let rows: Vec<VariableRow> = self.db.acquire().await?.conn().fetch_all(&q).await?;
        Ok(rows
            .into_iter()
            .map(|r| Variable { name: r.name, value: r.value, created_at: r.created_at, updated_at: r.updated_at })
            .collect())
    }

    pub async fn delete_variable(&self, owner: Owner<'_>, name: &str, actor: &Actor, now: Timestamp) -> Result<bool> {
        let name = name.to_ascii_uppercase();
        let (column, owner_id) = owner.column();
        let mut tx = self.db.begin().await?;
        let delete = Query::delete()
            .from_table("variables")
            .and_where(Expr::col(column).eq(owner_id))
            .and_where(Expr::col("name").eq(name.as_str()))
            .to_owned();
        if tx.conn().execute(&delete).await? == 0 {
            return Ok(false);
        }
        let event = AuditEvent::new("variable.delete", owner.audit_target())
            .org(owner.audit_org())
            .details(format!(r#"{{"name":{name:?}}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The `vars` context of a job of `repo`: its organization's variables, then its own (which
    /// win).
    pub async fn variables_for_repo(&self, repo: &Repo) -> Result<BTreeMap<String, String>> {
        let q = Query::select()
            .columns(["repo_id", "name", "value", "created_at", "updated_at"])
            .from("variables")
            .cond_where(Expr::col("repo_id").eq(repo.id).or(Expr::col("org_id").eq(repo.owner_id)))
            .order_by("repo_id", Order::Asc)
            .to_owned();
        let rows: Vec<(Option<i64>, VariableRow)> = {
            let rows: Vec<ScopedVariable> = self.db.acquire().await?.conn().fetch_all(&q).await?;
            rows.into_iter().map(|r| (r.repo_id, r.row)).collect()
        };
        let (org, own): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(repo, _)| repo.is_none());
        Ok(org.into_iter().chain(own).map(|(_, r)| (r.name, r.value)).collect())
    }
}

struct SealedHook {
    id: i64,
    secret: String,
}

impl FromDbRow for SealedHook {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(SealedHook { id: row.get("id")?, secret: row.get("secret")? })
    }
}

struct ScopedVariable {
    repo_id: Option<i64>,
    row: VariableRow,
}

impl FromDbRow for ScopedVariable {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(ScopedVariable { repo_id: row.get("repo_id")?, row: VariableRow::from_row(row)? })
    }
}

async fn selected_repos(conn: &mut Conn<'_>, secret_id: i64) -> Result<Vec<i64>> {
    let q = Query::select()
        .column("repo_id")
        .from("secret_repos")
        .and_where(Expr::col("secret_id").eq(secret_id))
        .order_by("repo_id", Order::Asc)
        .to_owned();
    Ok(conn.fetch_all(&q).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_slot() {
        let key = SecretKey::generate().expect("key");
        let sealed = key.seal("repo:1:TOKEN", b"hunter2").expect("seal");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, key.seal("repo:1:TOKEN", b"hunter2").expect("seal"), "a fresh nonce each time");
        assert_eq!(key.open("repo:1:TOKEN", &sealed).expect("open"), b"hunter2");
        assert!(key.open("repo:2:TOKEN", &sealed).is_err(), "moved to another slot");
        assert!(SecretKey::generate().expect("key").open("repo:1:TOKEN", &sealed).is_err(), "another key");
        let mut damaged = base64::engine::general_purpose::STANDARD.decode(&sealed).expect("b64");
        damaged[30] ^= 1;
        let damaged = base64::engine::general_purpose::STANDARD.encode(damaged);
        assert!(key.open("repo:1:TOKEN", &damaged).is_err());
        assert_eq!(SecretKey::from_hex(&key.to_hex()).expect("hex").0, key.0);
        assert!(SecretKey::from_hex("abc").is_err());
    }

    #[test]
    fn names_follow_githubs_rules() {
        assert_eq!(normalize_name("deploy_key").as_deref(), Ok("DEPLOY_KEY"));
        assert_eq!(normalize_name("_x1").as_deref(), Ok("_X1"));
        for bad in ["", "1ABC", "A-B", "A B", "github_token", "GITHUB_X", &"A".repeat(101)] {
            assert!(normalize_name(bad).is_err(), "{bad}");
        }
    }
}
