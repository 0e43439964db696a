//! Budgets and their leases in the database. An instance spends a budget only out of a
//! lease it was granted; a lease is granted in one transaction under the condition
//! `spent + leased + grant <= amount`, so the instances sharing the database can never
//! together spend more than the budget, whatever their number.

use super::keys::Actor;
use super::{BeginWrite, Store};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct BudgetRow {
    pub id: String,
    pub scope_type: String,
    pub scope_id: String,
    pub amount_micros: i64,
    pub period: String,
    /// Alert thresholds in percent, JSON array.
    pub thresholds: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub const SCOPES: &[&str] = &["key", "project", "team", "user"];
pub const PERIODS: &[&str] = &["daily", "weekly", "monthly", "total"];

const COLUMNS: &str =
    "id, scope_type, scope_id, amount_micros, period, thresholds, created_at, updated_at";

/// A period's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodUsage {
    pub spent_micros: i64,
    pub leased_micros: i64,
}

impl Store {
    /// Sets (creates or replaces) the budget of a scope, with its audit row.
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert_budget(
        &self,
        scope_type: &str,
        scope_id: &str,
        amount_micros: i64,
        period: &str,
        thresholds: &[u32],
        now: i64,
        actor: &Actor,
    ) -> Result<BudgetRow, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        let thresholds = serde_json::to_string(thresholds).unwrap_or_else(|_| "[]".into());
        let select =
            format!("SELECT {COLUMNS} FROM budgets WHERE scope_type = $1 AND scope_id = $2");
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let before: Option<BudgetRow> = sqlx::query_as(&select).bind(scope_type).bind(scope_id).fetch_optional(&mut *tx).await?;
            let row = BudgetRow {
                id: before.as_ref().map_or_else(|| format!("bud_{}", uuid::Uuid::now_v7().simple()), |b| b.id.clone()),
                scope_type: scope_type.to_owned(),
                scope_id: scope_id.to_owned(),
                amount_micros,
                period: period.to_owned(),
                thresholds,
                created_at: before.as_ref().map_or(now, |b| b.created_at),
                // Strictly later than before, so every instance's refresh sees the change.
                updated_at: before.as_ref().map_or(now, |b| now.max(b.updated_at + 1)),
            };
            sqlx::query(
                "INSERT INTO budgets (id, scope_type, scope_id, amount_micros, period, thresholds, created_at, updated_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (scope_type, scope_id) DO UPDATE SET \
                 amount_micros = excluded.amount_micros, period = excluded.period, \
                 thresholds = excluded.thresholds, updated_at = excluded.updated_at",
            )
            .bind(&row.id).bind(&row.scope_type).bind(&row.scope_id).bind(row.amount_micros)
            .bind(&row.period).bind(&row.thresholds).bind(row.created_at).bind(row.updated_at)
            .execute(&mut *tx).await?;
            if scope_type == "key" {
                // A key's own budget fields say the same, whichever way it was set.
                sqlx::query("UPDATE api_keys SET budget_micros = $2, budget_period = $3 WHERE id = $1")
                    .bind(scope_id).bind(amount_micros).bind(&row.period).execute(&mut *tx).await?;
            }
            let object = format!("{scope_type}/{scope_id}");
            audit_in_tx!(tx, is_pg, now, actor, "budget.set", "budget", &object,
                before.as_ref().and_then(|b| serde_json::to_string(b).ok()), serde_json::to_string(&row).ok());
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Removes a scope's budget; `false` if it had none.
    pub async fn delete_budget(
        &self,
        scope_type: &str,
        scope_id: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<bool, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        let select =
            format!("SELECT {COLUMNS} FROM budgets WHERE scope_type = $1 AND scope_id = $2");
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let before: Option<BudgetRow> = sqlx::query_as(&select).bind(scope_type).bind(scope_id).fetch_optional(&mut *tx).await?;
            let Some(before) = before else { return Ok(false) };
            sqlx::query("DELETE FROM budgets WHERE id = $1").bind(&before.id).execute(&mut *tx).await?;
            if scope_type == "key" {
                sqlx::query("UPDATE api_keys SET budget_micros = NULL, budget_period = NULL WHERE id = $1")
                    .bind(scope_id).execute(&mut *tx).await?;
            }
            let object = format!("{scope_type}/{scope_id}");
            audit_in_tx!(tx, is_pg, now, actor, "budget.delete", "budget", &object, serde_json::to_string(&before).ok(), None);
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn list_budgets(&self) -> Result<Vec<BudgetRow>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM budgets ORDER BY scope_type, scope_id");
        on_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)
    }

    pub async fn period_usage(
        &self,
        budget_id: &str,
        period_start: i64,
    ) -> Result<PeriodUsage, sqlx::Error> {
        let row: Option<(i64, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT spent_micros, leased_micros FROM budget_periods WHERE budget_id = $1 AND period_start = $2")
            .bind(budget_id).bind(period_start).fetch_optional(p).await)?;
        Ok(row.map_or_else(PeriodUsage::default, |(s, l)| PeriodUsage {
            spent_micros: s,
            leased_micros: l,
        }))
    }

    /// Grants this instance up to `want` (at least `need`) more of a budget's period, or
    /// nothing (`Ok(0)`) if even `need` would cross the amount. Leases of instances that
    /// stopped renewing them are given back first.
    #[allow(clippy::too_many_arguments)]
    pub async fn grant_lease(
        &self,
        budget_id: &str,
        period_start: i64,
        amount_micros: i64,
        need: i64,
        want: i64,
        instance: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<i64, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // Creating the row (or touching it) first also takes SQLite's write lock, so
            // the read below cannot go stale.
            sqlx::query(
                "INSERT INTO budget_periods (budget_id, period_start, spent_micros, leased_micros, alerted) \
                 VALUES ($1, $2, 0, 0, '[]') ON CONFLICT (budget_id, period_start) DO UPDATE SET spent_micros = budget_periods.spent_micros",
            )
            .bind(budget_id).bind(period_start).execute(&mut *tx).await?;
            let lock = if is_pg { " FOR UPDATE" } else { "" };
            let (spent, mut leased): (i64, i64) = sqlx::query_as(&format!(
                "SELECT spent_micros, leased_micros FROM budget_periods WHERE budget_id = $1 AND period_start = $2{lock}"))
                .bind(budget_id).bind(period_start).fetch_one(&mut *tx).await?;
            // Leases of instances that died (stopped renewing) go back to the pool.
            let dead: Vec<(String, i64)> = sqlx::query_as(
                "SELECT instance_id, amount_micros FROM budget_leases WHERE budget_id = $1 AND period_start = $2 AND expires_at < $3")
                .bind(budget_id).bind(period_start).bind(now).fetch_all(&mut *tx).await?;
            if !dead.is_empty() {
                let back: i64 = dead.iter().map(|d| d.1).sum();
                sqlx::query("DELETE FROM budget_leases WHERE budget_id = $1 AND period_start = $2 AND expires_at < $3")
                    .bind(budget_id).bind(period_start).bind(now).execute(&mut *tx).await?;
                leased = (leased - back).max(0);
                tracing::warn!(budget = budget_id, micros = back, "budget leases of stopped instances reclaimed");
            }
            let remaining = amount_micros - spent - leased;
            let grant = if remaining < need.max(1) { 0 } else { want.max(need).min(remaining) };
            sqlx::query("UPDATE budget_periods SET leased_micros = $3 WHERE budget_id = $1 AND period_start = $2")
                .bind(budget_id).bind(period_start).bind(leased + grant).execute(&mut *tx).await?;
            if grant > 0 {
                sqlx::query(
                    "INSERT INTO budget_leases (instance_id, budget_id, period_start, amount_micros, expires_at) VALUES ($1,$2,$3,$4,$5) \
                     ON CONFLICT (instance_id, budget_id, period_start) DO UPDATE SET \
                     amount_micros = budget_leases.amount_micros + excluded.amount_micros, expires_at = excluded.expires_at",
                )
                .bind(instance).bind(budget_id).bind(period_start).bind(grant).bind(expires_at)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(grant)
        })
    }

    /// Turns `spent` of this instance's lease into spending and hands `returned` back,
    /// renewing what remains of the lease until `expires_at`. Returns the period's figures.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle_lease(
        &self,
        budget_id: &str,
        period_start: i64,
        instance: &str,
        spent: i64,
        returned: i64,
        expires_at: i64,
    ) -> Result<PeriodUsage, sqlx::Error> {
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let lease: Option<(i64,)> = sqlx::query_as(
                "SELECT amount_micros FROM budget_leases WHERE instance_id = $1 AND budget_id = $2 AND period_start = $3")
                .bind(instance).bind(budget_id).bind(period_start).fetch_optional(&mut *tx).await?;
            let held = lease.map_or(0, |l| l.0);
            // Only what this instance still holds leaves the leased total (a lease already
            // reclaimed as dead was subtracted then); spending beyond it still counts.
            let off_lease = (spent + returned).min(held).max(0);
            sqlx::query(
                "UPDATE budget_periods SET spent_micros = spent_micros + $3, \
                 leased_micros = CASE WHEN leased_micros > $4 THEN leased_micros - $4 ELSE 0 END \
                 WHERE budget_id = $1 AND period_start = $2",
            )
            .bind(budget_id).bind(period_start).bind(spent).bind(off_lease)
            .execute(&mut *tx).await?;
            if held - off_lease > 0 {
                sqlx::query("UPDATE budget_leases SET amount_micros = $4, expires_at = $5 WHERE instance_id = $1 AND budget_id = $2 AND period_start = $3")
                    .bind(instance).bind(budget_id).bind(period_start).bind(held - off_lease).bind(expires_at)
                    .execute(&mut *tx).await?;
            } else {
                sqlx::query("DELETE FROM budget_leases WHERE instance_id = $1 AND budget_id = $2 AND period_start = $3")
                    .bind(instance).bind(budget_id).bind(period_start).execute(&mut *tx).await?;
            }
            let (s, l): (i64, i64) = sqlx::query_as(
                "SELECT spent_micros, leased_micros FROM budget_periods WHERE budget_id = $1 AND period_start = $2")
                .bind(budget_id).bind(period_start).fetch_optional(&mut *tx).await?.unwrap_or((0, 0));
            tx.commit().await?;
            Ok(PeriodUsage { spent_micros: s, leased_micros: l })
        })
    }

    /// Renews every lease of this instance.
    pub async fn renew_leases(&self, instance: &str, expires_at: i64) -> Result<(), sqlx::Error> {
        on_pool!(self, p => sqlx::query("UPDATE budget_leases SET expires_at = $2 WHERE instance_id = $1")
            .bind(instance).bind(expires_at).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Records that a period's threshold alerted; `false` if it had already (another
    /// instance, or an earlier call): each threshold fires once per period.
    pub async fn mark_alerted(
        &self,
        budget_id: &str,
        period_start: i64,
        threshold: u32,
    ) -> Result<bool, sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE budget_periods SET alerted = alerted WHERE budget_id = $1 AND period_start = $2")
                .bind(budget_id).bind(period_start).execute(&mut *tx).await?;
            let lock = if is_pg { " FOR UPDATE" } else { "" };
            let row: Option<(String,)> = sqlx::query_as(&format!(
                "SELECT alerted FROM budget_periods WHERE budget_id = $1 AND period_start = $2{lock}"))
                .bind(budget_id).bind(period_start).fetch_optional(&mut *tx).await?;
            let Some((alerted,)) = row else { return Ok(false) };
            let mut list: Vec<u32> = serde_json::from_str(&alerted).unwrap_or_default();
            if list.contains(&threshold) {
                return Ok(false);
            }
            list.push(threshold);
            sqlx::query("UPDATE budget_periods SET alerted = $3 WHERE budget_id = $1 AND period_start = $2")
                .bind(budget_id).bind(period_start).bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}

/// A scope's rate limits.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct RateLimitRow {
    pub scope_type: String,
    pub scope_id: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_parallel: Option<i64>,
    pub updated_at: i64,
}

impl Store {
    /// Sets a scope's rate limits (all `None` removes them), with its audit row.
    pub async fn set_rate_limits(
        &self,
        row: &RateLimitRow,
        actor: &Actor,
    ) -> Result<(), sqlx::Error> {
        let is_pg = matches!(self, Store::Postgres(_));
        let now = row.updated_at;
        let object = format!("{}/{}", row.scope_type, row.scope_id);
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let before: Option<RateLimitRow> = sqlx::query_as(
                "SELECT scope_type, scope_id, rpm, tpm, max_parallel, updated_at FROM rate_limits WHERE scope_type = $1 AND scope_id = $2")
                .bind(&row.scope_type).bind(&row.scope_id).fetch_optional(&mut *tx).await?;
            if row.rpm.is_none() && row.tpm.is_none() && row.max_parallel.is_none() {
                if before.is_none() {
                    return Ok(());
                }
                sqlx::query("DELETE FROM rate_limits WHERE scope_type = $1 AND scope_id = $2")
                    .bind(&row.scope_type).bind(&row.scope_id).execute(&mut *tx).await?;
            } else {
                sqlx::query(
                    "INSERT INTO rate_limits (scope_type, scope_id, rpm, tpm, max_parallel, updated_at) VALUES ($1,$2,$3,$4,$5,$6) \
                     ON CONFLICT (scope_type, scope_id) DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm, \
                     max_parallel = excluded.max_parallel, updated_at = excluded.updated_at",
                )
                .bind(&row.scope_type).bind(&row.scope_id).bind(row.rpm).bind(row.tpm).bind(row.max_parallel).bind(now)
                .execute(&mut *tx).await?;
            }
            audit_in_tx!(tx, is_pg, now, actor, "rate_limit.set", "rate_limit", &object,
                before.as_ref().and_then(|b| serde_json::to_string(b).ok()), serde_json::to_string(row).ok());
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn list_rate_limits(&self) -> Result<Vec<RateLimitRow>, sqlx::Error> {
        on_pool!(self, p => sqlx::query_as(
            "SELECT scope_type, scope_id, rpm, tpm, max_parallel, updated_at FROM rate_limits ORDER BY scope_type, scope_id")
            .fetch_all(p).await)
    }
}

/// Spending of one group over a time range.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SpendRow {
    pub group_id: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_micros: i64,
}

/// What spending can be grouped by: the ledger column for each.
pub fn spend_column(group_by: &str) -> Option<&'static str> {
    match group_by {
        "team" => Some("team_id"),
        "project" => Some("project_id"),
        "key" => Some("key_id"),
        "user" => Some("user_id"),
        "model" => Some("model"),
        "provider" => Some("provider"),
        "deployment" => Some("deployment"),
        _ => None,
    }
}

impl Store {
    /// Spending between `from_ms` (inclusive) and `to_ms` (exclusive) grouped by a ledger
    /// column named by [`spend_column`] (never by the caller's text), dearest first.
    pub async fn spend_grouped(
        &self,
        column: &'static str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SpendRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {column} AS group_id, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros \
             FROM ledger WHERE ts_ms >= $1 AND ts_ms < $2 GROUP BY {column} ORDER BY cost_micros DESC, requests DESC"
        );
        on_pool!(self, p => sqlx::query_as(&sql).bind(from_ms).bind(to_ms).fetch_all(p).await)
    }
}

impl Store {
    /// Thresholds already alerted in a budget's period.
    pub async fn period_alerted(
        &self,
        budget_id: &str,
        period_start: i64,
    ) -> Result<Vec<u32>, sqlx::Error> {
        let row: Option<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT alerted FROM budget_periods WHERE budget_id = $1 AND period_start = $2")
            .bind(budget_id).bind(period_start).fetch_optional(p).await)?;
        Ok(row
            .and_then(|(a,)| serde_json::from_str(&a).ok())
            .unwrap_or_default())
    }

    /// Projects as (id, name, team id).
    pub async fn projects_with_teams(&self) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        on_pool!(self, p => sqlx::query_as("SELECT id, name, team_id FROM projects").fetch_all(p).await)
    }
}
