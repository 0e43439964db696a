-- First schema. Times are Unix epoch milliseconds (INTEGER) in both databases, money is
-- integer micro-dollars: the same SQL and the same Rust types serve SQLite and PostgreSQL.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    email          TEXT UNIQUE,
    display_name   TEXT,
    password_hash  TEXT,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'finance', 'auditor', 'member')),
    is_active      INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL
);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE team_members (
    team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('lead', 'member')),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    prefix         TEXT NOT NULL,
    key_hash       TEXT UNIQUE,
    team_id        TEXT NOT NULL REFERENCES teams(id),
    project_id     TEXT REFERENCES projects(id),
    user_id        TEXT REFERENCES users(id),
    status         TEXT NOT NULL CHECK (status IN ('requested', 'active', 'rejected', 'revoked', 'expired')),
    models         TEXT NOT NULL DEFAULT '[]',
    tags           TEXT NOT NULL DEFAULT '[]',
    purpose        TEXT,
    rpm_limit      INTEGER,
    tpm_limit      INTEGER,
    budget_micros  INTEGER,
    budget_period  TEXT,
    expires_at     INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX api_keys_team ON api_keys(team_id);

CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

-- One row per proxied request; append-only, idempotent on the request id.
CREATE TABLE ledger (
    request_id         TEXT PRIMARY KEY,
    ts_ms              INTEGER NOT NULL,
    key_id             TEXT,
    team_id            TEXT,
    project_id         TEXT,
    user_id            TEXT,
    endpoint           TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT,
    deployment         TEXT,
    stream             INTEGER NOT NULL,
    status             INTEGER NOT NULL,
    error_type         TEXT,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    usage_estimated    INTEGER NOT NULL,
    cost_micros        INTEGER NOT NULL,
    latency_ms         INTEGER NOT NULL,
    ttfb_ms            INTEGER,
    tags               TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX ledger_ts ON ledger(ts_ms);
CREATE INDEX ledger_team_ts ON ledger(team_id, ts_ms);
CREATE INDEX ledger_key_ts ON ledger(key_id, ts_ms);

-- Admin actions; hash-chained (prev_hash → hash) so tampering shows.
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms        INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    object_id    TEXT,
    before_json  TEXT,
    after_json   TEXT,
    source_ip    TEXT,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit_log(ts_ms);
