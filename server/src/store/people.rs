//! Users and team memberships, each change with its audit row in the same transaction.
//! (Single sign-on creates users just in time through the same calls.)

use super::Store;
use super::keys::Actor;

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct PersonRow {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub role: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct MemberRow {
    pub team_id: String,
    pub user_id: String,
    pub role: String,
    pub created_at: i64,
}

pub const USER_ROLES: &[&str] = &["admin", "finance", "auditor", "member"];
pub const TEAM_ROLES: &[&str] = &["lead", "member"];

impl Store {
    pub async fn create_user(
        &self,
        email: &str,
        display_name: Option<&str>,
        role: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<PersonRow, sqlx::Error> {
        let user = PersonRow {
            id: format!("user_{}", uuid::Uuid::now_v7().simple()),
            username: email.to_owned(),
            email: Some(email.to_owned()),
            display_name: display_name.map(str::to_owned),
            role: role.to_owned(),
            created_at: now,
        };
        let is_pg = matches!(self, Store::Postgres(_));
        let after = serde_json::to_string(&user).ok();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO users (id, username, email, display_name, role, is_active, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
            )
            .bind(&user.id).bind(&user.username).bind(&user.email).bind(&user.display_name)
            .bind(&user.role).bind(true).bind(now)
            .execute(&mut *tx).await?;
            audit_in_tx!(tx, is_pg, now, actor, "user.create", "user", &user.id, None, after);
            tx.commit().await?;
        });
        Ok(user)
    }

    pub async fn list_users(&self) -> Result<Vec<PersonRow>, sqlx::Error> {
        const SQL: &str = "SELECT id, username, email, display_name, role, created_at FROM users ORDER BY username";
        on_pool!(self, p => sqlx::query_as(SQL).fetch_all(p).await)
    }

    pub async fn user_exists(&self, id: &str) -> Result<bool, sqlx::Error> {
        let n: (i64,) = on_pool!(self, p => sqlx::query_as("SELECT COUNT(*) FROM users WHERE id = $1").bind(id).fetch_one(p).await)?;
        Ok(n.0 > 0)
    }

    /// Adds a user to a team, or changes their role in it.
    pub async fn set_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<MemberRow, sqlx::Error> {
        let member = MemberRow {
            team_id: team_id.to_owned(),
            user_id: user_id.to_owned(),
            role: role.to_owned(),
            created_at: now,
        };
        let is_pg = matches!(self, Store::Postgres(_));
        let after = serde_json::to_string(&member).ok();
        let object = format!("{team_id}/{user_id}");
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let before: Option<(String,)> = sqlx::query_as("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team_id).bind(user_id).fetch_optional(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO team_members (team_id, user_id, role, created_at) VALUES ($1,$2,$3,$4) \
                 ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role",
            )
            .bind(team_id).bind(user_id).bind(role).bind(now)
            .execute(&mut *tx).await?;
            let before = before.map(|(r,)| serde_json::json!({"role": r}).to_string());
            audit_in_tx!(tx, is_pg, now, actor, "team.member.set", "team_member", &object, before, after);
            tx.commit().await?;
        });
        Ok(member)
    }

    pub async fn team_members(&self, team_id: &str) -> Result<Vec<MemberRow>, sqlx::Error> {
        const SQL: &str = "SELECT team_id, user_id, role, created_at FROM team_members WHERE team_id = $1 ORDER BY created_at";
        on_pool!(self, p => sqlx::query_as(SQL).bind(team_id).fetch_all(p).await)
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Stores an admin's API token (its keyed hash only).
    pub async fn create_admin_token(
        &self,
        user_id: &str,
        name: &str,
        prefix: &str,
        token_hash: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<TokenRow, sqlx::Error> {
        let row = TokenRow {
            id: format!("tok_{}", uuid::Uuid::now_v7().simple()),
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            created_at: now,
            revoked_at: None,
        };
        let is_pg = matches!(self, Store::Postgres(_));
        let after = serde_json::to_string(&row).ok();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("INSERT INTO admin_tokens (id, user_id, name, prefix, token_hash, created_at) VALUES ($1,$2,$3,$4,$5,$6)")
                .bind(&row.id).bind(user_id).bind(name).bind(prefix).bind(token_hash).bind(now)
                .execute(&mut *tx).await?;
            audit_in_tx!(tx, is_pg, now, actor, "admin_token.create", "admin_token", &row.id, None, after);
            tx.commit().await?;
        });
        Ok(row)
    }

    /// The admin a token belongs to, if the token is live and its user still an active admin.
    pub async fn admin_for_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<PersonRow>, sqlx::Error> {
        const SQL: &str = "SELECT u.id, u.username, u.email, u.display_name, u.role, u.created_at \
            FROM admin_tokens t JOIN users u ON u.id = t.user_id \
            WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.role = 'admin' AND u.is_active = $2";
        on_pool!(self, p => sqlx::query_as(SQL).bind(token_hash).bind(true).fetch_optional(p).await)
    }

    pub async fn revoke_admin_token(
        &self,
        id: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<bool, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let done = sqlx::query("UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id).bind(now).execute(&mut *tx).await?.rows_affected();
            if done == 0 {
                return Ok(false);
            }
            audit_in_tx!(tx, is_pg, now, actor, "admin_token.revoke", "admin_token", id, None, None);
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn user(&self, id: &str) -> Result<Option<PersonRow>, sqlx::Error> {
        const SQL: &str =
            "SELECT id, username, email, display_name, role, created_at FROM users WHERE id = $1";
        on_pool!(self, p => sqlx::query_as(SQL).bind(id).fetch_optional(p).await)
    }
}
