//! Organizations, their members, repository collaborators, and the role a user holds on a
//! repository (the input of [`crate::policy::decide`]).

use std::fmt;
use std::str::FromStr;

use gitstratum_core::{Timestamp, validate_username};
use sea_query::{Expr, ExprTrait, OnConflict, Order, Query};

use crate::audit::{Actor, AuditEvent, append_audit};
use crate::db::{DbRow, FromDbRow, is_unique_violation};
use crate::policy::Role;
use crate::store::{ACCOUNT_COLUMNS, Account, Error, PlatformStore, Repo, Result, insert_account};

/// A user's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrgRole {
    /// Reads the organization's repositories (its base permission).
    Member,
    /// Administers the organization and every repository it owns.
    Owner,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Member => "member",
            OrgRole::Owner => "owner",
        }
    }
}

impl fmt::Display for OrgRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrgRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "member" => Ok(OrgRole::Member),
            "owner" => Ok(OrgRole::Owner),
            other => Err(format!("unknown organization role {other:?}; expected owner or member")),
        }
    }
}

/// An account with a role: an organization member or a repository collaborator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<R> {
    pub account: Account,
    pub role: R,
}

impl<R: FromStr<Err = String>> FromDbRow for Member<R> {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let role: String = row.get("role")?;
        Ok(Member {
            account: Account::from_row(row)?,
            role: role.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        })
    }
}

fn role_of<R: FromStr<Err = String>>(role: Option<String>) -> Result<Option<R>> {
    role.map(|r| r.parse().map_err(|e: String| Error::Db(sqlx::Error::Decode(e.into())))).transpose()
}

fn members_query(table: &str, key: &str, id: i64) -> sea_query::SelectStatement {
    Query::select()
        .columns(ACCOUNT_COLUMNS.map(|c| ("accounts", c)))
        .column((sea_query::Alias::new(table), sea_query::Alias::new("role")))
        .from("accounts")
        .inner_join(
            sea_query::Alias::new(table),
            Expr::col((sea_query::Alias::new(table), sea_query::Alias::new("user_id"))).equals(("accounts", "id")),
        )
        .and_where(Expr::col((sea_query::Alias::new(table), sea_query::Alias::new(key))).eq(id))
        .order_by(("accounts", "name_key"), Order::Asc)
        .to_owned()
}

struct RoleRow(String);

impl FromDbRow for RoleRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(RoleRow(row.get("role")?))
    }
}

impl PlatformStore {
    /// Creates an organization with `creator` as its first owner.
    pub async fn create_org(&self, name: &str, creator: &Account, actor: &Actor, now: Timestamp) -> Result<Account> {
        validate_username(name).map_err(|source| Error::InvalidName { field: "name", source })?;
        let mut tx = self.db.begin().await?;
        let id: i64 = tx.conn().fetch_one(&insert_account(name, "org", false, now)).await.map_err(|e| {
            if is_unique_violation(&e) { Error::Conflict { what: format!("account {name:?}") } } else { e.into() }
        })?;
        tx.conn().execute(&upsert_member(id, creator.id, OrgRole::Owner, now)).await?;
        let event = AuditEvent::new("org.create", format!("org:{name}")).org(Some(id));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(Account { id, name: name.to_owned(), is_admin: false, is_org: true, created_at: now, suspended_at: None })
    }

    /// Organizations `user_id` belongs to, or every organization when `None`.
    pub async fn list_orgs(&self, user_id: Option<i64>) -> Result<Vec<Account>> {
        let mut q = Query::select()
            .columns(ACCOUNT_COLUMNS.map(|c| ("accounts", c)))
            .from("accounts")
            .and_where(Expr::col(("accounts", "kind")).eq("org"))
            .order_by(("accounts", "name_key"), Order::Asc)
            .to_owned();
        if let Some(user) = user_id {
            q.and_where(
                Expr::col(("accounts", "id")).in_subquery(
                    Query::select()
                        .column("org_id")
                        .from("org_members")
                        .and_where(Expr::col("user_id").eq(user))
                        .to_owned(),
                ),
            );
        }
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    pub async fn org_role(&self, org_id: i64, user_id: i64) -> Result<Option<OrgRole>> {
        let q = Query::select()
            .column("role")
            .from("org_members")
            .and_where(Expr::col("org_id").eq(org_id))
            .and_where(Expr::col("user_id").eq(user_id))
            .to_owned();
        let row: Option<RoleRow> = self.db.acquire().await?.conn().fetch_optional(&q).await?;
        role_of(row.map(|r| r.0))
    }

    pub async fn org_members(&self, org_id: i64) -> Result<Vec<Member<OrgRole>>> {
        Ok(self.db.acquire().await?.conn().fetch_all(&members_query("org_members", "org_id", org_id)).await?)
    }

    /// Adds a user to an organization or changes their role. An organization always keeps an
    /// owner: demoting the last one is refused.
    pub async fn set_org_member(
        &self,
        org: &Account,
        user: &Account,
        role: OrgRole,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        if user.is_org {
            return Err(Error::Refused(format!("{} is an organization, not a user", user.name)));
        }
        let mut tx = self.db.begin().await?;
        tx.conn().execute(&upsert_member(org.id, user.id, role, now)).await?;
        if owners(&mut tx, org.id).await? == 0 {
            return Err(Error::Refused(format!("{} must keep at least one owner", org.name)));
        }
        let event = AuditEvent::new("org.member.set", format!("org:{}", org.name))
            .org(Some(org.id))
            .details(format!(r#"{{"user":{:?},"role":"{role}"}}"#, user.name));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a user from an organization (and its teams); false when they were not a member.
    pub async fn remove_org_member(
        &self,
        org: &Account,
        user: &Account,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let removed = tx
            .conn()
            .execute(
                &Query::delete()
                    .from_table("org_members")
                    .and_where(Expr::col("org_id").eq(org.id))
                    .and_where(Expr::col("user_id").eq(user.id))
                    .to_owned(),
            )
            .await?;
        if removed == 0 {
            return Ok(false);
        }
        if owners(&mut tx, org.id).await? == 0 {
            return Err(Error::Refused(format!("{} must keep at least one owner", org.name)));
        }
        // Leaving an organization leaves its teams.
        tx.conn()
            .execute(
                &Query::delete()
                    .from_table("team_members")
                    .and_where(Expr::col("user_id").eq(user.id))
                    .and_where(Expr::col("team_id").in_subquery(
                        Query::select().column("id").from("teams").and_where(Expr::col("org_id").eq(org.id)).to_owned(),
                    ))
                    .to_owned(),
            )
            .await?;
        let event = AuditEvent::new("org.member.remove", format!("org:{}", org.name))
            .org(Some(org.id))
            .details(format!(r#"{{"user":{:?}}}"#, user.name));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Grants a user a role on a repository (replacing an earlier grant).
    pub async fn set_collaborator(
        &self,
        repo: &Repo,
        user: &Account,
        role: Role,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        if user.is_org {
            return Err(Error::Refused(format!("{} is an organization, not a user", user.name)));
        }
        let upsert = Query::insert()
            .into_table("repo_collaborators")
            .columns(["repo_id", "user_id", "role", "created_at"])
            .values_panic([repo.id.into(), user.id.into(), role.as_str().into(), now.0.into()])
            .on_conflict(OnConflict::columns(["repo_id", "user_id"]).update_column("role").to_owned())
            .to_owned();
        let org = self.owner_org(repo).await?;
        let mut tx = self.db.begin().await?;
        tx.conn().execute(&upsert).await?;
        let event = AuditEvent::new("repo.collaborator.set", format!("repo:{}/{}", repo.owner, repo.name))
            .org(org)
            .details(format!(r#"{{"user":{:?},"permission":"{role}"}}"#, user.name));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a user's grant on a repository; false when there was none.
    pub async fn remove_collaborator(
        &self,
        repo: &Repo,
        user: &Account,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<bool> {
        let org = self.owner_org(repo).await?;
        let delete = Query::delete()
            .from_table("repo_collaborators")
            .and_where(Expr::col("repo_id").eq(repo.id))
            .and_where(Expr::col("user_id").eq(user.id))
            .to_owned();
        let event = AuditEvent::new("repo.collaborator.remove", format!("repo:{}/{}", repo.owner, repo.name))
            .org(org)
            .details(format!(r#"{{"user":{:?}}}"#, user.name));
        self.delete_audited(&delete, actor, &event, now).await
    }

    pub async fn collaborators(&self, repo_id: i64) -> Result<Vec<Member<Role>>> {
        Ok(self.db.acquire().await?.conn().fetch_all(&members_query("repo_collaborators", "repo_id", repo_id)).await?)
    }

    /// The role `user_id` holds on `repo` through ownership, organization membership, teams and
    /// grants (visibility aside: that is the policy's business). Team grants count only while the
    /// user is still a member of the organization.
    pub async fn repo_role(&self, user_id: i64, repo: &Repo) -> Result<Option<Role>> {
        if user_id == repo.owner_id {
            return Ok(Some(Role::Admin));
        }
        let from_org = self.org_role(repo.owner_id, user_id).await?.map(|r| match r {
            OrgRole::Owner => Role::Admin,
            OrgRole::Member => Role::Read,
        });
        let q = Query::select()
            .column("role")
            .from("repo_collaborators")
            .and_where(Expr::col("repo_id").eq(repo.id))
            .and_where(Expr::col("user_id").eq(user_id))
            .to_owned();
        let row: Option<RoleRow> = self.db.acquire().await?.conn().fetch_optional(&q).await?;
        let granted: Option<Role> = role_of(row.map(|r| r.0))?;
        let from_teams = if from_org.is_some() { self.team_role(user_id, repo.id).await? } else { None };
        Ok(from_org.max(granted).max(from_teams))
    }

    /// The owning organization's id when the repository belongs to one.
    pub(crate) async fn owner_org(&self, repo: &Repo) -> Result<Option<i64>> {
        Ok(self.find_account(&repo.owner).await?.filter(|a| a.is_org).map(|a| a.id))
    }
}

fn upsert_member(org_id: i64, user_id: i64, role: OrgRole, now: Timestamp) -> sea_query::InsertStatement {
    Query::insert()
        .into_table("org_members")
        .columns(["org_id", "user_id", "role", "created_at"])
        .values_panic([org_id.into(), user_id.into(), role.as_str().into(), now.0.into()])
        .on_conflict(OnConflict::columns(["org_id", "user_id"]).update_column("role").to_owned())
        .to_owned()
}

async fn owners(tx: &mut crate::db::Tx, org_id: i64) -> Result<i64> {
    Ok(tx
        .conn()
        .fetch_one(
            &Query::select()
                .expr(sea_query::Func::count(Expr::col("user_id")))
                .from("org_members")
                .and_where(Expr::col("org_id").eq(org_id))
                .and_where(Expr::col("role").eq("owner"))
                .to_owned(),
        )
        .await?)
}
