//! The console's Spend page: budgets against this period's spending and this month's
//! spend, each as far as the signed-in person may see, and the budget form (finance and
//! admins for every scope; leads for their teams' projects and other members' keys).

use std::collections::HashMap;

use app::dto::{BudgetView, ScopeOption, SessionUser, SpendDto, SpendLine};
use app::port::{BudgetForm, ConsoleError};
use axum::http::HeaderMap;

use super::Console;
use crate::access::now_ms;
use crate::meter::budget::{Period, rfc3339};
use crate::store::keys::{Actor, KeyRow};

fn db(e: sqlx::Error) -> ConsoleError {
    tracing::error!(error = %e, "console spend: database error");
    ConsoleError::Internal
}

/// What the page needs to name and place every scope.
struct World {
    teams: HashMap<String, String>,
    projects: HashMap<String, (String, String)>,
    keys: HashMap<String, KeyRow>,
    users: HashMap<String, String>,
}

impl World {
    fn name(&self, scope_type: &str, id: &str) -> String {
        match scope_type {
            "team" => self.teams.get(id).cloned(),
            "project" => self
                .projects
                .get(id)
                .map(|(n, t)| format!("{n} ({})", self.teams.get(t).cloned().unwrap_or_default())),
            "key" => self.keys.get(id).map(|k| {
                format!(
                    "{} ({})",
                    k.name,
                    self.teams.get(&k.team_id).cloned().unwrap_or_default()
                )
            }),
            "user" => self.users.get(id).cloned(),
            _ => None,
        }
        .unwrap_or_else(|| id.to_owned())
    }
}

fn org_wide(user: &SessionUser) -> bool {
    matches!(user.role.as_str(), "admin" | "finance")
}

fn leads(user: &SessionUser, team: &str) -> bool {
    user.teams.iter().any(|t| t.id == team && t.role == "lead")
}

impl Console {
    async fn world(&self) -> Result<World, ConsoleError> {
        Ok(World {
            teams: self
                .store
                .list_teams()
                .await
                .map_err(db)?
                .into_iter()
                .map(|t| (t.id, t.name))
                .collect(),
            projects: self
                .store
                .projects_with_teams()
                .await
                .map_err(db)?
                .into_iter()
                .map(|(id, name, team)| (id, (name, team)))
                .collect(),
            keys: self
                .store
                .list_keys()
                .await
                .map_err(db)?
                .into_iter()
                .map(|k| (k.id.clone(), k))
                .collect(),
            users: self
                .store
                .list_users()
                .await
                .map_err(db)?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect(),
        })
    }

    /// Whether the user sees a scope's budget and spending.
    fn sees(user: &SessionUser, w: &World, scope_type: &str, id: &str) -> bool {
        if org_wide(user) {
            return true;
        }
        match scope_type {
            "key" => w.keys.get(id).is_some_and(|k| {
                k.user_id.as_deref() == Some(user.id.as_str()) || leads(user, &k.team_id)
            }),
            "project" => w.projects.get(id).is_some_and(|(_, t)| leads(user, t)),
            "team" => leads(user, id),
            "user" => id == user.id,
            _ => false,
        }
    }

    /// Whether the user may set a scope's budget: finance and admins any; leads their
    /// teams' projects and other people's keys in them (nobody raises their own).
    fn may_set(user: &SessionUser, w: &World, scope_type: &str, id: &str) -> bool {
        if org_wide(user) {
            return true;
        }
        match scope_type {
            "key" => w.keys.get(id).is_some_and(|k| {
                leads(user, &k.team_id) && k.user_id.as_deref() != Some(user.id.as_str())
            }),
            "project" => w.projects.get(id).is_some_and(|(_, t)| leads(user, t)),
            _ => false,
        }
    }

    pub(super) async fn spend_impl(&self, user: &SessionUser) -> Result<SpendDto, ConsoleError> {
        let w = self.world().await?;
        let now = now_ms();
        let mut budgets = Vec::new();
        for b in self.store.list_budgets().await.map_err(db)? {
            if !Self::sees(user, &w, &b.scope_type, &b.scope_id) {
                continue;
            }
            let period = Period::parse(&b.period).unwrap_or(Period::Total);
            let start = period.start(now);
            let usage = self.store.period_usage(&b.id, start).await.map_err(db)?;
            let alerted = self.store.period_alerted(&b.id, start).await.map_err(db)?;
            budgets.push(BudgetView {
                scope_name: w.name(&b.scope_type, &b.scope_id),
                scope_type: b.scope_type,
                scope_id: b.scope_id,
                amount_usd: b.amount_micros as f64 / 1e6,
                period: b.period,
                spent_usd: usage.spent_micros as f64 / 1e6,
                percent: if b.amount_micros > 0 {
                    usage.spent_micros as f64 * 100.0 / b.amount_micros as f64
                } else {
                    100.0
                },
                thresholds: serde_json::from_str(&b.thresholds).unwrap_or_default(),
                alerted,
                resets_at: period.reset_at(now).map(rfc3339),
            });
        }
        let month = Period::Monthly.start(now);
        let lines = if org_wide(user) {
            self.store
                .spend_grouped("team_id", month, now + 1)
                .await
                .map_err(db)?
                .into_iter()
                .map(|r| SpendLine {
                    name: r
                        .group_id
                        .as_deref()
                        .map_or_else(|| "(master key)".to_owned(), |t| w.name("team", t)),
                    requests: r.requests,
                    tokens: r.prompt_tokens + r.completion_tokens,
                    cost_usd: r.cost_micros as f64 / 1e6,
                })
                .collect()
        } else {
            self.store
                .spend_grouped("key_id", month, now + 1)
                .await
                .map_err(db)?
                .into_iter()
                .filter(|r| {
                    r.group_id
                        .as_deref()
                        .is_some_and(|k| Self::sees(user, &w, "key", k))
                })
                .map(|r| SpendLine {
                    name: w.name("key", r.group_id.as_deref().unwrap_or_default()),
                    requests: r.requests,
                    tokens: r.prompt_tokens + r.completion_tokens,
                    cost_usd: r.cost_micros as f64 / 1e6,
                })
                .collect()
        };
        let mut settable = Vec::new();
        let mut offer = |t: &str, id: &str| {
            if Self::may_set(user, &w, t, id) {
                settable.push(ScopeOption {
                    scope_type: t.to_owned(),
                    scope_id: id.to_owned(),
                    label: format!("{t}: {}", w.name(t, id)),
                });
            }
        };
        let mut team_ids: Vec<&String> = w.teams.keys().collect();
        team_ids.sort_by_key(|id| w.teams.get(*id));
        for id in team_ids {
            offer("team", id);
        }
        for id in w.projects.keys() {
            offer("project", id);
        }
        for (id, k) in &w.keys {
            if matches!(k.status.as_str(), "requested" | "approved" | "active") {
                offer("key", id);
            }
        }
        Ok(SpendDto {
            csrf: user.csrf.clone(),
            budgets,
            lines,
            settable,
        })
    }

    pub(super) async fn set_budget_impl(
        &self,
        headers: &HeaderMap,
        user: &SessionUser,
        form: BudgetForm,
    ) -> Result<(), ConsoleError> {
        let invalid = |m: &str| ConsoleError::Invalid(m.to_owned());
        let Some((scope_type, scope_id)) = form.scope.split_once(':') else {
            return Err(invalid("choose what the budget is for"));
        };
        let w = self.world().await?;
        if !Self::sees(user, &w, scope_type, scope_id) {
            return Err(ConsoleError::NotFound("no such budget scope".into()));
        }
        if !Self::may_set(user, &w, scope_type, scope_id) {
            return Err(ConsoleError::Forbidden(
                "budgets here are set by finance, an admin or (for its keys and projects) the team's lead"
                    .into(),
            ));
        }
        let actor = Actor {
            name: format!("user:{}", user.username),
            source_ip: Some(super::client_ip(headers)),
        };
        let now = now_ms();
        match form.amount_usd {
            None => {
                self.store
                    .delete_budget(scope_type, scope_id, now, &actor)
                    .await
                    .map_err(db)?;
            }
            Some(a) => {
                let (micros, thresholds) =
                    crate::meter::budget::check_budget(a, &form.period, &form.thresholds)
                        .map_err(|(_, why)| invalid(why))?;
                self.store
                    .upsert_budget(
                        scope_type,
                        scope_id,
                        micros,
                        &form.period,
                        &thresholds,
                        now,
                        &actor,
                    )
                    .await
                    .map_err(db)?;
            }
        }
        self.budgets.reload().await;
        Ok(())
    }
}
