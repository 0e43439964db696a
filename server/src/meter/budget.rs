//! Budgets on the request path. Before a request goes upstream its worst-case cost is
//! held against every budget that applies (key, project, team, user); afterwards the hold
//! is settled to the real cost, or released. Holds are taken from leases this instance was
//! granted by the database (in one transaction, never beyond the budget), so the hot path
//! only waits on the database when a lease runs out, and several instances together can
//! never spend more than a budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::store::Store;
use crate::store::budgets::BudgetRow;

/// How often spending is written back and idle leases returned.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Budget definitions are read again this often (changes made on other instances).
const REFRESH_EVERY: Duration = Duration::from_millis(1000);
/// A lease not renewed for this long is taken back from its (dead) instance.
const LEASE_TTL_MS: i64 = 30_000;
/// Headroom unused this long goes back to the pool for other instances.
const IDLE_RETURN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Total,
}

const DAY_MS: i64 = 86_400_000;

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "daily" => Some(Period::Daily),
            "weekly" => Some(Period::Weekly),
            "monthly" => Some(Period::Monthly),
            "total" => Some(Period::Total),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
        }
    }

    /// Start of the period containing `now_ms` (UTC; weeks start on Monday).
    pub fn start(self, now_ms: i64) -> i64 {
        let day = now_ms.div_euclid(DAY_MS);
        match self {
            Period::Daily => day * DAY_MS,
            // 1970-01-01 was a Thursday: Monday is three days later in the cycle.
            Period::Weekly => (day - (day + 3).rem_euclid(7)) * DAY_MS,
            Period::Monthly => {
                let (y, m, _) = civil(day);
                days_from_civil(y, m, 1) * DAY_MS
            }
            Period::Total => 0,
        }
    }

    /// When the period containing `now_ms` ends (the next one starts), if it does.
    pub fn reset_at(self, now_ms: i64) -> Option<i64> {
        let start = self.start(now_ms);
        match self {
            Period::Daily => Some(start + DAY_MS),
            Period::Weekly => Some(start + 7 * DAY_MS),
            Period::Monthly => {
                let (y, m, _) = civil(start.div_euclid(DAY_MS));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Some(days_from_civil(ny, nm, 1) * DAY_MS)
            }
            Period::Total => None,
        }
    }
}

/// (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(day: i64) -> (i64, i64, i64) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil (UTC) date.
pub fn day_number(y: i64, m: i64, d: i64) -> i64 {
    days_from_civil(y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-01T00:00:00Z`
pub fn rfc3339(ms: i64) -> String {
    let day = ms.div_euclid(DAY_MS);
    let (y, m, d) = civil(day);
    let s = ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Checks a budget as an operator sets it: returns its amount in micro-dollars and its
/// thresholds sorted, or the parameter at fault and why.
pub fn check_budget(
    amount_usd: f64,
    period: &str,
    thresholds: &[u32],
) -> Result<(i64, Vec<u32>), (&'static str, &'static str)> {
    if Period::parse(period).is_none() {
        return Err(("period", "period is daily, weekly, monthly or total"));
    }
    if !amount_usd.is_finite() || !(0.0..=1e9).contains(&amount_usd) {
        return Err(("amount_usd", "amount_usd must be a number from 0 to 1e9"));
    }
    if thresholds.len() > 10 || thresholds.iter().any(|t| !(1..=100).contains(t)) {
        return Err((
            "thresholds",
            "up to 10 thresholds, each a percentage from 1 to 100",
        ));
    }
    let mut sorted = thresholds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(((amount_usd * 1e6).round() as i64, sorted))
}

/// A budget as enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetDef {
    pub id: String,
    pub scope_type: String,
    pub scope_id: String,
    pub amount_micros: i64,
    pub period: Period,
    pub thresholds: Vec<u32>,
}

impl BudgetDef {
    fn from_row(r: &BudgetRow) -> Option<BudgetDef> {
        Some(BudgetDef {
            id: r.id.clone(),
            scope_type: r.scope_type.clone(),
            scope_id: r.scope_id.clone(),
            amount_micros: r.amount_micros,
            period: Period::parse(&r.period)?,
            thresholds: serde_json::from_str(&r.thresholds).unwrap_or_default(),
        })
    }
}

/// Why a request was refused: the budget it would cross and when that budget resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub scope_type: String,
    pub scope_id: String,
    pub amount_micros: i64,
    pub period: Period,
    pub reset_at: Option<i64>,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} budget of {} ({}: ${} {}) does not cover this request",
            self.scope_type,
            self.scope_id,
            self.scope_type,
            super::micros_to_usd_string(self.amount_micros),
            self.period.as_str(),
        )?;
        match self.reset_at {
            Some(at) => write!(f, "; it resets at {}", rfc3339(at)),
            None => f.write_str("; it does not reset (a total budget)"),
        }
    }
}

/// This instance's share of one budget period.
#[derive(Debug, Default)]
struct Local {
    /// Granted to this instance and not yet turned into spending in the database.
    leased: i64,
    /// Held by requests in flight.
    held: i64,
    /// Spent (settled) but not yet written to the database.
    unflushed: i64,
    last_used: Option<Instant>,
}

impl Local {
    fn free(&self) -> i64 {
        self.leased - self.held - self.unflushed
    }
}

type PeriodKey = (String, i64);

pub struct Budgets {
    store: Store,
    instance: String,
    /// Scope type → scope id → budget (looked up by `&str`, no allocation per request).
    defs: RwLock<HashMap<String, HashMap<String, Arc<BudgetDef>>>>,
    locals: Mutex<HashMap<PeriodKey, Local>>,
    /// One database grant at a time per instance (grants are rare: a lease covers many
    /// requests).
    granting: tokio::sync::Mutex<()>,
    alerts: Option<super::alerts::Alerts>,
}

/// What a request holds; settled with the real cost (or released) exactly once.
pub struct Hold {
    budgets: Arc<Budgets>,
    parts: Vec<(PeriodKey, i64)>,
}

impl Hold {
    /// The real cost replaces the hold on every budget it was taken from.
    pub fn settle(mut self, actual_micros: i64) {
        self.finish(actual_micros);
    }

    fn finish(&mut self, actual: i64) {
        let parts = std::mem::take(&mut self.parts);
        if parts.is_empty() {
            return;
        }
        let Ok(mut locals) = self.budgets.locals.lock() else {
            return;
        };
        for (key, held) in parts {
            let l = locals.entry(key).or_default();
            l.held -= held;
            l.unflushed += actual.max(0);
            l.last_used = Some(Instant::now());
        }
    }
}

impl Drop for Hold {
    /// A hold never settled (the request failed before any cost) is released.
    fn drop(&mut self) {
        self.finish(0);
    }
}

fn now_ms() -> i64 {
    crate::access::now_ms()
}

impl Budgets {
    /// Loads the budgets and starts keeping them (and this instance's leases) in step with
    /// the database.
    pub async fn start(
        store: Store,
        alerts: Option<super::alerts::Alerts>,
    ) -> anyhow::Result<Arc<Budgets>> {
        let b = Arc::new(Budgets {
            store,
            instance: format!("gw_{}", uuid::Uuid::new_v4().simple()),
            defs: RwLock::new(HashMap::new()),
            locals: Mutex::new(HashMap::new()),
            granting: tokio::sync::Mutex::new(()),
            alerts,
        });
        b.refresh().await?;
        let weak = Arc::downgrade(&b);
        tokio::spawn(async move {
            let mut last_refresh = Instant::now();
            let mut last_renew = Instant::now();
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let Some(b) = weak.upgrade() else { break };
                if b.store.is_closed() {
                    break;
                }
                b.flush(false).await;
                if last_refresh.elapsed() >= REFRESH_EVERY {
                    last_refresh = Instant::now();
                    if let Err(e) = b.refresh().await {
                        tracing::warn!(error = %e, "budget refresh failed; keeping the last known budgets");
                    }
                }
                if last_renew.elapsed()
                    >= Duration::from_millis(u64::try_from(LEASE_TTL_MS / 3).unwrap_or(10_000))
                {
                    last_renew = Instant::now();
                    if let Err(e) = b
                        .store
                        .renew_leases(&b.instance, now_ms() + LEASE_TTL_MS)
                        .await
                    {
                        tracing::warn!(error = %e, "budget lease renewal failed");
                    }
                }
            }
        });
        Ok(b)
    }

    async fn refresh(&self) -> Result<(), sqlx::Error> {
        let rows = self.store.list_budgets().await?;
        let mut map: HashMap<String, HashMap<String, Arc<BudgetDef>>> = HashMap::new();
        for d in rows.iter().filter_map(BudgetDef::from_row) {
            map.entry(d.scope_type.clone())
                .or_default()
                .insert(d.scope_id.clone(), Arc::new(d));
        }
        if let Ok(mut defs) = self.defs.write() {
            *defs = map;
        }
        Ok(())
    }

    /// Reads the budgets again now (after a change made on this instance).
    pub async fn reload(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "budget reload failed");
        }
    }

    /// The budgets that apply to a request by these scopes: (type, id) pairs.
    pub fn applicable(&self, scopes: &[(&str, Option<&str>)]) -> Vec<Arc<BudgetDef>> {
        let Ok(defs) = self.defs.read() else {
            return Vec::new();
        };
        scopes
            .iter()
            .filter_map(|(t, id)| defs.get(*t)?.get((*id)?).cloned())
            .collect()
    }

    /// Holds `worst_case` micro-dollars against every budget given, or refuses naming the
    /// first budget it would cross (and holds nothing).
    pub async fn hold(
        self: &Arc<Self>,
        budgets: &[Arc<BudgetDef>],
        worst_case: i64,
    ) -> Result<Hold, Exceeded> {
        let mut hold = Hold {
            budgets: self.clone(),
            parts: Vec::with_capacity(budgets.len()),
        };
        let worst_case = worst_case.max(0);
        let now = now_ms();
        for def in budgets {
            let key = (def.id.clone(), def.period.start(now));
            let exceeded = || Exceeded {
                scope_type: def.scope_type.clone(),
                scope_id: def.scope_id.clone(),
                amount_micros: def.amount_micros,
                period: def.period,
                reset_at: def.period.reset_at(now),
            };
            if worst_case > def.amount_micros {
                return Err(exceeded());
            }
            loop {
                if self.try_reserve(&key, worst_case) {
                    hold.parts.push((key.clone(), worst_case));
                    break;
                }
                // Not enough headroom here: ask the database for more (one asker at a
                // time; whoever waited re-checks first, a lease may have just arrived).
                let _turn = self.granting.lock().await;
                if self.try_reserve(&key, worst_case) {
                    hold.parts.push((key.clone(), worst_case));
                    break;
                }
                let free = self.free(&key);
                let need = worst_case - free;
                // A lease covers several requests of this size, within the budget.
                let want = need.max(def.amount_micros / 20).max(worst_case * 4);
                let granted = self
                    .store
                    .grant_lease(
                        &def.id,
                        key.1,
                        def.amount_micros,
                        need,
                        want,
                        &self.instance,
                        now,
                        now + LEASE_TTL_MS,
                    )
                    .await;
                match granted {
                    Ok(g) if g > 0 => {
                        if let Ok(mut locals) = self.locals.lock() {
                            locals.entry(key.clone()).or_default().leased += g;
                        }
                    }
                    Ok(_) => return Err(exceeded()),
                    Err(e) => {
                        // Unknown state: refuse rather than risk crossing the budget.
                        tracing::error!(error = %e, budget = %def.id, "budget lease failed; refusing");
                        return Err(exceeded());
                    }
                }
            }
        }
        Ok(hold)
    }

    fn try_reserve(&self, key: &PeriodKey, amount: i64) -> bool {
        let Ok(mut locals) = self.locals.lock() else {
            return false;
        };
        let l = locals.entry(key.clone()).or_default();
        if l.free() >= amount {
            l.held += amount;
            l.last_used = Some(Instant::now());
            true
        } else {
            false
        }
    }

    fn free(&self, key: &PeriodKey) -> i64 {
        self.locals
            .lock()
            .ok()
            .and_then(|l| l.get(key).map(Local::free))
            .unwrap_or(0)
    }

    /// Writes spending back, returns idle (or, when `all`, every unused) lease, and fires
    /// alerts for thresholds crossed.
    pub async fn flush(&self, all: bool) {
        let work: Vec<(PeriodKey, i64, i64)> = {
            let Ok(locals) = self.locals.lock() else {
                return;
            };
            locals
                .iter()
                .filter_map(|(k, l)| {
                    let idle = l.held == 0
                        && (all || l.last_used.is_none_or(|t| t.elapsed() >= IDLE_RETURN));
                    let returned = if idle { l.free().max(0) } else { 0 };
                    (l.unflushed > 0 || returned > 0).then(|| (k.clone(), l.unflushed, returned))
                })
                .collect()
        };
        for ((budget_id, start), spent, returned) in work {
            let now = now_ms();
            match self
                .store
                .settle_lease(
                    &budget_id,
                    start,
                    &self.instance,
                    spent,
                    returned,
                    now + LEASE_TTL_MS,
                )
                .await
            {
                Ok(usage) => {
                    if let Ok(mut locals) = self.locals.lock() {
                        let key = (budget_id.clone(), start);
                        if let Some(l) = locals.get_mut(&key) {
                            l.unflushed -= spent;
                            l.leased -= spent + returned;
                            if l.leased <= 0 && l.held == 0 && l.unflushed == 0 {
                                locals.remove(&key);
                            }
                        }
                    }
                    if spent > 0 {
                        self.check_alerts(&budget_id, start, usage.spent_micros)
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, budget = %budget_id, "budget settlement failed; retrying");
                }
            }
        }
    }

    async fn check_alerts(&self, budget_id: &str, start: i64, spent: i64) {
        let def = self.defs.read().ok().and_then(|d| {
            d.values()
                .flat_map(HashMap::values)
                .find(|d| d.id == budget_id)
                .cloned()
        });
        let Some(def) = def else { return };
        if def.amount_micros <= 0 {
            return;
        }
        let pct = i128::from(spent) * 100 / i128::from(def.amount_micros);
        for t in def
            .thresholds
            .iter()
            .copied()
            .filter(|t| i128::from(*t) <= pct)
        {
            match self.store.mark_alerted(budget_id, start, t).await {
                Ok(true) => {
                    tracing::warn!(budget = %budget_id, threshold = t, spent_micros = spent, "budget threshold reached");
                    if let Some(a) = &self.alerts {
                        a.send(&def, t, spent, start);
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "budget alert bookkeeping failed"),
            }
        }
    }

    /// At shutdown: everything spent is written and every unused lease handed back.
    pub async fn close(&self) {
        self.flush(true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: i64, d: i64, h: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS + h * 3_600_000
    }

    #[test]
    fn periods_start_and_reset_on_utc_boundaries() {
        let t = ms(2026, 12, 4, 22); // a Friday
        assert_eq!(Period::Daily.start(t), ms(2026, 12, 4, 0));
        assert_eq!(Period::Daily.reset_at(t), Some(ms(2026, 12, 5, 0)));
        assert_eq!(Period::Weekly.start(t), ms(2026, 11, 30, 0), "Monday");
        assert_eq!(Period::Weekly.reset_at(t), Some(ms(2026, 12, 7, 0)));
        assert_eq!(Period::Monthly.start(t), ms(2026, 12, 1, 0));
        assert_eq!(Period::Monthly.reset_at(t), Some(ms(2027, 1, 1, 0)));
        assert_eq!(
            Period::Monthly.reset_at(ms(2028, 2, 29, 5)),
            Some(ms(2028, 3, 1, 0))
        );
        assert_eq!(Period::Total.start(t), 0);
        assert_eq!(Period::Total.reset_at(t), None);
        assert_eq!(rfc3339(ms(2027, 1, 1, 0)), "2027-01-01T00:00:00Z");
        // The last millisecond of a month is still in it.
        assert_eq!(
            Period::Monthly.start(ms(2027, 1, 1, 0) - 1),
            ms(2026, 12, 1, 0)
        );
    }
}
