-- First schema (PostgreSQL twin of migrations/sqlite). Times are Unix epoch milliseconds (BIGINT), money is
-- integer micro-dollars: the same SQL and the same Rust types serve SQLite and PostgreSQL.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    email          TEXT UNIQUE,
    display_name   TEXT,
    password_hash  TEXT,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'finance', 'auditor', 'member')),
    is_active      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     BIGINT NOT NULL
);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('lead', 'member')),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
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
    rpm_limit      BIGINT,
    tpm_limit      BIGINT,
    budget_micros  BIGINT,
    budget_period  TEXT,
    expires_at     BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX api_keys_team ON api_keys(team_id);

CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

-- One row per proxied request; append-only, idempotent on the request id.
CREATE TABLE ledger (
    request_id         TEXT PRIMARY KEY,
    ts_ms              BIGINT NOT NULL,
    key_id             TEXT,
    team_id            TEXT,
    project_id         TEXT,
    user_id            TEXT,
    endpoint           TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT,
    deployment         TEXT,
    stream             BOOLEAN NOT NULL,
    status             BIGINT NOT NULL,
    error_type         TEXT,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    usage_estimated    BOOLEAN NOT NULL,
    cost_micros        BIGINT NOT NULL,
    latency_ms         BIGINT NOT NULL,
    ttfb_ms            BIGINT,
    tags               TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX ledger_ts ON ledger(ts_ms);
CREATE INDEX ledger_team_ts ON ledger(team_id, ts_ms);
CREATE INDEX ledger_key_ts ON ledger(key_id, ts_ms);

-- Admin actions; hash-chained (prev_hash → hash) so tampering shows.
CREATE TABLE audit_log (
    seq          BIGSERIAL PRIMARY KEY,
    ts_ms        BIGINT NOT NULL,
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
