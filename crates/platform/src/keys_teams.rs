//! Users' SSH public keys, and teams: groups of an organization's members that are granted roles
//! on its repositories.

use gitstratum_core::{SshPublicKey, Timestamp, validate_username};
use sea_query::{Expr, ExprTrait, OnConflict, Order, Query};

use crate::audit::{Actor, AuditEvent, append_audit};
use crate::db::{DbRow, FromDbRow, is_unique_violation};
use crate::policy::Role;
use crate::store::{ACCOUNT_COLUMNS, Account, Error, PlatformStore, Principal, Repo, Result, credential_account};
use crate::token::{Scope, Scopes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub key_type: String,
    /// The key blob, base64 (the second field of an `authorized_keys` line).
    pub key_blob: String,
    pub bits: i64,
    pub fingerprint: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

impl FromDbRow for SshKey {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(SshKey {
            id: row.get("id")?,
            user_id: row.get("user_id")?,
            title: row.get("title")?,
            key_type: row.get("key_type")?,
            key_blob: row.get("key_blob")?,
            bits: row.get("bits")?,
            fingerprint: row.get("fingerprint")?,
            created_at: Timestamp(row.get("created_at")?),
            last_used_at: row.get::<Option<i64>>("last_used_at")?.map(Timestamp),
        })
    }
}

const KEY_COLUMNS: [&str; 9] =
    ["id", "user_id", "title", "key_type", "key_blob", "bits", "fingerprint", "created_at", "last_used_at"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
    pub created_at: Timestamp,
}

impl FromDbRow for Team {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Team {
            id: row.get("id")?,
            org_id: row.get("org_id")?,
            name: row.get("name")?,
            created_at: Timestamp(row.get("created_at")?),
        })
    }
}

const TEAM_COLUMNS: [&str; 4] = ["id", "org_id", "name", "created_at"];

/// A team's grant on one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamGrant {
    pub team: Team,
    pub role: Role,
}

impl FromDbRow for TeamGrant {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let role: String = row.get("role")?;
        Ok(TeamGrant {
            team: Team::from_row(row)?,
            role: role.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        })
    }
}

impl PlatformStore {
    /// Adds a validated key ([`gitstratum_core::parse_ssh_public_key`]) to a user. A key already
    /// registered, by anyone, is a conflict: one key names one user.
    pub async fn add_ssh_key(
        &self,
        user: &Account,
        title: &str,
        key: &SshPublicKey,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<SshKey> {
        if user.is_org {
            return Err(Error::Refused(format!("{} is an organization; keys belong to users", user.name)));
        }
        let bits = i64::try_from(key.bits).unwrap_or(i64::MAX);
        let insert = Query::insert()
            .into_table("ssh_keys")
            .columns(["user_id", "title", "key_type", "key_blob", "bits", "fingerprint", "created_at"])
            .values_panic([
                user.id.into(),
                title.into(),
                key.key_type.as_str().into(),
                key.blob_base64.as_str().into(),
                bits.into(),
                key.fingerprint.as_str().into(),
                now.0.into(),
            ])
            .returning_col("id")
            .to_owned();
        let mut tx = self.db.begin().await?;
        let id: i64 = tx.conn().fetch_one(&insert).await.map_err(|e| {
            if is_unique_violation(&e) { Error::Conflict { what: "this SSH key".into() } } else { e.into() }
        })?;
        let event = AuditEvent::new("ssh_key.add", format!("user:{}", user.name))
            .details(format!(r#"{{"fingerprint":"{}","title":{:?}}}"#, key.fingerprint, title));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(SshKey {
            id,
            user_id: user.id,
            title: title.to_owned(),
            key_type: key.key_type.clone(),
            key_blob: key.blob_base64.clone(),
            bits,
            fingerprint: key.fingerprint.clone(),
            created_at: now,
            last_used_at: None,
        })
    }

    pub async fn list_ssh_keys(&self, user_id: i64) -> Result<Vec<SshKey>> {
        let q = Query::select()
            .columns(KEY_COLUMNS)
            .from("ssh_keys")
            .and_where(Expr::col("user_id").eq(user_id))
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// The key with this fingerprint and its user (what the SSH transport will ask).
    pub async fn find_ssh_key(&self, fingerprint: &str) -> Result<Option<SshKey>> {
        let q = Query::select()
            .columns(KEY_COLUMNS)
            .from("ssh_keys")
            .and_where(Expr::col("fingerprint").eq(fingerprint))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// Who presents the key with this fingerprint over SSH (its signature already verified): its
    /// user, with the repository powers of a full token (`repo:read`, `repo:write`,
    /// `repo:admin`; never site administration). `None` for an unknown key or a suspended
    /// account. Records the key's use (as a token's, at most once a minute).
    pub async fn authenticate_ssh_key(&self, fingerprint: &str, now: Timestamp) -> Result<Option<(SshKey, Principal)>> {
        let mut conn = self.db.acquire().await?;
        let key: Option<SshKey> = conn
            .conn()
            .fetch_optional(
                &Query::select()
                    .columns(KEY_COLUMNS)
                    .from("ssh_keys")
                    .and_where(Expr::col("fingerprint").eq(fingerprint))
                    .to_owned(),
            )
            .await?;
        let Some(key) = key else { return Ok(None) };
        let Some(account) =
            credential_account(&mut conn, "ssh_keys", key.id, key.last_used_at, key.user_id, now).await?
        else {
            return Ok(None);
        };
        let principal = Principal {
            account,
            token_id: 0,
            scopes: Scopes::new([Scope::RepoRead, Scope::RepoWrite, Scope::RepoAdmin]),
            repo_only: None,
            session: false,
            expires_at: None,
        };
        Ok(Some((key, principal)))
    }

    /// Removes one of a user's keys; false when they have no such key.
    pub async fn remove_ssh_key(&self, user: &Account, key_id: i64, actor: &Actor, now: Timestamp) -> Result<bool> {
        let delete = Query::delete()
            .from_table("ssh_keys")
            .and_where(Expr::col("id").eq(key_id))
            .and_where(Expr::col("user_id").eq(user.id))
            .to_owned();
        let event = AuditEvent::new("ssh_key.remove", format!("user:{}", user.name))
            .details(format!(r#"{{"key_id":{key_id}}}"#));
        self.delete_audited(&delete, actor, &event, now).await
    }

    pub async fn create_team(&self, org: &Account, name: &str, actor: &Actor, now: Timestamp) -> Result<Team> {
        validate_username(name).map_err(|source| Error::InvalidName { field: "name", source })?;
        let insert = Query::insert()
            .into_table("teams")
            .columns(["org_id", "name", "name_key", "created_at"])
            .values_panic([org.id.into(), name.into(), name.to_ascii_lowercase().into(), now.0.into()])
            .returning_col("id")
            .to_owned();
        let mut tx = self.db.begin().await?;
        let id: i64 = tx.conn().fetch_one(&insert).await.map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict { what: format!("team {}/{name}", org.name) }
            } else {
                e.into()
            }
        })?;
        let event = AuditEvent::new("team.create", format!("team:{}/{name}", org.name)).org(Some(org.id));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(Team { id, org_id: org.id, name: name.to_owned(), created_at: now })
    }

    pub async fn find_team(&self, org_id: i64, name: &str) -> Result<Option<Team>> {
        let q = Query::select()
            .columns(TEAM_COLUMNS)
            .from("teams")
            .and_where(Expr::col("org_id").eq(org_id))
            .and_where(Expr::col("name_key").eq(name.to_ascii_lowercase()))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    pub async fn list_teams(&self, org_id: i64) -> Result<Vec<Team>> {
        let q = Query::select()
            .columns(TEAM_COLUMNS)
            .from("teams")
            .and_where(Expr::col("org_id").eq(org_id))
            .order_by("name_key", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Adds a user to a team; the user must be a member of the team's organization.
    pub async fn add_team_member(
        &self,
        org: &Account,
        team: &Team,
        user: &Account,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        if self.org_role(org.id, user.id).await?.is_none() {
            return Err(Error::Refused(format!("{} is not a member of {}", user.name, org.name)));
        }
        let insert = Query::insert()
            .into_table("team_members")
            .columns(["team_id", "user_id", "created_at"])
            .values_panic([team.id.into(), user.id.into(), now.0.into()])
            .on_conflict(OnConflict::columns(["team_id", "user_id"]).do_nothing().to_owned())
            .to_owned();
        let mut tx = self.db.begin().await?;
        tx.conn().execute(&insert).await?;
        let event = AuditEvent::new("team.member.add", format!("team:{}/{}", org.name, team.name))
            .org(Some(org.id))
            .details(format!(r#"{{"user":{:?}}}"#, user.name));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn remove_team_member(
        &self,
        org: &Account,
        team: &Team,
        user: &Account,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<bool> {
        let delete = Query::delete()
            .from_table("team_members")
            .and_where(Expr::col("team_id").eq(team.id))
            .and_where(Expr::col("user_id").eq(user.id))
            .to_owned();
        let event = AuditEvent::new("team.member.remove", format!("team:{}/{}", org.name, team.name))
            .org(Some(org.id))
            .details(format!(r#"{{"user":{:?}}}"#, user.name));
        self.delete_audited(&delete, actor, &event, now).await
    }

    pub async fn team_members(&self, team_id: i64) -> Result<Vec<Account>> {
        let q = Query::select()
            .columns(ACCOUNT_COLUMNS.map(|c| ("accounts", c)))
            .from("accounts")
            .inner_join("team_members", Expr::col(("team_members", "user_id")).equals(("accounts", "id")))
            .and_where(Expr::col(("team_members", "team_id")).eq(team_id))
            .order_by(("accounts", "name_key"), Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Grants a team a role on one of its organization's repositories (replacing an earlier grant).
    pub async fn set_team_repo(
        &self,
        org: &Account,
        team: &Team,
        repo: &Repo,
        role: Role,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        if repo.owner_id != org.id {
            return Err(Error::Refused(format!("{}/{} does not belong to {}", repo.owner, repo.name, org.name)));
        }
        let upsert = Query::insert()
            .into_table("team_repos")
            .columns(["team_id", "repo_id", "role", "created_at"])
            .values_panic([team.id.into(), repo.id.into(), role.as_str().into(), now.0.into()])
            .on_conflict(OnConflict::columns(["team_id", "repo_id"]).update_column("role").to_owned())
            .to_owned();
        let mut tx = self.db.begin().await?;
        tx.conn().execute(&upsert).await?;
        let event = AuditEvent::new("team.repo.set", format!("team:{}/{}", org.name, team.name))
            .org(Some(org.id))
            .details(format!(r#"{{"repo":"{}/{}","permission":"{role}"}}"#, repo.owner, repo.name));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn remove_team_repo(
        &self,
        org: &Account,
        team: &Team,
        repo: &Repo,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<bool> {
        let delete = Query::delete()
            .from_table("team_repos")
            .and_where(Expr::col("team_id").eq(team.id))
            .and_where(Expr::col("repo_id").eq(repo.id))
            .to_owned();
        let event = AuditEvent::new("team.repo.remove", format!("team:{}/{}", org.name, team.name))
            .org(Some(org.id))
            .details(format!(r#"{{"repo":"{}/{}"}}"#, repo.owner, repo.name));
        self.delete_audited(&delete, actor, &event, now).await
    }

    /// The teams granted a role on a repository, by team name.
    pub async fn repo_teams(&self, repo_id: i64) -> Result<Vec<TeamGrant>> {
        let q = Query::select()
            .columns(TEAM_COLUMNS.map(|c| ("teams", c)))
            .column(("team_repos", "role"))
            .from("teams")
            .inner_join("team_repos", Expr::col(("team_repos", "team_id")).equals(("teams", "id")))
            .and_where(Expr::col(("team_repos", "repo_id")).eq(repo_id))
            .order_by(("teams", "name_key"), Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// The highest role a user holds on a repository through their teams.
    pub(crate) async fn team_role(&self, user_id: i64, repo_id: i64) -> Result<Option<Role>> {
        let q = Query::select()
            .column(("team_repos", "role"))
            .from("team_repos")
            .inner_join("team_members", Expr::col(("team_members", "team_id")).equals(("team_repos", "team_id")))
            .and_where(Expr::col(("team_members", "user_id")).eq(user_id))
            .and_where(Expr::col(("team_repos", "repo_id")).eq(repo_id))
            .to_owned();
        let roles: Vec<String> = self.db.acquire().await?.conn().fetch_all(&q).await?;
        let mut best = None;
        for role in roles {
            let role: Role = role.parse().map_err(|e: String| Error::Db(sqlx::Error::Decode(e.into())))?;
            best = Ord::max(best, Some(role));
        }
        Ok(best)
    }
}
