-- Self-service keys and single sign-on.
-- Keys gain the `approved` state (approved by a lead, secret not yet revealed) and the
-- decision (who, when, why). SQLite cannot change a CHECK constraint: the table is rebuilt.
CREATE TABLE api_keys_new (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    key_hash              TEXT UNIQUE,
    team_id               TEXT NOT NULL REFERENCES teams(id),
    project_id            TEXT REFERENCES projects(id),
    user_id               TEXT REFERENCES users(id),
    status                TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'active', 'rejected', 'revoked', 'expired')),
    models                TEXT NOT NULL DEFAULT '[]',
    tags                  TEXT NOT NULL DEFAULT '[]',
    purpose               TEXT,
    rpm_limit             INTEGER,
    tpm_limit             INTEGER,
    budget_micros         INTEGER,
    budget_period         TEXT,
    expires_at            INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    previous_key_hash     TEXT,
    previous_valid_until  INTEGER,
    decided_by            TEXT,
    decided_at            INTEGER,
    decision_reason       TEXT
);
INSERT INTO api_keys_new (id, name, prefix, key_hash, team_id, project_id, user_id, status, models, tags,
    purpose, rpm_limit, tpm_limit, budget_micros, budget_period, expires_at, created_at, updated_at,
    previous_key_hash, previous_valid_until)
SELECT id, name, prefix, key_hash, team_id, project_id, user_id, status, models, tags,
    purpose, rpm_limit, tpm_limit, budget_micros, budget_period, expires_at, created_at, updated_at,
    previous_key_hash, previous_valid_until FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_team ON api_keys(team_id);
CREATE INDEX api_keys_user ON api_keys(user_id);
CREATE INDEX api_keys_updated ON api_keys(updated_at);

-- A team's model allow-list (JSON array; empty = every configured model).
ALTER TABLE teams ADD COLUMN models TEXT NOT NULL DEFAULT '[]';

-- Users signed in through SSO are found again by issuer + subject, not by e-mail.
ALTER TABLE users ADD COLUMN sso_subject TEXT;
CREATE UNIQUE INDEX users_sso_subject ON users(sso_subject);

-- SSO sign-ins in flight: state, nonce and PKCE verifier bound to the browser's cookie
-- (stored by the cookie's hash), single use, short-lived.
CREATE TABLE sso_logins (
    id_hash        TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
