//! The console's people-and-keys operations: My keys, Team and Users & roles. Every one
//! goes through [`crate::access`], which decides per object what the signed-in user may
//! see and do; this file only turns rows into what the pages show.

use std::collections::HashMap;

use app::dto::{
    KeyDto, MemberDto, MyKeysDto, SecretDto, SessionUser, TeamOption, TeamPageDto, TeamRef,
    TeamsDto, UserDto, UsersDto,
};
use app::port::{ConsoleError, KeyLimitsForm, KeyRequestForm};
use axum::http::HeaderMap;

use super::{Console, client_ip};
use crate::access::{KeyLimits, KeyRequest, Person, Refusal, Viewer, now_ms, valid_name};
use crate::store::keys::{Actor, KeyRow};
use crate::store::people::{TEAM_ROLES, USER_ROLES};

fn refused(r: Refusal) -> ConsoleError {
    match r {
        Refusal::NotFound(what) => ConsoleError::NotFound(format!("no such {what}")),
        Refusal::Forbidden(m) => ConsoleError::Forbidden(m),
        Refusal::Invalid { message, .. } => ConsoleError::Invalid(message),
        Refusal::Conflict(m) => ConsoleError::Conflict(m),
        Refusal::Internal => ConsoleError::Internal,
    }
}

fn db(e: sqlx::Error) -> ConsoleError {
    tracing::error!(error = %e, "console: database error");
    ConsoleError::Internal
}

pub(super) fn viewer(user: &SessionUser) -> Viewer {
    Viewer::User(Person {
        id: user.id.clone(),
        name: user.username.clone(),
        role: user.role.clone(),
        teams: user
            .teams
            .iter()
            .map(|t| (t.id.clone(), t.role.clone()))
            .collect(),
    })
}

fn actor(headers: &HeaderMap, user: &SessionUser) -> Actor {
    Actor {
        name: format!("user:{}", user.username),
        source_ip: Some(client_ip(headers)),
    }
}

fn forbidden(m: &str) -> ConsoleError {
    ConsoleError::Forbidden(m.to_owned())
}

/// Names for the ids on key rows.
struct Names {
    teams: HashMap<String, String>,
    projects: HashMap<String, String>,
    users: HashMap<String, String>,
}

impl Console {
    async fn names(&self) -> Result<Names, ConsoleError> {
        let teams = self.store.list_teams().await.map_err(db)?;
        let projects = self.store.all_projects().await.map_err(db)?;
        let users = self.store.list_users().await.map_err(db)?;
        Ok(Names {
            teams: teams.into_iter().map(|t| (t.id, t.name)).collect(),
            projects: projects.into_iter().collect(),
            users: users.into_iter().map(|u| (u.id, u.username)).collect(),
        })
    }

    fn key_dto(k: &KeyRow, n: &Names) -> KeyDto {
        KeyDto {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            team_id: k.team_id.clone(),
            team: n.teams.get(&k.team_id).cloned().unwrap_or_default(),
            project: k
                .project_id
                .as_ref()
                .and_then(|p| n.projects.get(p).cloned()),
            owner: k.user_id.as_ref().and_then(|u| n.users.get(u).cloned()),
            // An active key past its expiry is refused by the gateway; say so.
            status: if k.status == "active" && k.expires_at.is_some_and(|e| e <= now_ms()) {
                "expired".to_owned()
            } else {
                k.status.clone()
            },
            models: k.model_list(),
            purpose: k.purpose.clone(),
            decided_by: k.decided_by.clone(),
            decision_reason: k.decision_reason.clone(),
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            budget_usd: k.budget_micros.map(|m| m as f64 / 1_000_000.0),
            budget_period: k.budget_period.clone(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            previous_valid_until: k.previous_valid_until,
        }
    }

    async fn one_key_dto(&self, k: &KeyRow) -> Result<KeyDto, ConsoleError> {
        Ok(Self::key_dto(k, &self.names().await?))
    }

    pub(super) async fn my_keys_impl(&self, user: &SessionUser) -> Result<MyKeysDto, ConsoleError> {
        let names = self.names().await?;
        let keys = self.store.keys_of_user(&user.id).await.map_err(db)?;
        let all_models: Vec<String> = self.models.groups().map(|(m, _)| m.clone()).collect();
        let mut teams = Vec::new();
        for t in &user.teams {
            let Some(team) = self.store.team(&t.id).await.map_err(db)? else {
                continue;
            };
            let allowed = team.model_list();
            teams.push(TeamOption {
                id: team.id,
                name: team.name,
                models: if allowed.is_empty() {
                    all_models.clone()
                } else {
                    allowed
                },
            });
        }
        Ok(MyKeysDto {
            csrf: user.csrf.clone(),
            keys: keys.iter().map(|k| Self::key_dto(k, &names)).collect(),
            teams,
        })
    }

    pub(super) async fn request_key_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        f: KeyRequestForm,
    ) -> Result<KeyDto, ConsoleError> {
        let req = KeyRequest {
            team_id: f.team_id,
            name: f.name,
            project: f.project,
            models: f.models,
            purpose: f.purpose,
        };
        let row = self
            .keys
            .request(&viewer(user), &actor(headers, user), req)
            .await
            .map_err(refused)?;
        self.one_key_dto(&row).await
    }

    pub(super) async fn reveal_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        id: &str,
    ) -> Result<SecretDto, ConsoleError> {
        let (row, secret) = self
            .keys
            .reveal(&viewer(user), &actor(headers, user), id)
            .await
            .map_err(refused)?;
        Ok(SecretDto {
            key_id: row.id,
            name: row.name,
            secret: secret.secret,
        })
    }

    pub(super) async fn rotate_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        id: &str,
    ) -> Result<SecretDto, ConsoleError> {
        let (row, secret) = self
            .keys
            .rotate(&viewer(user), &actor(headers, user), id, 3600)
            .await
            .map_err(refused)?;
        Ok(SecretDto {
            key_id: row.id,
            name: row.name,
            secret: secret.secret,
        })
    }

    pub(super) async fn revoke_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        id: &str,
    ) -> Result<KeyDto, ConsoleError> {
        let row = self
            .keys
            .revoke(&viewer(user), &actor(headers, user), id)
            .await
            .map_err(refused)?;
        self.one_key_dto(&row).await
    }

    pub(super) async fn decide_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        id: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<KeyDto, ConsoleError> {
        let row = self
            .keys
            .decide(
                &viewer(user),
                &actor(headers, user),
                id,
                approve,
                reason.as_deref(),
            )
            .await
            .map_err(refused)?;
        self.one_key_dto(&row).await
    }

    pub(super) async fn set_limits_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        id: &str,
        f: KeyLimitsForm,
    ) -> Result<KeyDto, ConsoleError> {
        let limits = KeyLimits {
            models: Some(f.models),
            rpm_limit: Some(f.rpm_limit),
            tpm_limit: Some(f.tpm_limit),
            ..KeyLimits::default()
        };
        let row = self
            .keys
            .set_limits(&viewer(user), &actor(headers, user), id, limits)
            .await
            .map_err(refused)?;
        self.one_key_dto(&row).await
    }

    pub(super) async fn teams_impl(&self, user: &SessionUser) -> Result<TeamsDto, ConsoleError> {
        let v = viewer(user);
        let names = self.names().await?;
        let all = self.store.list_teams().await.map_err(db)?;
        let mut teams = Vec::new();
        for team in all.into_iter().filter(|t| v.sees_team(&t.id)) {
            let my_role = user
                .teams
                .iter()
                .find(|t| t.id == team.id)
                .map(|t| t.role.clone())
                .unwrap_or_else(|| user.role.clone());
            let members = self
                .store
                .team_people(&team.id)
                .await
                .map_err(db)?
                .into_iter()
                .map(|(user_id, username, role)| MemberDto {
                    user_id,
                    username,
                    role,
                })
                .collect();
            let projects = self
                .store
                .projects_of_team(&team.id)
                .await
                .map_err(db)?
                .into_iter()
                .map(|(_, n)| n)
                .collect();
            let keys = if v.leads(&team.id) {
                self.store
                    .keys_of_team(&team.id)
                    .await
                    .map_err(db)?
                    .iter()
                    .map(|k| Self::key_dto(k, &names))
                    .collect()
            } else {
                Vec::new()
            };
            teams.push(TeamPageDto {
                models: team.model_list(),
                id: team.id,
                name: team.name,
                my_role,
                members,
                projects,
                keys,
            });
        }
        Ok(TeamsDto {
            csrf: user.csrf.clone(),
            my_id: user.id.clone(),
            teams,
        })
    }

    pub(super) async fn users_impl(&self, user: &SessionUser) -> Result<UsersDto, ConsoleError> {
        if user.role != "admin" {
            return Err(forbidden("only admins manage users and roles"));
        }
        let mut users = Vec::new();
        for u in self.store.list_users().await.map_err(db)? {
            let teams = self
                .store
                .memberships(&u.id)
                .await
                .map_err(db)?
                .into_iter()
                .map(|m| TeamRef {
                    id: m.team_id,
                    name: m.team_name,
                    role: m.role,
                })
                .collect();
            users.push(UserDto {
                id: u.id,
                username: u.username,
                display_name: u.display_name,
                role: u.role,
                teams,
            });
        }
        let teams = self
            .store
            .list_teams()
            .await
            .map_err(db)?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect();
        Ok(UsersDto {
            csrf: user.csrf.clone(),
            my_id: user.id.clone(),
            users,
            teams,
        })
    }

    pub(super) async fn set_role_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        user_id: &str,
        role: &str,
    ) -> Result<(), ConsoleError> {
        if user.role != "admin" {
            return Err(forbidden("only admins change roles"));
        }
        if user_id == user.id {
            return Err(forbidden(
                "you cannot change your own role; ask another admin",
            ));
        }
        if !USER_ROLES.contains(&role) {
            return Err(ConsoleError::Invalid(
                "role is admin, finance, auditor or member".into(),
            ));
        }
        self.store
            .set_user_role(user_id, role, now_ms(), &actor(headers, user))
            .await
            .map_err(db)?
            .ok_or_else(|| ConsoleError::NotFound("no such user".into()))?;
        Ok(())
    }

    pub(super) async fn set_membership_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        team_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<(), ConsoleError> {
        if user.role != "admin" {
            return Err(forbidden("only admins change team memberships"));
        }
        if role != "none" && !TEAM_ROLES.contains(&role) {
            return Err(ConsoleError::Invalid("role is lead, member or none".into()));
        }
        if self.store.team(team_id).await.map_err(db)?.is_none() {
            return Err(ConsoleError::NotFound("no such team".into()));
        }
        if !self.store.user_exists(user_id).await.map_err(db)? {
            return Err(ConsoleError::NotFound("no such user".into()));
        }
        let who = actor(headers, user);
        if role == "none" {
            self.store
                .remove_member(team_id, user_id, now_ms(), &who)
                .await
                .map_err(db)?;
        } else {
            self.store
                .set_member(team_id, user_id, role, now_ms(), &who)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    pub(super) async fn create_team_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        name: &str,
    ) -> Result<(), ConsoleError> {
        if user.role != "admin" {
            return Err(forbidden("only admins create teams"));
        }
        let name = valid_name("name", name).map_err(refused)?;
        match self
            .store
            .create_team(&name, now_ms(), &actor(headers, user))
            .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(
                ConsoleError::Conflict("a team with this name exists".into()),
            ),
            Err(e) => Err(db(e)),
        }
    }
}
