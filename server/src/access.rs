//! Who may do what to which object, and the key lifecycle built on it (request → approve or
//! reject → reveal once → rotate / revoke), shared by the console and the management API so
//! both enforce the same rules. Decisions are made per object on the server: a member of one
//! team never sees or touches another team's keys, members or projects.

use std::collections::HashMap;
use std::sync::Arc;

use crate::keys::{KeyCache, KeyHasher, NewSecret};
use crate::route::ModelGroups;
use crate::store::Store;
use crate::store::keys::{Actor, KeyChange, KeyRow, TeamRow};

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// The master key or an admin's API token: every object.
    Operator,
    /// A signed-in person.
    User(Person),
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub name: String,
    /// Organisation role: admin, finance, auditor or member.
    pub role: String,
    /// Team id → role there (lead or member).
    pub teams: HashMap<String, String>,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        match self {
            Viewer::Operator => true,
            Viewer::User(p) => p.role == "admin",
        }
    }

    fn person(&self) -> Option<&Person> {
        match self {
            Viewer::Operator => None,
            Viewer::User(p) => Some(p),
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        self.person().map(|p| p.id.as_str())
    }

    /// Admins and the team's leads manage a team's keys and requests.
    pub fn leads(&self, team_id: &str) -> bool {
        self.is_admin()
            || self
                .person()
                .is_some_and(|p| p.teams.get(team_id).is_some_and(|r| r == "lead"))
    }

    /// Admins, finance (reads all spend) and the team's own people see a team.
    pub fn sees_team(&self, team_id: &str) -> bool {
        self.is_admin()
            || self
                .person()
                .is_some_and(|p| p.role == "finance" || p.teams.contains_key(team_id))
    }

    pub fn member_of(&self, team_id: &str) -> bool {
        self.person().is_some_and(|p| p.teams.contains_key(team_id))
    }

    fn owns(&self, k: &KeyRow) -> bool {
        self.user_id().is_some() && k.user_id.as_deref() == self.user_id()
    }

    /// A key is visible to its owner, its team's leads and admins.
    pub fn sees_key(&self, k: &KeyRow) -> bool {
        self.owns(k) || self.leads(&k.team_id)
    }
}

/// Why an operation was refused.
#[derive(Debug)]
pub enum Refusal {
    /// No such object, or not one the viewer may see (never says which).
    NotFound(&'static str),
    /// The viewer sees the object but may not do this to it.
    Forbidden(String),
    Invalid {
        param: &'static str,
        message: String,
    },
    /// The object's state does not allow it.
    Conflict(String),
    Internal,
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "access: database error");
        Refusal::Internal
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        param,
        message: message.into(),
    }
}

/// What a member asks for.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    pub team_id: String,
    pub name: String,
    pub project: Option<String>,
    pub models: Vec<String>,
    pub purpose: Option<String>,
}

/// Limits a lead (or admin) sets on a key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyLimits {
    pub models: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub rpm_limit: Option<Option<i64>>,
    pub tpm_limit: Option<Option<i64>>,
    pub budget_micros: Option<Option<i64>>,
    pub budget_period: Option<Option<String>>,
    pub expires_at: Option<Option<i64>>,
}

/// The key lifecycle with its authorisation.
#[derive(Clone)]
pub struct KeyService {
    pub store: Store,
    pub hasher: KeyHasher,
    pub cache: KeyCache,
    pub models: Arc<ModelGroups>,
    pub budgets: Arc<crate::meter::budget::Budgets>,
    pub rate_limits: Arc<crate::meter::limits::RateLimits>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

pub fn valid_name(param: &'static str, s: &str) -> Result<String, Refusal> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
        return Err(invalid(
            param,
            format!("{param} must be 1 to 128 printable characters"),
        ));
    }
    Ok(s.to_owned())
}

pub fn valid_tags(tags: &[String]) -> Result<(), Refusal> {
    let ok = |t: &String| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    };
    if tags.len() > 16 || !tags.iter().all(ok) {
        return Err(invalid("tags", "up to 16 tags of letters, digits, _ . : -"));
    }
    Ok(())
}

impl KeyService {
    fn apply(&self, change: KeyChange) -> Result<KeyRow, Refusal> {
        match change {
            KeyChange::Done(row) => {
                self.cache.apply(&row);
                Ok(*row)
            }
            KeyChange::NotFound => Err(Refusal::NotFound("key")),
            KeyChange::Refused(why) => Err(Refusal::Conflict(why.to_owned())),
        }
    }

    /// The key if the viewer may see it; otherwise "no such key" (existence not revealed).
    pub async fn visible_key(&self, viewer: &Viewer, id: &str) -> Result<KeyRow, Refusal> {
        if id.len() > 64 {
            return Err(Refusal::NotFound("key"));
        }
        match self.store.key(id).await? {
            Some(k) if viewer.sees_key(&k) => Ok(k),
            _ => Err(Refusal::NotFound("key")),
        }
    }

    async fn visible_team(&self, viewer: &Viewer, id: &str) -> Result<TeamRow, Refusal> {
        if id.len() > 64 {
            return Err(Refusal::NotFound("team"));
        }
        match self.store.team(id).await? {
            Some(t) if viewer.sees_team(&t.id) => Ok(t),
            _ => Err(Refusal::NotFound("team")),
        }
    }

    /// Models must be configured and within the team's allow-list; an empty list means
    /// "what the team allows".
    pub fn check_models(&self, team: &TeamRow, models: &[String]) -> Result<Vec<String>, Refusal> {
        if models.len() > 64 {
            return Err(invalid("models", "at most 64 models"));
        }
        if let Some(m) = models.iter().find(|m| !self.models.contains(m)) {
            return Err(invalid(
                "models",
                format!("{m:?} is not a configured model"),
            ));
        }
        if let Some(m) = models.iter().find(|m| !team.allows(m)) {
            return Err(invalid(
                "models",
                format!("{m:?} is not allowed for team {}", team.name),
            ));
        }
        if models.is_empty() {
            return Ok(team.model_list());
        }
        let mut out = models.to_vec();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// A member asks for a key in one of their teams; a lead decides.
    pub async fn request(
        &self,
        viewer: &Viewer,
        actor: &Actor,
        req: KeyRequest,
    ) -> Result<KeyRow, Refusal> {
        let Some(user_id) = viewer.user_id() else {
            return Err(Refusal::Forbidden(
                "key requests are made by people; create the key directly".into(),
            ));
        };
        let team = self.visible_team(viewer, &req.team_id).await?;
        if !viewer.member_of(&team.id) {
            return Err(Refusal::Forbidden(
                "you can request keys only in your own teams".into(),
            ));
        }
        let name = valid_name("name", &req.name)?;
        let project = match req.project.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(p) => Some(valid_name("project", p)?),
        };
        let purpose = match req.purpose.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(p) if p.chars().count() > 500 => {
                return Err(invalid("purpose", "purpose has at most 500 characters"));
            }
            Some(p) => Some(p.to_owned()),
        };
        let models = self.check_models(&team, &req.models)?;
        let now = now_ms();
        let row = KeyRow {
            id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            name,
            prefix: String::new(),
            key_hash: None,
            team_id: team.id.clone(),
            project_id: None,
            user_id: Some(user_id.to_owned()),
            status: "requested".into(),
            models: serde_json::to_string(&models).unwrap_or_else(|_| "[]".into()),
            tags: "[]".into(),
            rpm_limit: None,
            tpm_limit: None,
            budget_micros: None,
            budget_period: None,
            expires_at: None,
            created_at: now,
            updated_at: now,
            previous_key_hash: None,
            previous_valid_until: None,
            purpose,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
        };
        Ok(self
            .store
            .create_key(row, project.as_deref(), actor)
            .await?)
    }

    /// A lead (or admin) approves or rejects a request. Nobody but an admin decides their
    /// own request.
    pub async fn decide(
        &self,
        viewer: &Viewer,
        actor: &Actor,
        id: &str,
        approve: bool,
        reason: Option<&str>,
    ) -> Result<KeyRow, Refusal> {
        let key = self.visible_key(viewer, id).await?;
        if !viewer.leads(&key.team_id) {
            return Err(Refusal::Forbidden(
                "only the team's leads decide key requests".into(),
            ));
        }
        if viewer.owns(&key) && !viewer.is_admin() {
            return Err(Refusal::Forbidden(
                "another lead or an admin must decide your own request".into(),
            ));
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > 500) {
            return Err(invalid("reason", "reason has at most 500 characters"));
        }
        if !approve && reason.is_none() {
            return Err(invalid("reason", "say why the request is rejected"));
        }
        let change = self
            .store
            .decide_key(id, approve, reason, now_ms(), actor)
            .await?;
        self.apply(change)
    }

    /// The owner of an approved key gets its secret, once.
    pub async fn reveal(
        &self,
        viewer: &Viewer,
        actor: &Actor,
        id: &str,
    ) -> Result<(KeyRow, NewSecret), Refusal> {
        let key = self.visible_key(viewer, id).await?;
        if !viewer.owns(&key) {
            return Err(Refusal::Forbidden(
                "only the key's owner can reveal it".into(),
            ));
        }
        let secret = self.hasher.generate();
        let change = self
            .store
            .reveal_key(id, &secret.hash, &secret.prefix, now_ms(), actor)
            .await?;
        Ok((self.apply(change)?, secret))
    }

    /// A new secret for the owner or a lead; the old one works for `grace_s` seconds.
    pub async fn rotate(
        &self,
        viewer: &Viewer,
        actor: &Actor,
        id: &str,
        grace_s: i64,
    ) -> Result<(KeyRow, NewSecret), Refusal> {
        if !(0..=7 * 24 * 3600).contains(&grace_s) {
            return Err(invalid("grace_seconds", "grace_seconds is 0 to 604800"));
        }
        self.visible_key(viewer, id).await?;
        let secret = self.hasher.generate();
        let now = now_ms();
        let change = self
            .store
            .rotate_key(
                id,
                &secret.hash,
                &secret.prefix,
                now + grace_s * 1000,
                now,
                actor,
            )
            .await?;
        Ok((self.apply(change)?, secret))
    }

    /// The owner withdraws, or a lead revokes, a key in any live state.
    pub async fn revoke(
        &self,
        viewer: &Viewer,
        actor: &Actor,
        id: &str,
    ) -> Result<KeyRow, Refusal> {
        self.visible_key(viewer, id).await?;
        let change = self.store.revoke_key(id, now_ms(), actor).await?;
        self.apply(change)
    }

    /// Models, tags, limits, budget and expiry: set by the team's leads or admins only,
    /// so nobody raises their own.
    pub async fn set_limits(
        &self,
        viewer: &Viewer,
        actor: &Actor,
        id: &str,
        limits: KeyLimits,
    ) -> Result<KeyRow, Refusal> {
        let key = self.visible_key(viewer, id).await?;
        if !viewer.leads(&key.team_id) || (viewer.owns(&key) && !viewer.is_admin()) {
            return Err(Refusal::Forbidden(
                "a key's models and limits are set by another lead of its team or an admin".into(),
            ));
        }
        let team = self
            .store
            .team(&key.team_id)
            .await?
            .ok_or(Refusal::NotFound("team"))?;
        let models = match &limits.models {
            Some(m) => Some(self.check_models(&team, m)?),
            None => None,
        };
        if let Some(t) = &limits.tags {
            valid_tags(t)?;
        }
        for (param, v) in [
            ("rpm_limit", limits.rpm_limit),
            ("tpm_limit", limits.tpm_limit),
        ] {
            if v.flatten().is_some_and(|v| v <= 0) {
                return Err(invalid(param, format!("{param} must be positive")));
            }
        }
        if limits
            .budget_micros
            .flatten()
            .is_some_and(|b| !(0..=1_000_000_000_000_000).contains(&b))
        {
            return Err(invalid("budget_usd", "budget_usd must be from 0 to 1e9"));
        }
        if let Some(Some(p)) = &limits.budget_period
            && !matches!(p.as_str(), "daily" | "weekly" | "monthly" | "total")
        {
            return Err(invalid(
                "budget_period",
                "budget_period is daily, weekly, monthly or total",
            ));
        }
        let budget_changed = limits.budget_micros.is_some() || limits.budget_period.is_some();
        let rates_changed = limits.rpm_limit.is_some() || limits.tpm_limit.is_some();
        let now = now_ms();
        if limits.expires_at.flatten().is_some_and(|e| e <= now) {
            return Err(invalid("expires_at", "expires_at must be in the future"));
        }
        let change = self
            .store
            .change_key(id, now, actor, "key.update", |k| {
                if matches!(k.status.as_str(), "revoked" | "rejected" | "expired") {
                    return Err("the key is not live");
                }
                if let Some(m) = &models {
                    k.models = serde_json::to_string(m).unwrap_or_else(|_| "[]".into());
                }
                if let Some(t) = &limits.tags {
                    k.tags = serde_json::to_string(t).unwrap_or_else(|_| "[]".into());
                }
                if let Some(v) = limits.rpm_limit {
                    k.rpm_limit = v;
                }
                if let Some(v) = limits.tpm_limit {
                    k.tpm_limit = v;
                }
                if let Some(v) = limits.budget_micros {
                    k.budget_micros = v;
                }
                if let Some(v) = &limits.budget_period {
                    k.budget_period.clone_from(v);
                }
                if let Some(v) = limits.expires_at {
                    k.expires_at = v;
                }
                Ok(())
            })
            .await?;
        let row = self.apply(change)?;
        self.sync_policies(&row, actor, budget_changed, rates_changed)
            .await?;
        Ok(row)
    }

    /// A key's budget and rate-limit fields are its budget and rate limits: the rows that
    /// enforce them follow the key (a budget without a period is monthly; a
    /// `max_parallel` set through the rate-limit API is kept), effective here at once and
    /// on other instances within a second.
    pub async fn sync_policies(
        &self,
        k: &KeyRow,
        actor: &Actor,
        budget: bool,
        rates: bool,
    ) -> Result<(), Refusal> {
        let now = now_ms();
        if budget {
            match k.budget_micros {
                Some(micros) => {
                    let period = k.budget_period.as_deref().unwrap_or("monthly");
                    self.store
                        .upsert_budget("key", &k.id, micros, period, &[50, 80, 100], now, actor)
                        .await?;
                }
                None => {
                    self.store.delete_budget("key", &k.id, now, actor).await?;
                }
            }
            self.budgets.reload().await;
        }
        if rates {
            let max_parallel = self
                .store
                .list_rate_limits()
                .await?
                .into_iter()
                .find(|r| r.scope_type == "key" && r.scope_id == k.id)
                .and_then(|r| r.max_parallel);
            let row = crate::store::budgets::RateLimitRow {
                scope_type: "key".into(),
                scope_id: k.id.clone(),
                rpm: k.rpm_limit,
                tpm: k.tpm_limit,
                max_parallel,
                updated_at: now,
            };
            self.store.set_rate_limits(&row, actor).await?;
            self.rate_limits.reload().await;
        }
        Ok(())
    }

    /// Keys the viewer may see: their own and those of teams they lead (all for admins).
    pub async fn list(&self, viewer: &Viewer) -> Result<Vec<KeyRow>, Refusal> {
        match viewer {
            Viewer::Operator => Ok(self.store.list_keys().await?),
            Viewer::User(p) if p.role == "admin" => Ok(self.store.list_keys().await?),
            Viewer::User(p) => {
                let mut keys = self.store.keys_of_user(&p.id).await?;
                for (team, role) in &p.teams {
                    if role == "lead" {
                        keys.extend(
                            self.store
                                .keys_of_team(team)
                                .await?
                                .into_iter()
                                .filter(|k| k.user_id.as_deref() != Some(p.id.as_str())),
                        );
                    }
                }
                keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
                Ok(keys)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(role: &str, teams: &[(&str, &str)]) -> Viewer {
        Viewer::User(Person {
            id: "u1".into(),
            name: "u1@example.com".into(),
            role: role.into(),
            teams: teams
                .iter()
                .map(|(t, r)| ((*t).to_owned(), (*r).to_owned()))
                .collect(),
        })
    }

    fn key(team: &str, owner: Option<&str>) -> KeyRow {
        KeyRow {
            id: "k".into(),
            name: "k".into(),
            prefix: String::new(),
            key_hash: None,
            team_id: team.into(),
            project_id: None,
            user_id: owner.map(str::to_owned),
            status: "active".into(),
            models: "[]".into(),
            tags: "[]".into(),
            rpm_limit: None,
            tpm_limit: None,
            budget_micros: None,
            budget_period: None,
            expires_at: None,
            created_at: 0,
            updated_at: 0,
            previous_key_hash: None,
            previous_valid_until: None,
            purpose: None,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
        }
    }

    #[test]
    fn keys_are_seen_by_owner_team_leads_and_admins_only() {
        let member_a = person("member", &[("A", "member")]);
        let lead_a = person("member", &[("A", "lead")]);
        let lead_b = person("member", &[("B", "lead")]);
        let finance = person("finance", &[]);
        let admin = person("admin", &[]);
        let someone_elses = key("A", Some("u2"));
        let own = key("A", Some("u1"));
        assert!(!member_a.sees_key(&someone_elses));
        assert!(member_a.sees_key(&own));
        assert!(lead_a.sees_key(&someone_elses));
        assert!(!lead_b.sees_key(&someone_elses));
        assert!(!finance.sees_key(&someone_elses));
        assert!(admin.sees_key(&someone_elses));
        assert!(Viewer::Operator.sees_key(&someone_elses));
        assert!(member_a.sees_team("A") && !member_a.sees_team("B"));
        assert!(finance.sees_team("B"));
        assert!(lead_a.leads("A") && !lead_a.leads("B") && !member_a.leads("A"));
    }
}
