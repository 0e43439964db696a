//! Users and team memberships, each change with its audit row in the same transaction.
//! (Single sign-on creates users just in time through the same calls.)

use super::keys::Actor;
use super::{BeginWrite, Store};

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
            let mut tx = p.begin_write().await?;
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
            let mut tx = p.begin_write().await?;
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
            let mut tx = p.begin_write().await?;
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
            let mut tx = p.begin_write().await?;
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

/// A team a user belongs to, with their role there.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Membership {
    pub team_id: String,
    pub team_name: String,
    pub role: String,
}

/// What a signed-in SSO user is made: their role and the teams their groups map to.
#[derive(Debug, Clone)]
pub struct SsoIdentity {
    /// `issuer|sub`: how the user is found again.
    pub subject: String,
    pub email: String,
    pub display_name: Option<String>,
    pub role: String,
    /// Team name → role there, from the group mapping.
    pub teams: Vec<(String, String)>,
    /// Every team name the mapping manages: memberships in these not in `teams` end.
    pub managed_teams: Vec<String>,
}

impl Store {
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>, sqlx::Error> {
        const SQL: &str = "SELECT m.team_id, t.name AS team_name, m.role FROM team_members m \
            JOIN teams t ON t.id = m.team_id WHERE m.user_id = $1 ORDER BY t.name";
        on_pool!(self, p => sqlx::query_as(SQL).bind(user_id).fetch_all(p).await)
    }

    /// Members of a team with their names.
    pub async fn team_people(
        &self,
        team_id: &str,
    ) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        const SQL: &str = "SELECT u.id, u.username, m.role FROM team_members m JOIN users u ON u.id = m.user_id \
            WHERE m.team_id = $1 ORDER BY u.username";
        on_pool!(self, p => sqlx::query_as(SQL).bind(team_id).fetch_all(p).await)
    }

    pub async fn remove_member(
        &self,
        team_id: &str,
        user_id: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<bool, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        let object = format!("{team_id}/{user_id}");
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let before: Option<(String,)> = sqlx::query_as("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team_id).bind(user_id).fetch_optional(&mut *tx).await?;
            let Some((role,)) = before else { return Ok(false) };
            sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team_id).bind(user_id).execute(&mut *tx).await?;
            audit_in_tx!(tx, is_pg, now, actor, "team.member.remove", "team_member", &object,
                Some(serde_json::json!({"role": role}).to_string()), None);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Changes a user's organisation role; `None` if there is no such user.
    pub async fn set_user_role(
        &self,
        user_id: &str,
        role: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<Option<PersonRow>, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        const SELECT: &str =
            "SELECT id, username, email, display_name, role, created_at FROM users WHERE id = $1";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let Some(mut user): Option<PersonRow> = sqlx::query_as(SELECT).bind(user_id).fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let before = serde_json::json!({"role": user.role}).to_string();
            sqlx::query("UPDATE users SET role = $2 WHERE id = $1").bind(user_id).bind(role).execute(&mut *tx).await?;
            user.role = role.to_owned();
            audit_in_tx!(tx, is_pg, now, actor, "user.role", "user", user_id, Some(before),
                Some(serde_json::json!({"role": role}).to_string()));
            tx.commit().await?;
            Ok(Some(user))
        })
    }

    /// Finds or creates (just in time) the user of an SSO sign-in and brings their role and
    /// mapped team memberships in line with the identity provider's groups, all in one
    /// transaction with its audit rows. A user the admin created by e-mail beforehand is
    /// linked on first sign-in.
    pub async fn upsert_sso_user(
        &self,
        who: &SsoIdentity,
        now: i64,
        actor: &Actor,
    ) -> Result<PersonRow, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        const BY_SUBJECT: &str = "SELECT id, username, email, display_name, role, created_at FROM users WHERE sso_subject = $1";
        const BY_EMAIL: &str = "SELECT id, username, email, display_name, role, created_at FROM users \
            WHERE email = $1 AND sso_subject IS NULL AND password_hash IS NULL";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let found: Option<PersonRow> = sqlx::query_as(BY_SUBJECT).bind(&who.subject).fetch_optional(&mut *tx).await?;
            let found = match found {
                Some(u) => Some(u),
                None => sqlx::query_as(BY_EMAIL).bind(&who.email).fetch_optional(&mut *tx).await?,
            };
            let user = match found {
                Some(mut u) => {
                    if u.role != who.role || u.display_name != who.display_name || u.email.as_deref() != Some(who.email.as_str()) {
                        let before = serde_json::to_string(&u).ok();
                        sqlx::query("UPDATE users SET role = $2, display_name = $3, email = $4, sso_subject = $5 WHERE id = $1")
                            .bind(&u.id).bind(&who.role).bind(&who.display_name).bind(&who.email).bind(&who.subject)
                            .execute(&mut *tx).await?;
                        u.role.clone_from(&who.role);
                        u.display_name.clone_from(&who.display_name);
                        u.email = Some(who.email.clone());
                        audit_in_tx!(tx, is_pg, now, actor, "user.sso_update", "user", &u.id, before, serde_json::to_string(&u).ok());
                    } else {
                        sqlx::query("UPDATE users SET sso_subject = $2 WHERE id = $1").bind(&u.id).bind(&who.subject)
                            .execute(&mut *tx).await?;
                    }
                    u
                }
                None => {
                    let u = PersonRow {
                        id: format!("user_{}", uuid::Uuid::now_v7().simple()),
                        username: who.email.clone(),
                        email: Some(who.email.clone()),
                        display_name: who.display_name.clone(),
                        role: who.role.clone(),
                        created_at: now,
                    };
                    sqlx::query(
                        "INSERT INTO users (id, username, email, display_name, role, is_active, created_at, sso_subject) \
                         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                    )
                    .bind(&u.id).bind(&u.username).bind(&u.email).bind(&u.display_name).bind(&u.role)
                    .bind(true).bind(now).bind(&who.subject)
                    .execute(&mut *tx).await?;
                    audit_in_tx!(tx, is_pg, now, actor, "user.sso_create", "user", &u.id, None, serde_json::to_string(&u).ok());
                    u
                }
            };
            for team_name in &who.managed_teams {
                let want = who.teams.iter().find(|(t, _)| t == team_name).map(|(_, r)| r.clone());
                let team: Option<(String,)> = sqlx::query_as("SELECT id FROM teams WHERE name = $1").bind(team_name).fetch_optional(&mut *tx).await?;
                let team_id = match (team, &want) {
                    (Some((id,)), _) => id,
                    (None, None) => continue,
                    (None, Some(_)) => {
                        let id = format!("team_{}", uuid::Uuid::now_v7().simple());
                        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
                            .bind(&id).bind(team_name).bind(now).execute(&mut *tx).await?;
                        audit_in_tx!(tx, is_pg, now, actor, "team.create", "team", &id, None,
                            Some(serde_json::json!({"id": id, "name": team_name}).to_string()));
                        id
                    }
                };
                let have: Option<(String,)> = sqlx::query_as("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
                    .bind(&team_id).bind(&user.id).fetch_optional(&mut *tx).await?;
                let object = format!("{team_id}/{}", user.id);
                match (have.map(|h| h.0), want) {
                    (Some(h), Some(w)) if h == w => {}
                    (before, Some(w)) => {
                        sqlx::query(
                            "INSERT INTO team_members (team_id, user_id, role, created_at) VALUES ($1,$2,$3,$4) \
                             ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role",
                        )
                        .bind(&team_id).bind(&user.id).bind(&w).bind(now).execute(&mut *tx).await?;
                        audit_in_tx!(tx, is_pg, now, actor, "team.member.set", "team_member", &object,
                            before.map(|r| serde_json::json!({"role": r}).to_string()),
                            Some(serde_json::json!({"role": w}).to_string()));
                    }
                    (Some(h), None) => {
                        sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
                            .bind(&team_id).bind(&user.id).execute(&mut *tx).await?;
                        audit_in_tx!(tx, is_pg, now, actor, "team.member.remove", "team_member", &object,
                            Some(serde_json::json!({"role": h}).to_string()), None);
                    }
                    (None, None) => {}
                }
            }
            tx.commit().await?;
            Ok(user)
        })
    }

    /// Records an SSO sign-in in flight.
    pub async fn create_sso_login(
        &self,
        id_hash: &str,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        on_pool!(self, p => {
            // Abandoned attempts older than ten minutes go.
            sqlx::query("DELETE FROM sso_logins WHERE created_at < $1").bind(now - 600_000).execute(p).await?;
            sqlx::query("INSERT INTO sso_logins (id_hash, state, nonce, pkce_verifier, created_at) VALUES ($1,$2,$3,$4,$5)")
                .bind(id_hash).bind(state).bind(nonce).bind(pkce_verifier).bind(now)
                .execute(p).await?;
            Ok(())
        })
    }

    /// Takes (reads and deletes: single use) an SSO sign-in in flight younger than `max_age_ms`:
    /// (state, nonce, pkce_verifier).
    pub async fn take_sso_login(
        &self,
        id_hash: &str,
        now: i64,
        max_age_ms: i64,
    ) -> Result<Option<(String, String, String)>, sqlx::Error> {
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let row: Option<(String, String, String, i64)> = sqlx::query_as(
                "SELECT state, nonce, pkce_verifier, created_at FROM sso_logins WHERE id_hash = $1",
            )
            .bind(id_hash).fetch_optional(&mut *tx).await?;
            let gone = sqlx::query("DELETE FROM sso_logins WHERE id_hash = $1").bind(id_hash).execute(&mut *tx).await?;
            tx.commit().await?;
            // Two callbacks racing for one attempt: only the one that deleted it proceeds.
            Ok(row.filter(|r| gone.rows_affected() == 1 && now - r.3 <= max_age_ms).map(|r| (r.0, r.1, r.2)))
        })
    }
}
