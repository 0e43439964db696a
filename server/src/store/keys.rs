//! Teams, projects and virtual keys, each change written with its audit row in the same
//! transaction: if the audit row cannot be written, the change is not made.

use sha2::{Digest, Sha256};

use super::{BeginWrite, Store};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    /// The team's model allow-list (JSON array; empty = every configured model).
    pub models: String,
    pub created_at: i64,
}

impl TeamRow {
    pub fn model_list(&self) -> Vec<String> {
        serde_json::from_str(&self.models).unwrap_or_default()
    }

    /// Whether a key of this team may be given `model`.
    pub fn allows(&self, model: &str) -> bool {
        let list = self.model_list();
        list.is_empty() || list.iter().any(|m| m == model)
    }
}

/// A virtual key as stored: never the secret, only its keyed hash and a visible prefix.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: Option<String>,
    pub team_id: String,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub status: String,
    pub models: String,
    pub tags: String,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub budget_micros: Option<i64>,
    pub budget_period: Option<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub previous_key_hash: Option<String>,
    pub previous_valid_until: Option<i64>,
    pub purpose: Option<String>,
    /// Who approved or rejected the request, when, and why.
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub decision_reason: Option<String>,
}

impl KeyRow {
    pub fn model_list(&self) -> Vec<String> {
        serde_json::from_str(&self.models).unwrap_or_default()
    }

    pub fn tag_list(&self) -> Vec<String> {
        serde_json::from_str(&self.tags).unwrap_or_default()
    }
}

const KEY_COLUMNS: &str = "id, name, prefix, key_hash, team_id, project_id, user_id, status, models, tags, \
    rpm_limit, tpm_limit, budget_micros, budget_period, expires_at, created_at, updated_at, \
    previous_key_hash, previous_valid_until, purpose, decided_by, decided_at, decision_reason";

/// The outcome of a conditional change to a key.
#[derive(Debug)]
pub enum KeyChange {
    Done(Box<KeyRow>),
    NotFound,
    /// The key is not in a state that allows the change (the reason, for the caller).
    Refused(&'static str),
}

/// Who changed what, for the audit row.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub source_ip: Option<String>,
}

/// Appends an audit row inside an open transaction, chained to the previous row's hash.
/// PostgreSQL: the table is locked first so two writers cannot chain to the same row.
macro_rules! audit_in_tx {
    ($tx:expr, $is_pg:expr, $now:expr, $actor:expr, $action:expr, $otype:expr, $oid:expr, $before:expr, $after:expr) => {{
        if $is_pg {
            sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE").execute(&mut *$tx).await?;
        }
        let prev: Option<(String,)> =
            sqlx::query_as("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *$tx).await?;
        let prev = prev.map(|p| p.0).unwrap_or_default();
        let before: Option<String> = $before;
        let after: Option<String> = $after;
        let hash = $crate::store::keys::audit_hash(&prev, $now, &$actor.name, $action, $otype, $oid, before.as_deref(), after.as_deref(), $actor.source_ip.as_deref());
        sqlx::query(
            "INSERT INTO audit_log (ts_ms, actor, action, object_type, object_id, before_json, after_json, source_ip, prev_hash, hash) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        )
        .bind($now)
        .bind(&$actor.name)
        .bind($action)
        .bind($otype)
        .bind($oid)
        .bind(&before)
        .bind(&after)
        .bind(&$actor.source_ip)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *$tx)
        .await?;
    }};
}

#[allow(clippy::too_many_arguments)]
pub fn audit_hash(
    prev: &str,
    ts: i64,
    actor: &str,
    action: &str,
    otype: &str,
    oid: &str,
    before: Option<&str>,
    after: Option<&str>,
    ip: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &ts.to_string(),
        actor,
        action,
        otype,
        oid,
        before.unwrap_or(""),
        after.unwrap_or(""),
        ip.unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A key's public description for the audit log (no hash, no secret).
fn key_summary(k: &KeyRow) -> String {
    serde_json::json!({
        "id": k.id, "name": k.name, "prefix": k.prefix, "team_id": k.team_id, "project_id": k.project_id,
        "status": k.status, "models": k.models, "tags": k.tags, "expires_at": k.expires_at,
        "rpm_limit": k.rpm_limit, "tpm_limit": k.tpm_limit, "budget_micros": k.budget_micros,
        "budget_period": k.budget_period, "user_id": k.user_id, "decided_by": k.decided_by,
        "decision_reason": k.decision_reason,
    })
    .to_string()
}

impl Store {
    fn is_pg(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub async fn create_team(
        &self,
        name: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<TeamRow, sqlx::Error> {
        let id = format!("team_{}", uuid::Uuid::now_v7().simple());
        let is_pg = self.is_pg();
        let team = TeamRow {
            id: id.clone(),
            name: name.to_owned(),
            models: "[]".to_owned(),
            created_at: now,
        };
        let after = serde_json::to_string(&team).ok();
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&id).bind(name).bind(now).execute(&mut *tx).await?;
            audit_in_tx!(tx, is_pg, now, actor, "team.create", "team", &id, None, after);
            tx.commit().await?;
        });
        Ok(team)
    }

    pub async fn list_teams(&self) -> Result<Vec<TeamRow>, sqlx::Error> {
        on_pool!(self, p => sqlx::query_as("SELECT id, name, models, created_at FROM teams ORDER BY name").fetch_all(p).await)
    }

    pub async fn team(&self, id: &str) -> Result<Option<TeamRow>, sqlx::Error> {
        on_pool!(self, p => sqlx::query_as("SELECT id, name, models, created_at FROM teams WHERE id = $1").bind(id).fetch_optional(p).await)
    }

    /// Creates a key (active, or a request) and its project, by name within the team, if new.
    pub async fn create_key(
        &self,
        mut key: KeyRow,
        project: Option<&str>,
        actor: &Actor,
    ) -> Result<KeyRow, sqlx::Error> {
        let action = if key.status == "requested" {
            "key.request"
        } else {
            "key.create"
        };
        let is_pg = self.is_pg();
        let now = key.created_at;
        let sql = format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23)"
        );
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if let Some(name) = project {
                let pid = format!("proj_{}", uuid::Uuid::now_v7().simple());
                sqlx::query("INSERT INTO projects (id, team_id, name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (team_id, name) DO NOTHING")
                    .bind(&pid).bind(&key.team_id).bind(name).bind(now).execute(&mut *tx).await?;
                let (id,): (String,) = sqlx::query_as("SELECT id FROM projects WHERE team_id = $1 AND name = $2")
                    .bind(&key.team_id).bind(name).fetch_one(&mut *tx).await?;
                key.project_id = Some(id);
            }
            sqlx::query(&sql)
                .bind(&key.id).bind(&key.name).bind(&key.prefix).bind(&key.key_hash).bind(&key.team_id)
                .bind(&key.project_id).bind(&key.user_id).bind(&key.status).bind(&key.models).bind(&key.tags)
                .bind(key.rpm_limit).bind(key.tpm_limit).bind(key.budget_micros).bind(&key.budget_period)
                .bind(key.expires_at).bind(key.created_at).bind(key.updated_at)
                .bind(&key.previous_key_hash).bind(key.previous_valid_until)
                .bind(&key.purpose).bind(&key.decided_by).bind(key.decided_at).bind(&key.decision_reason)
                .execute(&mut *tx).await?;
            audit_in_tx!(tx, is_pg, now, actor, action, "key", &key.id, None, Some(key_summary(&key)));
            tx.commit().await?;
        });
        Ok(key)
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        on_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, sqlx::Error> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at");
        on_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)
    }

    /// Keys changed at or after `since_ms` (the cache's refresh reads these).
    pub async fn keys_changed_since(&self, since_ms: i64) -> Result<Vec<KeyRow>, sqlx::Error> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE updated_at >= $1");
        on_pool!(self, p => sqlx::query_as(&sql).bind(since_ms).fetch_all(p).await)
    }

    /// Applies `change` to a key in one transaction with its audit row. `change` sees the
    /// key as locked in the transaction and may refuse (then nothing is written).
    pub async fn change_key(
        &self,
        id: &str,
        now: i64,
        actor: &Actor,
        action: &str,
        change: impl FnOnce(&mut KeyRow) -> Result<(), &'static str>,
    ) -> Result<KeyChange, sqlx::Error> {
        let is_pg = self.is_pg();
        let select = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1{}",
            if is_pg { " FOR UPDATE" } else { "" }
        );
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let Some(mut key): Option<KeyRow> = sqlx::query_as(&select).bind(id).fetch_optional(&mut *tx).await? else {
                return Ok(KeyChange::NotFound);
            };
            let before = key_summary(&key);
            if let Err(why) = change(&mut key) {
                return Ok(KeyChange::Refused(why));
            }
            // Strictly later than the last change, so every instance's cache refresh sees it.
            key.updated_at = now.max(key.updated_at + 1);
            sqlx::query(
                "UPDATE api_keys SET status = $2, key_hash = $3, prefix = $4, previous_key_hash = $5, \
                 previous_valid_until = $6, updated_at = $7, models = $8, tags = $9, rpm_limit = $10, \
                 tpm_limit = $11, budget_micros = $12, budget_period = $13, expires_at = $14, \
                 decided_by = $15, decided_at = $16, decision_reason = $17 WHERE id = $1",
            )
            .bind(&key.id).bind(&key.status).bind(&key.key_hash).bind(&key.prefix)
            .bind(&key.previous_key_hash).bind(key.previous_valid_until).bind(key.updated_at)
            .bind(&key.models).bind(&key.tags).bind(key.rpm_limit).bind(key.tpm_limit)
            .bind(key.budget_micros).bind(&key.budget_period).bind(key.expires_at)
            .bind(&key.decided_by).bind(key.decided_at).bind(&key.decision_reason)
            .execute(&mut *tx).await?;
            audit_in_tx!(tx, is_pg, now, actor, action, "key", id, Some(before), Some(key_summary(&key)));
            tx.commit().await?;
            Ok(KeyChange::Done(Box::new(key)))
        })
    }

    /// Revokes a key in any live state (requested, approved or active).
    pub async fn revoke_key(
        &self,
        id: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<KeyChange, sqlx::Error> {
        self.change_key(id, now, actor, "key.revoke", |k| {
            if !matches!(k.status.as_str(), "requested" | "approved" | "active") {
                return Err("the key is not live");
            }
            k.status = "revoked".into();
            k.key_hash = None;
            k.previous_key_hash = None;
            k.previous_valid_until = None;
            Ok(())
        })
        .await
    }

    /// A new secret for an active key; the old one keeps working until `grace_until`.
    pub async fn rotate_key(
        &self,
        id: &str,
        new_hash: &str,
        new_prefix: &str,
        grace_until: i64,
        now: i64,
        actor: &Actor,
    ) -> Result<KeyChange, sqlx::Error> {
        self.change_key(id, now, actor, "key.rotate", |k| {
            if k.status != "active" {
                return Err("only an active key can be rotated");
            }
            k.previous_key_hash = k.key_hash.take();
            k.previous_valid_until = Some(grace_until);
            k.key_hash = Some(new_hash.to_owned());
            k.prefix = new_prefix.to_owned();
            Ok(())
        })
        .await
    }

    /// A lead's decision on a key request.
    pub async fn decide_key(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        now: i64,
        actor: &Actor,
    ) -> Result<KeyChange, sqlx::Error> {
        let action = if approve { "key.approve" } else { "key.reject" };
        self.change_key(id, now, actor, action, |k| {
            if k.status != "requested" {
                return Err("the request was decided already");
            }
            k.status = if approve { "approved" } else { "rejected" }.into();
            k.decided_by = Some(actor.name.clone());
            k.decided_at = Some(now);
            k.decision_reason = reason.map(str::to_owned);
            Ok(())
        })
        .await
    }

    /// An approved key's secret, given to its owner once: the key becomes active with the
    /// secret's hash. A second reveal finds the key active and is refused.
    pub async fn reveal_key(
        &self,
        id: &str,
        hash: &str,
        prefix: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<KeyChange, sqlx::Error> {
        self.change_key(id, now, actor, "key.reveal", |k| {
            if k.status != "approved" {
                return Err("the key is not waiting to be revealed");
            }
            k.status = "active".into();
            k.key_hash = Some(hash.to_owned());
            k.prefix = prefix.to_owned();
            Ok(())
        })
        .await
    }

    pub async fn keys_of_team(&self, team_id: &str) -> Result<Vec<KeyRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE team_id = $1 ORDER BY created_at DESC"
        );
        on_pool!(self, p => sqlx::query_as(&sql).bind(team_id).fetch_all(p).await)
    }

    pub async fn keys_of_user(&self, user_id: &str) -> Result<Vec<KeyRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC"
        );
        on_pool!(self, p => sqlx::query_as(&sql).bind(user_id).fetch_all(p).await)
    }

    /// Project names by id, for a team.
    pub async fn projects_of_team(
        &self,
        team_id: &str,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        on_pool!(self, p => sqlx::query_as("SELECT id, name FROM projects WHERE team_id = $1 ORDER BY name").bind(team_id).fetch_all(p).await)
    }

    pub async fn all_projects(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        on_pool!(self, p => sqlx::query_as("SELECT id, name FROM projects").fetch_all(p).await)
    }

    /// Sets a team's model allow-list.
    pub async fn set_team_models(
        &self,
        team_id: &str,
        models: &[String],
        now: i64,
        actor: &Actor,
    ) -> Result<Option<TeamRow>, sqlx::Error> {
        let is_pg = self.is_pg();
        let json = serde_json::to_string(models).unwrap_or_else(|_| "[]".into());
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let before: Option<TeamRow> = sqlx::query_as("SELECT id, name, models, created_at FROM teams WHERE id = $1")
                .bind(team_id).fetch_optional(&mut *tx).await?;
            let Some(mut team) = before else { return Ok(None) };
            let before = serde_json::to_string(&team).ok();
            sqlx::query("UPDATE teams SET models = $2 WHERE id = $1").bind(team_id).bind(&json).execute(&mut *tx).await?;
            team.models = json;
            audit_in_tx!(tx, is_pg, now, actor, "team.models", "team", team_id, before, serde_json::to_string(&team).ok());
            tx.commit().await?;
            Ok(Some(team))
        })
    }

    /// The audit chain in order: (seq, prev_hash, hash, recomputed hash).
    pub async fn audit_rows(&self) -> Result<Vec<AuditRow>, sqlx::Error> {
        const SQL: &str = "SELECT seq, ts_ms, actor, action, object_type, object_id, before_json, after_json, source_ip, prev_hash, hash \
            FROM audit_log ORDER BY seq";
        on_pool!(self, p => sqlx::query_as(SQL).fetch_all(p).await)
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: Option<String>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub source_ip: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    /// Whether the row's hash matches its content and the given previous hash.
    pub fn verifies(&self, prev: &str) -> bool {
        self.prev_hash == prev
            && self.hash
                == audit_hash(
                    prev,
                    self.ts_ms,
                    &self.actor,
                    &self.action,
                    &self.object_type,
                    self.object_id.as_deref().unwrap_or(""),
                    self.before_json.as_deref(),
                    self.after_json.as_deref(),
                    self.source_ip.as_deref(),
                )
    }
}
