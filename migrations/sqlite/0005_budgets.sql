-- Budgets: hard spend limits on keys, projects, teams and users, per period.
CREATE TABLE budgets (
    id             TEXT PRIMARY KEY,
    scope_type     TEXT NOT NULL CHECK (scope_type IN ('key', 'project', 'team', 'user')),
    scope_id       TEXT NOT NULL,
    amount_micros  INTEGER NOT NULL CHECK (amount_micros >= 0),
    period         TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly', 'total')),
    -- Alert thresholds in percent, JSON array (e.g. [50, 80, 100]).
    thresholds     TEXT NOT NULL DEFAULT '[50,80,100]',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (scope_type, scope_id)
);
CREATE INDEX budgets_updated ON budgets(updated_at);

-- One row per budget and period: what was spent (settled) and what instances hold as
-- leases (headroom they may spend without asking again). spent + leased never exceeds
-- the budget's amount: every lease is granted under that condition, in one transaction.
CREATE TABLE budget_periods (
    budget_id      TEXT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    period_start   INTEGER NOT NULL,
    spent_micros   INTEGER NOT NULL DEFAULT 0,
    leased_micros  INTEGER NOT NULL DEFAULT 0,
    -- Thresholds already alerted in this period, JSON array.
    alerted        TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (budget_id, period_start)
);

-- Leases by instance, so a lease of an instance that died is given back when it expires.
CREATE TABLE budget_leases (
    instance_id    TEXT NOT NULL,
    budget_id      TEXT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    period_start   INTEGER NOT NULL,
    amount_micros  INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    PRIMARY KEY (instance_id, budget_id, period_start)
);
